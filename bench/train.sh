#!/usr/bin/env bash
# Training-step benchmark, aha against PyTorch side by side in one run:
# prints each implementation's JSON line, then one comparison line per config
# with the tokens/s ratio. Usage: bench/train.sh [ENGINE] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${1:-build/aha-engine}
THREADS=${2:-$(nproc)}
for cfg in tiny small; do
  aha=$(OMP_NUM_THREADS=$THREADS "$ENGINE" bench train --config $cfg --threads "$THREADS" 2>/dev/null)
  echo "$aha"
  torch=$(/usr/bin/python3 bench/torch_train.py --config $cfg --threads "$THREADS")
  echo "$torch"
  /usr/bin/python3 - "$aha" "$torch" <<'PY'
import json, sys
a, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"bench": "train_vs_pytorch", "config": a["config"], "threads": a["threads"],
                  "aha_tokens_per_s": a["tokens_per_s"], "pytorch_tokens_per_s": t["tokens_per_s"],
                  "speedup": round(a["tokens_per_s"] / t["tokens_per_s"], 2), "aha_mfu": a["mfu"]}))
PY
done
