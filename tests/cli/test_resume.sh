#!/usr/bin/env bash
# Resuming and safe stops: a pipeline of pretrain -> sft -> grpo run
# straight, then resumed from a mid-stage checkpoint of each stage, gives the
# same per-step losses (and GRPO rewards) as the straight run: exact equality
# of the printed values (15 significant digits), since fp32 on the CPU with
# batch-invariant kernels is deterministic and a checkpoint carries weights,
# AdamW state, RNGs, data position and schedule step. Stages completed before
# the checkpoint's stage are skipped. SIGTERM finishes the step, checkpoints
# and ends "cancelled"; resuming from that checkpoint completes the run with
# the straight run's losses. Malformed or mismatched checkpoints are errors
# naming the file.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=$(realpath "${ENGINE_FAST:-build/aha-engine}")
tmp=$(mktemp -d); trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
fail=0
mkdir -p "$tmp/data"
"$ENGINE" datagen arithmetic --n 600 --seed 1 --format text --out "$tmp/data/text.jsonl" 2>/dev/null
"$ENGINE" datagen arithmetic --n 10 --seed 9 --out "$tmp/data/rl10.jsonl" 2>/dev/null
head -5 "$tmp/data/rl10.jsonl" > "$tmp/data/rl.jsonl"
/usr/bin/python3 - "$tmp/data/rl10.jsonl" "$tmp/data/sft.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        r = json.loads(line)
        out.write(json.dumps({"prompt": r["prompt"], "completion": " %s" % r["answer"]}) + "\n")
PY
# Small enough for a test, with epochs that end on both sides of the
# checkpoints: sft: 10 rows, batch 4 (rows 16-19 at step 4 straddle epochs
# 2 and 3 of 2.5 steps each); grpo: 5 prompts, 2 per step (the checkpoint
# at step 2 is mid-epoch, step 3 starts a new one).
cat > "$tmp/spec.json" <<'JSON'
{"name": "r", "stages": [
  {"name": "base", "kind": "pretrain", "dataset": "text.jsonl",
   "params": {"config": "tiny", "steps": 8, "batch_size": 2, "seq_len": 32, "learning_rate": 0.003,
              "warmup_steps": 2, "log_every": 1, "checkpoint_every": 4, "seed": 1}},
  {"name": "sft", "kind": "sft", "model": "base", "dataset": "sft.jsonl",
   "params": {"max_steps": 6, "batch_size": 4, "seq_len": 48, "learning_rate": 0.001, "log_every": 1,
              "checkpoint_every": 4, "warmup_ratio": 0.2, "seed": 3, "chat_template": "chatml"}},
  {"name": "rl", "kind": "grpo", "model": "sft", "dataset": "rl.jsonl",
   "reward": {"components": [{"type": "overlong", "weight": 1.0, "max_completion_len": 12, "soft_punish_cache": 8},
                             {"type": "accuracy", "weight": 0.5}]},
   "params": {"steps": 4, "prompts_per_step": 2, "group_size": 3, "max_completion_length": 12,
              "learning_rate": 0.0003, "temperature": 1.0, "checkpoint_every": 2, "log_completions": 0,
              "chat_template": "chatml", "seed": 5}}]}
JSON
run() {  # run OUT [args...]: events to OUT.events, exit status to OUT.rc
  local out=$1; shift
  set +e
  "$ENGINE" train --spec "$tmp/spec.json" --data-dir "$tmp/data" --out "$out" "$@" > "$out.events" 2> "$out.err"
  echo $? > "$out.rc"
  set -e
}
# losses FILE: "stage step value" per metric event (loss; grpo: reward and loss)
losses() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "metric" and "loss" in e["values"]:
        v = e["values"]
        print(e["stage"], e["step"], repr(v["loss"]), repr(v.get("reward", "")))
PY
}
run "$tmp/A"
[ "$(cat "$tmp/A.rc")" = 0 ] || { echo "FAILED: straight run: $(tail -3 "$tmp/A.err")"; exit 1; }
losses "$tmp/A.events" > "$tmp/A.losses"
[ "$(wc -l < "$tmp/A.losses")" = 18 ] || { echo "FAILED: expected 22 loss lines"; cat "$tmp/A.losses"; fail=1; }

# Resume each stage from its mid-stage checkpoint, in a copy of the run's
# output where that stage has not completed (the others have, and are
# skipped; the stop test below runs a later stage after a resumed one).
resume_from() {  # resume_from STAGE STEP
  local st=$1 k=$2
  local B="$tmp/B-$st"
  cp -r "$tmp/A" "$B"
  rm -f "$B/$st/aha_stage.json"
  run "$B" --resume "$B/$st/checkpoints/step-$k"
  if [ "$(cat "$B.rc")" != 0 ]; then echo "FAILED: resume $st: $(tail -3 "$B.err")"; fail=1; return; fi
  losses "$B.events" > "$B.losses"
  # expected: the straight run's lines of STAGE from step k+1 on
  awk -v st="$st" -v k="$k" '$1 == st && $2 > k' "$tmp/A.losses" > "$B.want"
  if ! cmp -s "$B.want" "$B.losses"; then
    echo "FAILED: resume $st from step $k: losses differ"; diff "$B.want" "$B.losses" | head -8; fail=1
  else
    echo "resume $st from step $k: $(wc -l < "$B.losses") per-step losses equal the straight run's"
  fi
  [ "$(grep -c '"status":"skipped"' "$B.events")" = 2 ] || { echo "FAILED: resume $st: want 2 skipped stages"; fail=1; }
  grep -q '"type":"done".*"status":"succeeded"' "$B.events" || { echo "FAILED: resume $st: no done"; fail=1; }
}
resume_from base 4
resume_from sft 4
resume_from rl 2

# Safe stop: SIGTERM mid-run finishes the step, checkpoints, ends cancelled
# and exits 0; resuming from the checkpoint completes the run, and the two
# halves' losses are the straight run's.
C="$tmp/C"
"$ENGINE" train --spec "$tmp/spec.json" --data-dir "$tmp/data" --out "$C" > "$C.first" 2> "$C.err" &
pid=$!
for _ in $(seq 3000); do grep -q '"stage":"sft","step":2,' "$C.first" 2>/dev/null && break; sleep 0.05; done
kill -TERM $pid || true
set +e; wait $pid; rc=$?; set -e
[ $rc = 0 ] || { echo "FAILED: a stopped run exits $rc, want 0: $(tail -2 "$C.err")"; fail=1; }
done_line=$(tail -1 "$C.first")
ckpt=$(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["type"]=="done" and d["status"]=="cancelled", d; print(d["checkpoint"])' "$done_line") \
  || { echo "FAILED: last event is not done/cancelled: $done_line"; fail=1; }
if [ -n "${ckpt:-}" ]; then
  if [ "$ckpt" != "$C" ]; then   # else stopped between stages: the output directory resumes
    tail -3 "$C.first" | grep -q "\"type\":\"checkpoint\".*\"path\":\"$ckpt\"" || { echo "FAILED: no checkpoint event for $ckpt"; fail=1; }
    [ -s "$ckpt/trainer_state.json" ] || { echo "FAILED: $ckpt/trainer_state.json missing"; fail=1; }
  fi
  run "$C" --resume "$ckpt"
  { losses "$C.first"; losses "$C.events"; } > "$C.losses"
  if [ "$(cat "$C.rc")" = 0 ] && cmp -s "$tmp/A.losses" "$C.losses"; then
    echo "stop at $ckpt + resume: per-step losses equal the straight run's"
  else
    echo "FAILED: stop + resume: $(tail -2 "$C.err")"; diff "$tmp/A.losses" "$C.losses" | head -6; fail=1
  fi
fi

# Malformed and mismatched checkpoints: clear errors naming the file.
expect_bad() {  # expect_bad NAME 'message substring'
  local D="$tmp/D-$1"
  cp -r "$tmp/A" "$D"
  rm -f "$D/sft/aha_stage.json" "$D/rl/aha_stage.json"
  run "$D" --resume "$tmp/bad"
  if [ "$(cat "$D.rc")" = 0 ]; then echo "FAILED: $1: resumed from a bad checkpoint"; fail=1; return; fi
  grep -qF -- "$2" "$D.err" || { echo "FAILED: $1: error lacks \"$2\": $(cat "$D.err")"; fail=1; }
  tail -1 "$D.events" | grep -q '"type":"done".*"status":"failed"' || { echo "FAILED: $1: no done/failed event"; fail=1; }
}
cp -r "$tmp/A/sft/checkpoints/step-4" "$tmp/bad"
echo '{"format": "aha-trainer-state", "version": 1,' > "$tmp/bad/trainer_state.json"
expect_bad truncated "$tmp/bad/trainer_state.json:"
rm -rf "$tmp/bad"; cp -r "$tmp/A/sft/checkpoints/step-4" "$tmp/bad"
sed -i 's/"learning_rate": 0.001/"learning_rate": 0.002/' "$tmp/bad/trainer_state.json"
expect_bad params "$tmp/bad/trainer_state.json: stage \"sft\": params differ"
rm -rf "$tmp/bad"; cp -r "$tmp/A/sft/checkpoints/step-4" "$tmp/bad"
head -c 1000 "$tmp/A/sft/checkpoints/step-4/optimizer.safetensors" > "$tmp/bad/optimizer.safetensors"
expect_bad optimizer "$tmp/bad/optimizer.safetensors"
rm -rf "$tmp/bad"; cp -r "$tmp/A/sft/checkpoints/step-4" "$tmp/bad"
sed -i 's/"stage": "sft"/"stage": "nope"/' "$tmp/bad/trainer_state.json"
expect_bad stage 'stage "nope" is not a stage of pipeline "r"'
rm -rf "$tmp/bad"; mkdir "$tmp/bad"
expect_bad empty "$tmp/bad/trainer_state.json"

[ $fail = 0 ] && echo "resume: 1 passed, 0 failed" || { echo "resume: 0 passed, 1 failed"; exit 1; }
