#!/usr/bin/env bash
# `aha-engine generate` (engine/cli_generate.c): streamed text, --json
# samples, seeded reproducibility, --speculative-tokens, --draft-model,
# --logit-bias and --json-object, n > 1 sharing a prefill, --dtype bf16,
# greedy parity with the recompute-everything `sample`, prompt ids on a
# tokenizer-less fixture, `bench generate --profile`'s shape, and its
# errors (usage, vocabulary, KV memory refusal).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-build/aha-engine-san}
PY=/usr/bin/python3
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$ENGINE" datagen arithmetic --n 50 --seed 1 --format text --out "$tmp/d.jsonl" 2>/dev/null
"$ENGINE" pretrain --config tiny --data "$tmp/d.jsonl" --steps 1 --batch 1 --seq-len 8 --out "$tmp/m" >/dev/null 2>&1
M="$tmp/m"

# seeded sampling is reproducible; --json has tokens and text
"$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 8 --seed 3 --ignore-eos --kv-memory-mb 8 --json >"$tmp/a" 2>/dev/null
"$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 8 --seed 3 --ignore-eos --kv-memory-mb 8 --json >"$tmp/b" 2>/dev/null
cmp -s "$tmp/a" "$tmp/b" && ok || bad "same seed gave different outputs"
$PY - "$tmp/a" <<'PY' && ok || bad "--json output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1, rows
r = rows[0]
assert len(r["tokens"]) == 8 and r["completion_tokens"] == 8 and r["finish_reason"] == "length", r
assert isinstance(r["text"], str) and len(r["logprobs"]) == 8
assert all(l <= 0 for l in r["logprobs"])
PY

# --speculative-tokens (prompt lookup) changes no output: seeded samples
# (n = 2) and a greedy run forced into a loop, whose drafts are kept
for extra in "--seed 5 --n 2" "--temperature 0 --logit-bias 49=100"; do
  "$ENGINE" generate --model "$M" --prompt "12+7=12+7=" --max-tokens 40 $extra --ignore-eos --json >"$tmp/s0" 2>/dev/null
  "$ENGINE" generate --model "$M" --prompt "12+7=12+7=" --max-tokens 40 $extra --ignore-eos --json \
    --speculative-tokens 5 --prompt-lookup-max 3 >"$tmp/s1" 2>/dev/null
  cmp -s "$tmp/s0" "$tmp/s1" && ok || bad "--speculative-tokens changed the output ($extra)"
done
set +e; "$ENGINE" generate --model "$M" --prompt "1" --speculative-tokens 3 --prompt-lookup-min 4 \
  --prompt-lookup-max 2 >/dev/null 2>"$tmp/e"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q "spec_ngram_min <= spec_ngram_max" "$tmp/e" && ok || bad "lookup min > max: rc $rc"
# --draft-model: the model as its own draft changes no output (seeded
# n = 2, greedy); it needs --speculative-tokens, and a directory it can load
for extra in "--seed 5 --n 2" "--temperature 0"; do
  "$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 30 $extra --ignore-eos --json >"$tmp/d0" 2>/dev/null
  "$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 30 $extra --ignore-eos --json \
    --speculative-tokens 4 --draft-model "$M" >"$tmp/d1" 2>/dev/null
  cmp -s "$tmp/d0" "$tmp/d1" && ok || bad "--draft-model changed the output ($extra)"
done
set +e; "$ENGINE" generate --model "$M" --prompt "1" --draft-model "$M" >/dev/null 2>"$tmp/e"; rc=$?; set -e
[ $rc -eq 2 ] && grep -q "needs --speculative-tokens" "$tmp/e" && ok || bad "--draft-model alone: rc $rc"
set +e; "$ENGINE" generate --model "$M" --prompt "1" --speculative-tokens 2 --draft-model "$tmp/none" \
  >/dev/null 2>"$tmp/e"; rc=$?; set -e
[ $rc -eq 1 ] && grep -q "draft model: .*none" "$tmp/e" && ok || bad "missing draft model: rc $rc $(cat "$tmp/e")"

# --logit-bias forces a token; --json-object keeps the text a JSON object
# (ended as soon as it is whole); malformed biases are usage errors
"$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 3 --temperature 0 --logit-bias 65=100,66=-5 \
  --ignore-eos --json >"$tmp/lb" 2>/dev/null
$PY -c "import json; r=json.loads(open('$tmp/lb').read()); assert r['tokens']==[65,65,65], r" && ok || bad "--logit-bias"
"$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 48 --seed 1 --n 4 --json-object --json >"$tmp/jo" 2>/dev/null
$PY - "$tmp/jo" <<'PY' && ok || bad "--json-object"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, rows
for r in rows:
    assert r["text"].startswith("{"), r
    if r["finish_reason"] == "stop":
        assert isinstance(json.loads(r["text"]), dict), r
    else:
        assert r["finish_reason"] == "length" and r["completion_tokens"] == 48, r
PY
echo '{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}' >"$tmp/s.json"
"$ENGINE" generate --model "$M" --prompt "1" --max-tokens 200 --seed 1 --json-schema "$tmp/s.json" --json >"$tmp/js" 2>/dev/null
$PY -c "import json; r=json.loads(open('$tmp/js').read()); o=json.loads(r['text']); assert r['finish_reason']=='stop' and list(o)==['ok'] and isinstance(o['ok'], bool), r" \
  && ok || bad "--json-schema"
echo '{"type":"object","properties":{"x":{"type":"string","format":"uri"}}}' >"$tmp/bad.json"
set +e; "$ENGINE" generate --model "$M" --prompt "1" --json-schema "$tmp/bad.json" >/dev/null 2>"$tmp/e"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q 'properties.x: "format" "uri" is not supported' "$tmp/e" && ok || bad "--json-schema refusal: rc $rc"
for b in 65=200 65 =1 65=1,x; do
  set +e; "$ENGINE" generate --model "$M" --prompt "1" --logit-bias "$b" >/dev/null 2>"$tmp/e"; rc=$?; set -e
  [ $rc -eq 2 ] && grep -q -- "--logit-bias" "$tmp/e" && ok || bad "--logit-bias $b: rc $rc"
done

# n = 3: three samples, sample 0 equal to the n = 1 output with that seed
"$ENGINE" generate --model "$M" --prompt "12+7=" --max-tokens 8 --seed 3 --ignore-eos --n 3 --json >"$tmp/n" 2>/dev/null
$PY - "$tmp/n" "$tmp/a" <<'PY' && ok || bad "--n 3"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
one = json.loads(open(sys.argv[2]).read())
assert [r["index"] for r in rows] == [0, 1, 2], rows
assert rows[0]["tokens"] == one["tokens"], (rows[0], one)
assert all(len(r["tokens"]) == 8 for r in rows)
PY

# streamed text: greedy generate == greedy recompute-everything sample
g=$("$ENGINE" generate --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 --kv-memory-mb 8 2>/dev/null)
s=$("$ENGINE" sample --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 2>/dev/null)
[ "3*4=$g" = "$s" ] && ok || bad "greedy generate \"$g\" != sample \"$s\""
g32=$("$ENGINE" generate --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 --kv-memory-mb 8 --kv-dtype f32 2>/dev/null)
[ "3*4=$g32" = "$s" ] && ok || bad "greedy generate --kv-dtype f32 \"$g32\" != sample \"$s\""
# an int8 cache: 12 greedy tokens, the same twice (its rounding is deterministic)
for f in q8a q8b; do
  "$ENGINE" generate --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 --ignore-eos \
    --kv-memory-mb 8 --kv-dtype q8 --json >"$tmp/$f" 2>/dev/null
done
$PY -c "import json; a, b = (json.load(open('$tmp/' + f))['tokens'] for f in ('q8a', 'q8b')); assert len(a) == 12 and a == b, (a, b)" \
  && ok || bad "greedy generate --kv-dtype q8"

# --dtype bf16, q8 and q4: greedy is deterministic, and the same request in
# a batch of three samples (n = 3, greedy) gives the same tokens each time
for dt in bf16 q8 q4; do
  "$ENGINE" generate --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 --ignore-eos --kv-memory-mb 8 \
    --dtype $dt --json >"$tmp/b1" 2>/dev/null
  "$ENGINE" generate --model "$M" --prompt "3*4=" --max-tokens 12 --temperature 0 --ignore-eos --kv-memory-mb 8 \
    --dtype $dt --n 3 --json >"$tmp/b3" 2>/dev/null
  $PY - "$tmp/b1" "$tmp/b3" <<'PY' && ok || bad "generate --dtype $dt"
import json, sys
one = json.loads(open(sys.argv[1]).read())
three = [json.loads(l) for l in open(sys.argv[2])]
assert len(one["tokens"]) == 12, one
assert [r["tokens"] for r in three] == [one["tokens"]] * 3, (one, three)
PY
done

# prompt ids on a model without tokenizer.json
"$ENGINE" generate --model tests/ref/fixtures/llama-gqa --prompt-tokens 1,2,3 --max-tokens 4 --temperature 0 --kv-memory-mb 8 --json >"$tmp/f" 2>/dev/null
$PY -c "import json,sys; r=json.loads(open('$tmp/f').read()); assert len(r['tokens'])==4 and r['prompt_tokens']==3, r" && ok || bad "--prompt-tokens on a fixture"

# bench generate --profile: the prefill and decode steps split by op, in
# ms per step, adding up to the step; every timed decode step runs all 4
# sequences (4 prompts of 1100 take two prefill steps of at most 4096
# tokens, and the first ones decode meanwhile)
"$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 4 --prompt-len 16 --context 1100 --profile >"$tmp/bench" 2>/dev/null
$PY - "$tmp/bench" <<'PY' && ok || bad "bench generate --profile"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
prof = {r["bench"]: r for r in rows if r["bench"].endswith("_profile")}
assert set(prof) == {"prefill_profile", "decode_profile"}, rows
dec = [r for r in rows if r["bench"] == "decode"][0]
assert dec["context"] == 1100 and dec["concurrency"] == 4, dec
assert abs(dec["tokens_per_s"] * dec["step_ms"] / 1e3 - 4) < 0.05, dec
assert prof["decode_profile"]["concurrency"] == 4
# the cache the attention read: 4 rows at positions 1100.., keys and values
# of 4 kv heads x 32 in binary16, 6 layers: 4 x (1101..1110) x 3072 bytes
d = prof["decode_profile"]
assert 4 * 1101 * 3072 / 1e6 <= d["attention_kv_mb_per_step"] <= 4 * 1110 * 3072 / 1e6, d
assert d["attention_gb_per_s"] > 0 and d["attention_fraction_of_bandwidth"] > 0, d
assert "attention_gb_per_s" not in prof["prefill_profile"]
for r in prof.values():
    ms = r["ms_per_step"]
    assert r["steps"] > 0 and r["step_ms"] > 0, r
    assert {"attention", "qkv", "mlp_in", "mlp_down", "logits", "sample", "other"} <= set(ms), ms
    assert all(v >= 0 for v in ms.values()), ms
    assert ms["attention"] > 0 and ms["mlp_in"] > 0, ms
    assert abs(sum(ms.values()) - r["step_ms"]) <= 0.01 + 1e-3 * r["step_ms"], r
PY

# bench generate --layers: the model measured has that many layers (the
# weights the bound counts grow with them), and the lines say so
"$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 1 --prompt-len 8 \
  --layers 1 >"$tmp/l1" 2>/dev/null
"$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 1 --prompt-len 8 \
  --layers 3 >"$tmp/l3" 2>/dev/null
$PY - "$tmp/l1" "$tmp/l3" <<'PY' && ok || bad "bench generate --layers"
import json, sys
d1, d3 = ([json.loads(l) for l in open(f) if '"decode"' in l][0] for f in sys.argv[1:])
assert (d1["layers"], d3["layers"]) == (1, 3), (d1, d3)
assert d3["weights_mb"] > d1["weights_mb"], (d1, d3)
PY

# bench generate's prefix-cache line: a 40-token prompt finds its first 2
# blocks of 16 cached
"$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 1 --prompt-len 40 \
  --layers 1 >"$tmp/lp" 2>/dev/null
$PY -c "import json; r=[json.loads(l) for l in open('$tmp/lp')]; p=[x for x in r if x['bench']=='prefill_prefix_cache']; assert len(p)==1 and p[0]['prompt_tokens']==40 and p[0]['cached_tokens']==32 and p[0]['cached_ms']>0, r" \
  && ok || bad "bench generate prefix cache"

# bench generate --dtype bf16: the lines say so, and the bytes a step reads
# are half of fp32's
"$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 1 --prompt-len 8 \
  --layers 1 --dtype bf16 >"$tmp/lb" 2>/dev/null
$PY - "$tmp/l1" "$tmp/lb" <<'PY' && ok || bad "bench generate --dtype bf16"
import json, sys
r32, r16 = ([json.loads(l) for l in open(f)] for f in sys.argv[1:])
d32, d16 = ([x for x in r if x["bench"] == "decode"][0] for r in (r32, r16))
p32, p16 = ([x for x in r if x["bench"] == "prefill"][0] for r in (r32, r16))
assert (d32["dtype"], d16["dtype"], p32["dtype"], p16["dtype"]) == ("f32", "bf16", "f32", "bf16")
assert abs(d16["weights_mb"] * 2 - d32["weights_mb"]) < 0.2, (d32, d16)
PY
# and --dtype q8 and q4: 1.125 and 0.625 bytes a weight, 9/32 and 5/32 of fp32's
for dq in q8:9 q4:5; do
  dt=${dq%:*}
  "$ENGINE" bench generate --config tiny --rounds 1 --steps 2 --concurrency 1 --prompt-len 8 \
    --layers 1 --dtype $dt >"$tmp/lq" 2>/dev/null
  $PY - "$tmp/l1" "$tmp/lq" $dt ${dq#*:} <<'PY' && ok || bad "bench generate --dtype $dt"
import json, sys
r32, rq = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
dt, of32 = sys.argv[3], int(sys.argv[4])
d32, dq = ([x for x in r if x["bench"] == "decode"][0] for r in (r32, rq))
assert (d32["dtype"], dq["dtype"]) == ("f32", dt)
assert abs(dq["weights_mb"] * 32 / of32 - d32["weights_mb"]) < 0.2, (d32, dq)
PY
done

# bench grpo --kv-dtype reaches its rollout engine (the figures say which)
"$ENGINE" bench grpo --rollout-only --prompts 2 --group 2 --max-tokens 8 --reps 1 --kv-dtype q8 \
  --dtype bf16 >"$tmp/bg" 2>/dev/null
$PY -c "import json,sys; r=[json.loads(l) for l in open('$tmp/bg')]; assert [(x['kv_dtype'], x['dtype']) for x in r]==[('q8', 'bf16')], r" \
  && ok || bad "bench grpo --kv-dtype q8 --dtype bf16"

expect_error() {   # expect_error code "substring" args...
  local code=$1 want=$2; shift 2
  set +e; "$ENGINE" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?; set -e
  if [ $rc -ne "$code" ]; then bad "exit $rc (want $code): $*"; return; fi
  grep -qF -- "$want" "$tmp/err" && ok || { bad "error for '$*' lacks \"$want\""; cat "$tmp/err"; }
}
expect_error 2 "usage" generate --model "$M"
expect_error 2 "usage" generate --model "$M" --prompt x --prompt-tokens 1
expect_error 2 "--prompt-tokens" generate --model "$M" --prompt-tokens 1,,2
expect_error 2 "--top-p" generate --model "$M" --prompt x --top-p 2
expect_error 1 "vocabulary" generate --model "$M" --prompt-tokens 1,99999
expect_error 1 "KV blocks" generate --model "$M" --prompt x --max-tokens 1000 --kv-memory-mb 1
expect_error 2 "--kv-dtype" generate --model "$M" --prompt x --kv-dtype bf16
expect_error 2 "--kv-dtype" bench grpo --kv-dtype bf16
expect_error 2 "--dtype: expected auto, f32, bf16, q8 or q4" generate --model "$M" --prompt x --dtype f16
expect_error 2 "--dtype: expected f32, bf16, q8 or q4" bench generate --config tiny --dtype int8
expect_error 2 "--dtype" bench generate --config tiny --dtype fp8
expect_error 2 "--dtype" bench grpo --dtype bfloat16
expect_error 2 "--layers" bench generate --config tiny --layers 0
expect_error 1 "config.json" generate --model "$tmp/nope" --prompt x

echo "generate: $pass passed, $fail failed"
[ $fail = 0 ]
