#!/usr/bin/env bash
# Data parallelism (engine/dist.h): the same pipeline run by one process and
# by `mpirun -np 2` (Open MPI) computes the same training: the pretrain and
# sft stages split each batch across the ranks and sum their gradients, so
# every step's loss and the final weights agree up to the order of the sums;
# the eval stage runs on rank 0; rank 0 alone writes events and models; a
# batch smaller than the job is refused. The ranks run under the sanitizers
# without leak detection (Open MPI's own allocations outlive MPI_Finalize).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=$(realpath "${ENGINE:-build/aha-engine-san}")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $2"; fail=1; fi; }
export OMP_NUM_THREADS=1
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS -x ASAN_OPTIONS)

root=$PWD
cd "$tmp"
"$ENGINE" datagen arithmetic --n 1000 --seed 1 --format text --out text.jsonl
"$ENGINE" datagen arithmetic --n 100 --seed 2 --format rl --out rl.jsonl
/usr/bin/python3 "$root/tests/cli/sft_rows.py" rl.jsonl sft.jsonl
# sft's batch of 5 splits unevenly (3 + 2 rows)
cat > spec.json <<'JSON'
{"name": "dp", "stages": [
 {"name": "base", "kind": "pretrain", "dataset": "text.jsonl",
  "params": {"config": "tiny", "steps": 8, "batch_size": 4, "seq_len": 64, "learning_rate": 0.003, "log_every": 1}},
 {"name": "sft", "kind": "sft", "model": "base", "dataset": "sft.jsonl",
  "params": {"max_steps": 6, "batch_size": 5, "seq_len": 64, "learning_rate": 0.001, "log_every": 1}},
 {"name": "ev", "kind": "eval", "model": "sft", "dataset": "rl.jsonl",
  "reward": {"components": [{"type": "accuracy", "weight": 1}]}, "params": {"max_completion_length": 8}}]}
JSON
"$ENGINE" train --spec spec.json --data-dir . --out one > one.ev
ASAN_OPTIONS=detect_leaks=0 "${MPIRUN[@]}" "$ENGINE" train --spec spec.json --data-dir . --out two > two.ev 2> two.err \
  || { echo "FAILED: the 2-rank job exited non-zero: $(tail -3 two.err)"; fail=1; }
out=$(/usr/bin/python3 - <<'PY'
import json, struct
def events(p):
    return [json.loads(l) for l in open(p)]
def weights(d):
    with open(d + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    return out
one, two = events("one.ev"), events("two.ev")
bad = []
kinds = lambda ev: [(e["type"], e.get("stage"), e.get("step"), e.get("status")) for e in ev]
if kinds(one) != kinds(two):
    bad.append("the event streams differ: %d and %d events" % (len(one), len(two)))
worst = 0.0
for a, b in zip(one, two):
    if a["type"] == "metric" and "loss" in a["values"]:
        x, y = a["values"]["loss"], b["values"]["loss"]
        worst = max(worst, abs(x - y) / abs(x))
if worst > 1e-5:
    bad.append("losses differ by %.2g (relative)" % worst)
w1, w2 = weights("one/sft"), weights("two/sft")
dw = max(abs(p - q) for k in w1 for p, q in zip(w1[k], w2[k]))
if dw > 1e-4:
    bad.append("final weights differ by %.3g" % dw)
acc = [e["values"]["pass@1"] for e in two if e["type"] == "metric" and e["stage"] == "ev"]
if len(acc) != 1:
    bad.append("the eval ran %d times" % len(acc))
print("; ".join(bad) if bad else "ok: worst loss difference %.2g relative, weights %.2g" % (worst, dw))
PY
)
echo "dist: $out"
check "[[ '$out' == ok* ]]" "one process against two ranks"
check "[ \$(grep -c '\"type\":\"done\"' two.ev) = 1 ]" "rank 1 wrote events too"
check "! grep -q 'Sanitizer\|runtime error' two.err" "a sanitizer report: $(grep -m3 'Sanitizer\|runtime error' two.err)"
# a batch smaller than the job: refused, naming both numbers, and the job ends
sed 's/"batch_size": 5/"batch_size": 1/' spec.json > small.json
rc=0
ASAN_OPTIONS=detect_leaks=0 timeout 120 "${MPIRUN[@]}" "$ENGINE" train --spec small.json --data-dir . --out three \
  > three.ev 2>/dev/null || rc=$?
check "[ $rc = 1 ] && grep -q 'batch_size 1 is smaller than the 2 data-parallel ranks' three.ev" \
  "small batch: exit $rc, $(grep -m1 '"error"' three.ev)"
[ $fail = 0 ] && echo "dist: 1 passed, 0 failed" || { echo "dist: 0 passed, 1 failed"; exit 1; }
