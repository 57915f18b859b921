#!/usr/bin/env bash
# `aha-engine forward` against the PyTorch fixtures: logits and every
# gradient, through the command-line contract other checks rely on; then
# its errors on bad arguments and broken checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-build/aha-engine-san}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
for fx in tests/ref/fixtures/*/; do
  fx=${fx%/}
  toks=$(/usr/bin/python3 -c "
import sys; sys.path.insert(0, 'tests/cli'); from check_forward import read_ref
print(','.join(str(int(t)) for t in read_ref('$fx/ref.ref')['tokens']))" 2>/dev/null || true)
  [ -n "$toks" ] || { echo "cannot read tokens of $fx"; fail=1; continue; }
  "$ENGINE" forward --model "$fx" --tokens "$toks" --logits-out "$tmp/logits.bin" --grads-out "$tmp/grads.safetensors" 2>"$tmp/err" \
    || { cat "$tmp/err"; fail=1; continue; }
  /usr/bin/python3 tests/cli/check_forward.py "$fx" "$tmp/logits.bin" "$tmp/grads.safetensors" || fail=1
done

expect_error() {   # expect_error "substring" args...
  local want=$1; shift
  if "$ENGINE" "$@" >"$tmp/out" 2>"$tmp/err"; then echo "expected failure: $*"; fail=1; return; fi
  grep -qF -- "$want" "$tmp/err" || { echo "error for '$*' lacks \"$want\":"; cat "$tmp/err"; fail=1; }
}
fx=tests/ref/fixtures/qwen2-tied
expect_error "--tokens" forward --model $fx --tokens 1,x,3 --logits-out "$tmp/l"
expect_error "vocabulary" forward --model $fx --tokens 1,99999 --logits-out "$tmp/l"
expect_error "unknown argument" forward --model $fx --tokens 1 --logits-out "$tmp/l" --bogus
mkdir -p "$tmp/broken"; cp $fx/config.json "$tmp/broken/"
head -c 100 $fx/model.safetensors > "$tmp/broken/model.safetensors"
expect_error "model.safetensors" forward --model "$tmp/broken" --tokens 1,2 --logits-out "$tmp/l"
printf '{"architectures": ["GPT2LMHeadModel"]}' > "$tmp/broken/config.json"
expect_error "GPT2LMHeadModel" forward --model "$tmp/broken" --tokens 1,2 --logits-out "$tmp/l"
[ $fail = 0 ] && echo "forward: 1 passed, 0 failed" || { echo "forward: 0 passed, 1 failed"; exit 1; }
