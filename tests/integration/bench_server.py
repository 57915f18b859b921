#!/usr/bin/env python3
"""tests/integration/bench_server.py — aha-server benchmark: a throwaway
PostgreSQL, the release server, the real engine on a tiny model (pretrained
here for two steps; max_tokens 1) and, for the exact-token check, the fake
engine. Prints requests/s and p50/p99 latency at concurrency 1 and 32, the
server's own time per request (from its aha_server_overhead_seconds
histogram), and 200 concurrent streams checked for lost or reordered tokens.

usage: bench_server.py [--server build/aha-server] [--engine build/aha-engine]"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, Postgres, Server, create_key, make_tempdir, remove_tempdir, request  # noqa: E402

FAKE = os.path.join(ROOT, "tests", "integration", "fake_engine.py")


def hist(srv, name):
    _, text, _ = request(srv, "GET", "/metrics")
    buckets, total, count = [], 0.0, 0
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_sum "):
            total = float(line.split()[1])
        elif line.startswith(name + "_count "):
            count = int(float(line.split()[1]))
    return buckets, total, count


def hist_delta(a, b):
    """p50 upper bound (bucket) and mean of the observations between two snapshots."""
    (ba, sa, ca), (bb, sb, cb) = a, b
    n = cb - ca
    if n <= 0:
        return None, None
    p50 = None
    for (le, x), (_, y) in zip(bb, ba):
        if x - y >= n / 2:
            p50 = le
            break
    return p50, (sb - sa) / n


def client(args, *argv):
    r = subprocess.run([args.client] + [str(a) for a in argv], capture_output=True, text=True)
    if r.returncode:
        print("bench-client failed: " + r.stderr.strip()[-500:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def phase(args, srv, key, conc, total, body, label):
    before = hist(srv, "aha_server_overhead_seconds")
    res = client(args, "req", "http://127.0.0.1:%d/v1/completions" % srv.port, key, conc, total, json.dumps(body))
    p50, mean = hist_delta(before, hist(srv, "aha_server_overhead_seconds"))
    print("%-28s conc %3d: %7.1f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  server overhead p50 <= %s ms, mean %.3f ms"
          % (label, conc, res["rps"], res["p50_ms"], res["p99_ms"], res["errors"],
             "%g" % (p50 * 1e3) if p50 else "?", (mean or 0) * 1e3), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.join(ROOT, "build", "aha-server"))
    ap.add_argument("--engine", default=os.path.join(ROOT, "build", "aha-engine"))
    ap.add_argument("--client", default=os.path.join(ROOT, "build", "bench-client"))
    ap.add_argument("--requests", type=int, default=640)
    args = ap.parse_args()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", os.path.join(ROOT, "tests/integration/bench_client.c"),
                    "-o", args.client, "-lcurl", "-ljansson", "-lpthread"], check=True)
    base = make_tempdir()
    pg = Postgres(base)
    ok = True
    try:
        key = create_key(args.server, pg.url, "bench", "admin")
        # the real engine on a tiny model
        data = os.path.join(base, "real")
        os.makedirs(os.path.join(data, "models"))
        corpus = os.path.join(base, "arith.jsonl")
        subprocess.run([args.engine, "datagen", "arithmetic", "--n", "200", "--seed", "1", "--format", "text",
                        "--out", corpus], check=True, capture_output=True)
        subprocess.run([args.engine, "pretrain", "--config", "tiny", "--data", corpus, "--steps", "2", "--out",
                        os.path.join(data, "models", "tiny")], check=True, capture_output=True)
        srv = Server(args.server, pg.url, data, args.engine)
        try:
            srv.wait_ready(60)
            body = {"model": "tiny", "prompt": "12 + 7 =", "max_tokens": 1, "temperature": 0}
            request(srv, "POST", "/v1/completions", body, key=key, timeout=120)  # load the model
            print("real engine, tiny model, max_tokens 1:")
            r1 = phase(args, srv, key, 1, max(50, args.requests // 8), body, "  completions")
            r32 = phase(args, srv, key, 32, args.requests, body, "  completions")
            sbody = dict(body, max_tokens=16, stream=True)
            res = client(args, "stream", "http://127.0.0.1:%d/v1/completions" % srv.port, key, 200, "-",
                         json.dumps(sbody))
            print("  200 concurrent streams (16 tokens): %d errors, %d badly framed, wall %.2f s, p99 %.1f ms"
                  % (res["errors"], res["bad_streams"], res["wall_s"], res["p99_ms"]))
            ok &= r1["errors"] == 0 and r32["errors"] == 0 and res["errors"] == 0 and res["bad_streams"] == 0
        finally:
            srv.stop()
        # exact tokens with the deterministic fake engine
        fdata = os.path.join(base, "fake")
        os.makedirs(os.path.join(fdata, "models", "tiny"))
        with open(os.path.join(fdata, "models", "tiny", "config.json"), "w") as f:
            json.dump({"max_position_embeddings": 4096}, f)
        srv = Server(args.server, pg.url, fdata, FAKE)
        try:
            srv.wait_ready(30)
            body = {"model": "tiny", "prompt": "NOTHINK", "max_tokens": 1}
            print("fake engine (the server's own cost; the engine answers at once), max_tokens 1:")
            f1 = phase(args, srv, key, 1, args.requests, body, "  completions")
            f32 = phase(args, srv, key, 32, args.requests * 4, body, "  completions")
            ok &= f1["errors"] == 0 and f32["errors"] == 0
            want = "".join("t%d " % i for i in range(64))
            res = client(args, "stream", "http://127.0.0.1:%d/v1/completions" % srv.port, key, 200, want,
                         json.dumps({"model": "tiny", "prompt": "COUNT", "max_tokens": 64, "stream": True}))
            print("fake engine: 200 concurrent streams x 64 tokens: %d errors, %d lost/reordered, wall %.2f s"
                  % (res["errors"], res["bad_streams"], res["wall_s"]))
            ok &= res["errors"] == 0 and res["bad_streams"] == 0
        finally:
            srv.stop()
    finally:
        pg.stop()
        remove_tempdir(base)
    print("bench: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
