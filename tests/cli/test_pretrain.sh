#!/usr/bin/env bash
# Pretraining end to end on synthetic text: the loss falls, the output is a
# loadable Hugging Face model directory with checkpoints, sampling works, and
# bad data is a clear error naming the file and line.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-build/aha-engine-san}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $2"; fail=1; fi; }

"$ENGINE" datagen arithmetic --n 2000 --seed 1 --format text --out "$tmp/text.jsonl"
"$ENGINE" pretrain --config tiny --data "$tmp/text.jsonl" --steps 40 --batch 4 --seq-len 64 \
  --lr 3e-3 --warmup 4 --log-every 5 --checkpoint-every 20 --seed 3 --out "$tmp/m" > "$tmp/events"
first=$(grep '"type":"metric"' "$tmp/events" | head -1 | sed 's/.*"loss":\([0-9.]*\).*/\1/')
last=$(grep '"type":"metric"' "$tmp/events" | tail -1 | sed 's/.*"loss":\([0-9.]*\).*/\1/')
echo "pretrain loss: first $first, last $last"
check "awk 'BEGIN{exit !($last < $first - 1.0)}'" "loss should fall by more than 1 nat ($first -> $last)"
for f in config.json model.safetensors tokenizer.json checkpoints/step-20/model.safetensors \
         checkpoints/step-20/optimizer.safetensors checkpoints/step-20/trainer_state.json; do
  check "[ -s '$tmp/m/$f' ]" "missing $f"
done
check "grep -q '\"status\":\"succeeded\"' '$tmp/events'" "no final stage event"
out=$("$ENGINE" sample --model "$tmp/m" --prompt "User: What is 2 + 3?" --max-tokens 16 --temperature 0 --seed 1 2>/dev/null)
check "[[ \"\$out\" == 'User: What is 2 + 3?'* ]]" "sample output should start with the prompt: $out"
out2=$("$ENGINE" sample --model "$tmp/m" --prompt "User: What is 2 + 3?" --max-tokens 16 --temperature 0 --seed 9 2>/dev/null)
check "[ \"\$out\" = \"\$out2\" ]" "greedy sampling must not depend on the seed"

# Continued pretraining from that model: its weights (the loss starts
# where the first run ended, not at a random model's), tokenizer and chat
# template carry over.
"$ENGINE" pretrain --init "$tmp/m" --data "$tmp/text.jsonl" --steps 5 --batch 4 --seq-len 64 \
  --lr 1e-3 --warmup 0 --log-every 1 --seed 4 --out "$tmp/m2" > "$tmp/events2"
cont=$(grep '"type":"metric"' "$tmp/events2" | head -1 | sed 's/.*"loss":\([0-9.]*\).*/\1/')
echo "continued pretraining: first loss $cont (scratch run: first $first, last $last)"
check "awk 'BEGIN{exit !($cont < $first - 1.0)}'" "continued run should start from the trained weights ($cont vs $first)"
check "cmp -s '$tmp/m/tokenizer.json' '$tmp/m2/tokenizer.json'" "tokenizer.json should be carried over"
check "[ -s '$tmp/m2/chat_template.name' ]" "chat template should be carried over"
if "$ENGINE" pretrain --config tiny --init "$tmp/m" --data "$tmp/text.jsonl" --steps 1 --out "$tmp/b" 2>/dev/null >/dev/null; then
  echo "FAILED: --config with --init accepted"; fail=1
fi
# the same through a pipeline: "model" on a pretrain stage, exclusive with params.config
spec='{"name":"p","stages":[{"name":"more","kind":"pretrain","model":"M","dataset":"t.jsonl","params":{"steps":1}}]}'
out=$(echo "$spec" | "$ENGINE" train --check --spec - 2>&1 || true)
check "[[ \"\$out\" == *'\"ok\":true'* ]]" "a pretrain stage may name a model to continue: $out"
spec='{"name":"p","stages":[{"name":"more","kind":"pretrain","model":"M","dataset":"t.jsonl","params":{"config":"tiny"}}]}'
out=$(echo "$spec" | "$ENGINE" train --check --spec - 2>&1 || true)
check "[[ \"\$out\" == *'params.config and model are exclusive'* ]]" "config and model together should be refused: $out"

printf '{"text":"ok"}\n{"txt":"bad"}\n' > "$tmp/bad.jsonl"
if "$ENGINE" pretrain --config tiny --data "$tmp/bad.jsonl" --steps 1 --out "$tmp/b" 2>"$tmp/err" >/dev/null; then
  echo "FAILED: bad data accepted"; fail=1
else
  check "grep -q 'bad.jsonl:2: field \"text\" is missing' '$tmp/err'" "error should name file:line and field: $(cat "$tmp/err")"
fi
printf '{"text":"ok"}\n{not json\n' > "$tmp/bad2.jsonl"
if "$ENGINE" pretrain --config tiny --data "$tmp/bad2.jsonl" --steps 1 --out "$tmp/b" 2>"$tmp/err" >/dev/null; then
  echo "FAILED: malformed JSON accepted"; fail=1
else
  check "grep -q 'bad2.jsonl:2:' '$tmp/err'" "error should name file:line: $(cat "$tmp/err")"
fi
[ $fail = 0 ] && echo "pretrain: 1 passed, 0 failed" || { echo "pretrain: 0 passed, 1 failed"; exit 1; }
