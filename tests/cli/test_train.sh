#!/usr/bin/env bash
# Pipelines end to end: pretrain -> sft in one spec, run by `aha-engine
# train`; SFT metrics and held-out loss; the output model loads; and every
# validation error is reported before any work starts, naming stage and field.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=$(realpath "${ENGINE:-build/aha-engine-san}")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $2"; fail=1; fi; }

mkdir -p "$tmp/data"
"$ENGINE" datagen arithmetic --n 1500 --seed 1 --format text --out "$tmp/data/text.jsonl"
"$ENGINE" datagen arithmetic --n 200 --seed 2 --format rl --out "$tmp/data/rl.jsonl"
# SFT rows: the prompt, and a worked completion in the R1 format.
/usr/bin/python3 tests/cli/sft_rows.py "$tmp/data/rl.jsonl" "$tmp/data/sft.jsonl"
cat > "$tmp/spec.json" <<'JSON'
{"name": "t", "stages": [
  {"name": "sft", "kind": "sft", "model": "base", "dataset": "sft.jsonl",
   "params": {"epochs": 2, "batch_size": 4, "seq_len": 160, "learning_rate": 0.002,
              "eval_fraction": 0.1, "packing": true, "log_every": 5, "seed": 3,
              "chat_template": "chatml"}},
  {"name": "base", "kind": "pretrain", "dataset": "text.jsonl",
   "params": {"config": "tiny", "steps": 30, "batch_size": 4, "seq_len": 64,
              "learning_rate": 0.003, "warmup_steps": 3, "log_every": 10}}]}
JSON
"$ENGINE" train --spec "$tmp/spec.json" --data-dir "$tmp/data" > "$tmp/events"
check "grep -q '\"order\":\\[\"base\",\"sft\"\\]' '$tmp/events'" "stages should run in dependency order: $(head -1 "$tmp/events")"
check "grep -q '\"stage\":\"sft\".*\"mean_token_accuracy\"' '$tmp/events'" "sft metrics missing"
check "grep -q '\"eval_loss\"' '$tmp/events'" "eval_loss missing"
first=$(grep '"stage":"sft","step"' "$tmp/events" | grep '"loss"' | head -1 | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
last=$(grep '"stage":"sft","step"' "$tmp/events" | grep '"loss"' | tail -1 | sed 's/.*"loss":\([0-9.e-]*\).*/\1/')
echo "sft loss: first $first, last $last"
check "awk 'BEGIN{exit !($last < $first)}'" "sft loss should fall ($first -> $last)"
check "grep -q '\"type\":\"done\"' '$tmp/events'" "no done event"
for f in config.json model.safetensors tokenizer.json; do
  check "[ -s '$tmp/data/runs/t/sft/$f' ]" "sft output lacks $f"
done
"$ENGINE" sample --model "$tmp/data/runs/t/sft" --prompt "x" --max-tokens 4 --temperature 0 >/dev/null 2>&1 \
  || { echo "FAILED: the sft model does not load"; fail=1; }

expect_invalid() {   # expect_invalid "message substring" 'spec json'
  printf '%s' "$2" > "$tmp/bad.json"
  if "$ENGINE" train --spec "$tmp/bad.json" --data-dir "$tmp/data" --out "$tmp/badout" >/dev/null 2>"$tmp/err"; then
    echo "FAILED: accepted invalid spec: $2"; fail=1; return
  fi
  grep -qF -- "$1" "$tmp/err" || { echo "FAILED: error lacks \"$1\": $(cat "$tmp/err")"; fail=1; }
  [ ! -e "$tmp/badout" ] || { echo "FAILED: an invalid spec left output behind"; fail=1; }
}
P='"kind":"pretrain","dataset":"text.jsonl"'
expect_invalid 'cycle' '{"name":"c","stages":[{"name":"a","kind":"sft","model":"b","dataset":"sft.jsonl"},{"name":"b","kind":"sft","model":"a","dataset":"sft.jsonl"}]}'
expect_invalid 'params.learning_rat: unknown parameter' '{"name":"c","stages":[{"name":"a",'"$P"',"params":{"config":"tiny","learning_rat":1}}]}'
expect_invalid 'params.steps: expected an integer' '{"name":"c","stages":[{"name":"a",'"$P"',"params":{"config":"tiny","steps":"ten"}}]}'
expect_invalid 'params.kv_dtype: expected one of' '{"name":"c","stages":[{"name":"a","kind":"eval","model":"runs/t/sft","dataset":"sft.jsonl","params":{"kv_dtype":"bf16"}}]}'
expect_invalid 'params.dtype: expected one of' '{"name":"c","stages":[{"name":"a","kind":"eval","model":"runs/t/sft","dataset":"sft.jsonl","params":{"dtype":"f16"}}]}'
expect_invalid 'params.steps: must be in' '{"name":"c","stages":[{"name":"a",'"$P"',"params":{"config":"tiny","steps":0}}]}'
expect_invalid 'dataset "nope.jsonl" is neither' '{"name":"c","stages":[{"name":"a","kind":"pretrain","dataset":"nope.jsonl","params":{"config":"tiny"}}]}'
expect_invalid 'unknown kind "sfd"' '{"name":"c","stages":[{"name":"a","kind":"sfd"}]}'
expect_invalid 'duplicate stage name' '{"name":"c","stages":[{"name":"a",'"$P"',"params":{"config":"tiny"}},{"name":"a",'"$P"',"params":{"config":"tiny"}}]}'
expect_invalid 'model "$base" but the pipeline has no base_model' '{"name":"c","stages":[{"name":"a","kind":"sft","model":"$base","dataset":"sft.jsonl"}]}'
expect_invalid 'unknown field "modle"' '{"name":"c","stages":[{"name":"a","kind":"sft","modle":"x","dataset":"sft.jsonl"}]}'
expect_invalid 'bad.json:1:' '{"name":'

# A stage that fails at run time: stage failed, error, then done failed,
# and a nonzero exit.
printf '{"prompt":"x","completion":"y"}\n{"prompt":"x"}\n' > "$tmp/data/bad-sft.jsonl"
rc=0
"$ENGINE" train --spec - --data-dir "$tmp/data" --out "$tmp/failout" > "$tmp/fail.events" 2>/dev/null <<'JSON' || rc=$?
{"name":"f","stages":[{"name":"s","kind":"sft","model":"runs/t/sft","dataset":"bad-sft.jsonl"}]}
JSON
check "[ $rc = 1 ]" "a failed run exits $rc, want 1"
check "tail -2 '$tmp/fail.events' | head -1 | grep -q '\"type\":\"error\",\"stage\":\"s\",\"message\":\".*bad-sft.jsonl:2'" "no error event: $(tail -2 "$tmp/fail.events" | head -1)"
check "tail -1 '$tmp/fail.events' | grep -q '\"type\":\"done\",\"name\":\"f\",\"status\":\"failed\"'" "no done/failed event: $(tail -1 "$tmp/fail.events")"
check "grep -q '\"type\":\"stage\",\"stage\":\"s\",\"kind\":\"sft\",\"status\":\"failed\",\"path\"' '$tmp/fail.events'" "no stage failed event"
check "grep -q '\"time\":1[0-9.]*' '$tmp/fail.events'" "events lack time"

# --check: the whole validation without the file system, one JSON line.
check_spec() {   # check_spec 'expected stdout line' 'spec json' [expected exit]
  local got rc=0
  got=$(printf '%s' "$2" | (cd "$tmp" && "$ENGINE" train --check --spec - 2>/dev/null)) || rc=$?
  [ "$got" = "$1" ] || { echo "FAILED: --check printed $got, want $1 (spec $2)"; fail=1; }
  [ "$rc" = "${3:-0}" ] || { echo "FAILED: --check exited $rc, want ${3:-0}"; fail=1; }
}
G='"kind":"grpo","model":"$base","dataset":"ds-1234"'
check_spec '{"ok":true}' '{"name":"c","base_model":"model-abc","stages":[{"name":"rl",'"$G"',"reward":"reward-7","params":{"steps":2}},{"name":"ev","kind":"eval","model":"rl","dataset":"ds-9","reward":{"components":[{"type":"accuracy","weight":1}]}}]}'
# a stored pipeline may leave $base to the run that uses it
check_spec '{"ok":true}' '{"name":"c","stages":[{"name":"rl",'"$G"',"reward":"r","params":{"steps":2}}]}'
check_spec '{"ok":false,"error":"stage \"rl\": params.learning_rate: expected a number"}' '{"name":"c","base_model":"m","stages":[{"name":"rl",'"$G"',"reward":"r","params":{"learning_rate":"high"}}]}' 1
check_spec '{"ok":false,"error":"pipeline: the stages \"a\", \"b\" reference each other in a cycle"}' '{"name":"c","stages":[{"name":"a","kind":"sft","model":"b","dataset":"d"},{"name":"b","kind":"sft","model":"a","dataset":"d"}]}' 1
got=$(printf '%s' '{"name":"c","base_model":"m","stages":[{"name":"rl",'"$G"',"reward":{"components":[{"type":"acuracy","weight":1}]}}]}' | "$ENGINE" train --check --spec - 2>/dev/null) && { echo "FAILED: --check accepted a bad inline reward"; fail=1; }
check "grep -q 'stage \\\\\"rl\\\\\": field \\\\\"reward\\\\\"' <<<'$got'" "--check reward error: $got"
printf '{"name":' > "$tmp/trunc.json"
got=$("$ENGINE" train --check --spec "$tmp/trunc.json" 2>/dev/null) && { echo "FAILED: --check accepted bad JSON"; fail=1; }
check "grep -q '\"ok\":false,\"error\":\".*trunc.json:1:' <<<'$got'" "--check JSON error: $got"
got=$("$ENGINE" train --check --spec "$tmp/spec.json")
check "[ '$got' = '{\"ok\":true}' ]" "--check of the test spec: $got"
[ $fail = 0 ] && echo "train: 1 passed, 0 failed" || { echo "train: 0 passed, 1 failed"; exit 1; }
