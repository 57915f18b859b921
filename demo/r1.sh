#!/usr/bin/env bash
# demo/r1.sh — the R1 recipe beside R1-Zero on one tiny base (demo/r1.json):
# synthetic arithmetic data as demo/r1_zero.sh makes it, plus a cold-start
# set of 500 clean worked solutions; then pretrain -> R1-Zero (GRPO on the
# base) and R1 (cold-start SFT -> GRPO -> rejection sampling -> SFT of the
# base on the kept samples -> GRPO), every model evaluated on held-out
# problems; one JSON line on stdout. A demo, not a test: it asserts nothing.
# Usage: demo/r1.sh (or make demo-r1).
#   ENGINE  engine binary (build/aha-engine)    OUT  work dir (var/demo/r1)
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-build/aha-engine}
OUT=${OUT:-var/demo/r1}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
start=$(date +%s.%N)
rm -rf "$OUT"
mkdir -p "$OUT/data"
split=(--ops +- --test-percent 10)
"$ENGINE" datagen arithmetic --n 20000 --seed 1 --format text "${split[@]}" --split train \
  --answer-noise 0.2 --format-noise 0.3 --out "$OUT/data/arith-pretrain.jsonl"
"$ENGINE" datagen arithmetic --n 2000 --seed 2 "${split[@]}" --split train --out "$OUT/data/arith-rl.jsonl"
"$ENGINE" datagen arithmetic --n 200 --seed 3 "${split[@]}" --split test --out "$OUT/data/arith-test.jsonl"
"$ENGINE" datagen arithmetic --n 500 --seed 4 --format text "${split[@]}" --split train \
  --out "$OUT/data/arith-cold.txt.jsonl"
# the cold start: "User: P\nAssistant: C" worked solutions as prompt/completion rows
"$PY" - "$OUT/data/arith-cold.txt.jsonl" "$OUT/data/arith-cold.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        t = json.loads(line)["text"]
        p, _, c = t.partition("\nAssistant: ")
        out.write(json.dumps({"prompt": p[len("User: "):], "completion": c}) + "\n")
PY
echo "r1: data in $OUT/data; running demo/r1.json" >&2
"$ENGINE" train --spec demo/r1.json --data-dir "$OUT/data" --out "$OUT/run" > "$OUT/events.ndjson"
"$PY" - "$OUT/events.ndjson" "$start" "$(date +%s.%N)" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
evals = {e["stage"]: e["values"] for e in ev if e["type"] == "metric" and "pass@1" in e["values"]}
rs = [e["values"] for e in ev if e["type"] == "metric" and e["stage"] == "rs"][-1]
secs = {e["stage"]: round(e["seconds"] / 60, 2) for e in ev if e["type"] == "stage" and "seconds" in e}
out = {}
for name in ("base", "zero", "cold", "sft2", "r1"):
    v = evals["eval_" + name]
    out[name] = {"accuracy": round(v["pass@1_sampled"], 4), "accuracy_greedy": round(v["pass@1"], 4),
                 "format": round(v["format_rate_sampled"], 4)}
out["rejection_sampling"] = {"kept_rows": rs["rows_written"], "kept_rate": round(rs["kept_rate"], 4),
                             "prompts_kept_rate": round(rs["prompts_kept_rate"], 4)}
out["minutes"] = round((float(sys.argv[3]) - float(sys.argv[2])) / 60, 2)
out["minutes_per_stage"] = secs
print(json.dumps(out))
PY
