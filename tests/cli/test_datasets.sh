#!/usr/bin/env bash
# The stages that make datasets (engine/sample_stage.c), and distillation
# (the distill stage: engine/sft.c with a teacher). `generate` writes
# every sample, `rejection_sample` keeps what its reward spec calls correct
# (its first component scores 1: here a regex for a well-formed answer,
# which the check below recomputes; or the total reaches min_reward),
# ranked and capped per prompt, and a later
# stage of the same pipeline trains on it by name (the R1 recipe's
# rejection sampling -> SFT). The kept rows are checked against the
# generated ones: both stages draw the same samples from the same seed.
# Logit distillation pulls a student toward its teacher: the divergence
# falls, and it is the student's that is trained.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=$(realpath "${ENGINE:-build/aha-engine-san}")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $2"; fail=1; fi; }

mkdir -p "$tmp/data"
"$ENGINE" datagen arithmetic --n 1500 --seed 1 --format text --out "$tmp/data/text.jsonl"
"$ENGINE" datagen arithmetic --n 120 --seed 2 --format rl --out "$tmp/data/rl.jsonl"
/usr/bin/python3 tests/cli/sft_rows.py "$tmp/data/rl.jsonl" "$tmp/data/sft.jsonl"
/usr/bin/python3 - "$tmp/data" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/rl.jsonl")]
with open(d + "/chat.jsonl", "w") as out:
    for r in rows[:3]:
        out.write(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": r["prompt"]}],
                              "answer": r["answer"]}) + "\n")
PY
C='"chat_template":"chatml"'
S='"num_samples":4,"max_completion_length":24,"temperature":1.0,"top_p":1.0,"seed":5,'"$C"
ACC='{"components":[{"type":"regex","weight":1.0,"pattern":"<answer>[0-9]+</answer>"},{"type":"accuracy","weight":1.0}]}'
cat > "$tmp/spec.json" <<JSON
{"name": "r1", "stages": [
  {"name": "base", "kind": "pretrain", "dataset": "text.jsonl",
   "params": {"config": "tiny", "steps": 30, "batch_size": 4, "seq_len": 64, "learning_rate": 0.003}},
  {"name": "cold", "kind": "sft", "model": "base", "dataset": "sft.jsonl",
   "params": {"epochs": 2, "batch_size": 4, "seq_len": 160, "learning_rate": 0.002, "packing": true, $C}},
  {"name": "all", "kind": "generate", "model": "cold", "dataset": "rl.jsonl", "params": {$S}},
  {"name": "rs", "kind": "rejection_sample", "model": "cold", "dataset": "rl.jsonl", "reward": $ACC,
   "params": {$S}},
  {"name": "scored", "kind": "rejection_sample", "model": "cold", "dataset": "rl.jsonl", "reward": $ACC,
   "params": {$S, "min_reward": -1}},
  {"name": "best", "kind": "rejection_sample", "model": "cold", "dataset": "rl.jsonl", "reward": $ACC,
   "params": {$S, "min_reward": -1, "max_per_prompt": 1}},
  {"name": "chat", "kind": "generate", "model": "cold", "dataset": "chat.jsonl",
   "params": {"max_completion_length": 8, $C}},
  {"name": "sft2", "kind": "sft", "model": "cold", "dataset": "scored",
   "params": {"epochs": 1, "batch_size": 4, "seq_len": 96, "learning_rate": 0.001, "log_every": 5, $C}},
  {"name": "kd", "kind": "distill", "model": "base", "teacher": "cold", "dataset": "sft.jsonl",
   "params": {"max_steps": 30, "batch_size": 4, "seq_len": 96, "learning_rate": 0.002, "log_every": 1,
              "beta": 0.5, "temperature": 1.0, "lmbda": 0, $C}},
  {"name": "kd-on", "kind": "distill", "model": "base", "teacher": "cold", "dataset": "sft.jsonl",
   "params": {"max_steps": 30, "batch_size": 4, "seq_len": 96, "learning_rate": 0.002, "log_every": 1,
              "beta": 1.0, "lmbda": 1, "max_new_tokens": 24, $C}}]}
JSON
"$ENGINE" train --spec "$tmp/spec.json" --data-dir "$tmp/data" --out "$tmp/out" > "$tmp/events"
check "tail -1 '$tmp/events' | grep -q '\"status\":\"succeeded\"'" "the pipeline failed: $(grep -m1 '"error"' "$tmp/events")"
check "grep -q '\"stage\":\"sft2\",\"step\":[0-9]*,\"values\":{\"loss\"' '$tmp/events'" "sft2 did not train on the scored samples"
check "grep -q '\"stage\":\"rs\",\"step\":4,\"values\":{.*\"kept_rate\"' '$tmp/events'" "rejection_sample metrics missing"
check "grep -q '\"type\":\"sample\",\"stage\":\"rs\".*\"kept\"' '$tmp/events'" "rejection_sample sample events missing"
out=$(/usr/bin/python3 - "$tmp/out" "$tmp/data" <<'PY'
import json, re, sys
o, d = sys.argv[1], sys.argv[2]
load = lambda p: [json.loads(l) for l in open(p)]
src, gen = load(d + "/rl.jsonl"), load(o + "/all/data.jsonl")
rs, scored, best = load(o + "/rs/data.jsonl"), load(o + "/scored/data.jsonl"), load(o + "/best/data.jsonl")
bad = []
def expect(ok, what):
    if not ok: bad.append(what)
expect(len(gen) == 4 * len(src), "generate wrote %d rows for %d prompts x 4" % (len(gen), len(src)))
for i, g in enumerate(gen):
    s = src[i // 4]
    expect(all(g.get(k) == v for k, v in s.items()), "generate row %d lost its input fields" % i)
    expect(isinstance(g.get("completion"), str) and g.get("finish_reason") in ("stop", "length")
           and isinstance(g.get("completion_tokens"), int), "generate row %d fields: %s" % (i, g))
right = lambda g: re.search(r"<answer>[0-9]+</answer>", g["completion"]) is not None
key = lambda g: (g["prompt"], g["completion"])
stop = [g for g in gen if g["finish_reason"] == "stop"]
want = {key(g) for g in stop if right(g)}
got = {key(g) for g in rs}
expect(got == want and want, "rejection_sample kept %d, the correct stopped samples are %d"
       % (len(got), len(want)))
expect(len(rs) == len(got), "rejection_sample kept duplicates")
expect(all(r["reward"] >= 1.0 for r in rs), "a kept row has reward < 1")
expect({key(g) for g in stop} == {key(g) for g in scored}, "min_reward -1 must keep every stopped sample once")
for p in {g["prompt"] for g in scored}:
    mine = [g for g in scored if g["prompt"] == p]
    top = max(g["reward"] for g in mine)
    first = min((g for g in mine if g["reward"] == top), key=lambda g: g["completion_tokens"])
    pick = [g for g in best if g["prompt"] == p]
    expect(len(pick) == 1 and pick[0]["reward"] == top and
           pick[0]["completion_tokens"] == first["completion_tokens"],
           "max_per_prompt 1 for %r: %s, best reward %s" % (p, pick, top))
expect(len(best) == len({g["prompt"] for g in scored}), "best: one row per prompt")
for c in load(o + "/chat/data.jsonl"):
    m = c["messages"]
    expect(len(m) == 3 and m[2]["role"] == "assistant" and "completion" not in c,
           "a messages row gets an assistant message: %s" % c)
print("; ".join(bad[:5]) if bad else "ok %d generated, %d well-formed kept, %d scored, %d best"
      % (len(gen), len(rs), len(scored), len(best)))
PY
)
echo "datasets: $out"
check "[[ '$out' == ok* ]]" "dataset checks"
kd=$(grep '"stage":"kd","step"' "$tmp/events" | sed 's/.*"values":{"loss":\([0-9.e-]*\).*"nll":\([0-9.e-]*\).*/\1 \2/')
first=$(head -3 <<<"$kd" | awk '{s += $1} END {print s / NR}'); last=$(tail -3 <<<"$kd" | awk '{s += $1} END {print s / NR}')
echo "distill: jsd first 3 steps $first, last 3 $last"
check "[ $(wc -l <<<"$kd") = 30 ] && awk 'BEGIN{exit !($last < 0.7 * $first)}'" "the divergence to the teacher should fall ($first -> $last)"
check "grep -q '\"type\":\"stage\",\"stage\":\"kd\",\"kind\":\"distill\",\"status\":\"succeeded\"' '$tmp/events'" "no distill stage event"
# on-policy (lmbda 1): every step trains on the student's own completions,
# and the reverse KL to the teacher on them falls too
on=$(grep '"stage":"kd-on","step"' "$tmp/events")
check "[ $(grep -c '"on_policy":1' <<<"$on") = 30 ]" "on-policy steps: $(grep -c '"on_policy":1' <<<"$on") of 30"
kd=$(sed 's/.*"values":{"loss":\([0-9.e-]*\).*/\1/' <<<"$on")
first=$(head -5 <<<"$kd" | awk '{s += $1} END {print s / NR}'); last=$(tail -5 <<<"$kd" | awk '{s += $1} END {print s / NR}')
echo "on-policy distill: reverse KL first 5 steps $first, last 5 $last"
check "awk 'BEGIN{exit !($last < 0.8 * $first)}'" "the on-policy divergence should fall ($first -> $last)"
# the first step's student is the base model in both stages: its own
# samples are far likelier to it than the dataset's completions
nll() { grep "\"stage\":\"$1\",\"step\":1," "$tmp/events" | sed 's/.*"nll":\([0-9.e-]*\).*/\1/'; }
off=$(nll kd); own=$(nll kd-on)
echo "step 1 nll: dataset completions $off, the student's own $own"
check "awk 'BEGIN{exit !($own < 0.8 * $off)}'" "on-policy rows should hold the student's samples (nll $own vs $off)"
check "[ -s '$tmp/out/kd/model.safetensors' ] && ! cmp -s '$tmp/out/kd/model.safetensors' '$tmp/out/base/model.safetensors'" "the student was not trained"

expect_invalid() {   # expect_invalid "message substring" 'spec json'
  printf '%s' "$2" > "$tmp/bad.json"
  if "$ENGINE" train --spec "$tmp/bad.json" --data-dir "$tmp/data" --out "$tmp/badout" >/dev/null 2>"$tmp/err"; then
    echo "FAILED: accepted invalid spec: $2"; fail=1; return
  fi
  grep -qF -- "$1" "$tmp/err" || { echo "FAILED: error lacks \"$1\": $(cat "$tmp/err")"; fail=1; }
}
M='"model":"../out/cold","dataset":"rl.jsonl"'
expect_invalid 'stage "a": field "reward": is missing' '{"name":"c","stages":[{"name":"a","kind":"rejection_sample",'"$M"'}]}'
expect_invalid 'field "reward"' '{"name":"c","stages":[{"name":"a","kind":"generate",'"$M"',"reward":'"$ACC"'}]}'
expect_invalid 'params.min_reward: expected a number' '{"name":"c","stages":[{"name":"a","kind":"rejection_sample",'"$M"',"reward":'"$ACC"',"params":{"min_reward":"high"}}]}'
expect_invalid 'params.num_samples: must be in [1, 256]' '{"name":"c","stages":[{"name":"a","kind":"generate",'"$M"',"params":{"num_samples":0}}]}'
expect_invalid 'dataset "s" names a sft stage, which produces no dataset' '{"name":"c","stages":[{"name":"s","kind":"sft",'"$M"'},{"name":"g","kind":"generate","model":"s","dataset":"s"}]}'
expect_invalid 'stage "a": field "teacher" is missing' '{"name":"c","stages":[{"name":"a","kind":"distill",'"$M"'}]}'
expect_invalid 'unknown field "teacher"' '{"name":"c","stages":[{"name":"a","kind":"sft","teacher":"x",'"$M"'}]}'
expect_invalid 'needs packing off' '{"name":"c","stages":[{"name":"a","kind":"distill","teacher":"../out/cold",'"$M"',"params":{"packing":true,"lmbda":0.5,"max_steps":1}}]}'
expect_invalid 'params.beta: must be in [0, 1]' '{"name":"c","stages":[{"name":"a","kind":"distill","teacher":"../out/cold",'"$M"',"params":{"beta":2}}]}'
expect_invalid 'teacher "g" names a generate stage, which produces no model' '{"name":"c","stages":[{"name":"g","kind":"generate",'"$M"'},{"name":"a","kind":"distill","teacher":"g",'"$M"'}]}'
# a teacher with another vocabulary: refused at the start, naming both
/usr/bin/python3 - "$tmp/out/base/config.json" "$tmp/other.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["vocab_size"] = 600
json.dump(c, open(sys.argv[2], "w"))
PY
rc=0
"$ENGINE" train --spec - --data-dir "$tmp/data" --out "$tmp/vocab" > "$tmp/vocab.events" 2>/dev/null <<JSON || rc=$?
{"name":"v","stages":[{"name":"big","kind":"pretrain","dataset":"text.jsonl","params":{"config":"$tmp/other.json","steps":1,"batch_size":1,"seq_len":16}},
 {"name":"kd","kind":"distill","model":"../out/base","teacher":"big","dataset":"sft.jsonl","params":{"max_steps":1,$C}}]}
JSON
check "[ $rc = 1 ] && grep -q 'the teacher.s vocabulary (600 tokens.*is not the student.s (512' '$tmp/vocab.events'" "vocabulary mismatch: $(grep -m1 '"error"' "$tmp/vocab.events")"
# a run-time failure: nothing reaches min_reward
rc=0
"$ENGINE" train --spec - --data-dir "$tmp/data" --out "$tmp/none" > "$tmp/none.events" 2>/dev/null <<JSON || rc=$?
{"name":"n","stages":[{"name":"a","kind":"rejection_sample",$M,"reward":$ACC,"params":{"max_completion_length":8,$C,"min_reward":5}}]}
JSON
check "[ $rc = 1 ]" "a rejection that keeps nothing exits $rc, want 1"
check "grep -q 'no sample of 480 passed the filter.*lower min_reward' '$tmp/none.events'" "no error naming the filter: $(tail -2 "$tmp/none.events" | head -1)"
check "[ ! -e '$tmp/none/a/data.jsonl' ] && [ ! -e '$tmp/none/a/data.jsonl.partial' ]" "a failed stage left its dataset"
[ $fail = 0 ] && echo "datasets: 1 passed, 0 failed" || { echo "datasets: 0 passed, 1 failed"; exit 1; }
