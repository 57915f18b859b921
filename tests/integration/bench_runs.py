#!/usr/bin/env python3
"""tests/integration/bench_runs.py — metric ingest of one run: a stand-in
engine (this file, run as `train`) prints metric events as fast as it can;
the server records every value (run_metrics rows, run_events, NOTIFY).
Prints values/s recorded and the engine's own emission rate (the engine must
never wait on the database).

usage: bench_runs.py [--server build/aha-server] [--events 4000] [--values 25]"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def fake_engine(argv):
    """`serve`: ready and idle; `train`: --validate-only, or the events."""
    if argv[1] == "serve":
        print(json.dumps({"type": "ready", "protocol": 1, "backend": "bench"}), flush=True)
        for _ in sys.stdin:
            pass
        return 0
    if "--validate-only" in argv:
        return 0
    out = argv[argv.index("--out") + 1]
    n = int(os.environ.get("BENCH_EVENTS", "4000"))
    k = int(os.environ.get("BENCH_VALUES", "25"))
    names = ["m%02d" % i for i in range(k)]
    w = sys.stdout
    t0 = time.time()
    w.write(json.dumps({"type": "pipeline", "name": "bench", "status": "running", "order": ["rl"]}) + "\n")
    w.write(json.dumps({"type": "stage", "stage": "rl", "kind": "grpo", "status": "running"}) + "\n")
    for step in range(1, n + 1):
        vals = {nm: step * 0.001 + i for i, nm in enumerate(names)}
        w.write(json.dumps({"type": "metric", "stage": "rl", "step": step, "values": vals}) + "\n")
    w.flush()
    dt = time.time() - t0
    os.makedirs(os.path.join(out, "rl"), exist_ok=True)
    with open(os.path.join(out, "emit_seconds"), "w") as f:
        f.write("%f" % dt)
    w.write(json.dumps({"type": "stage", "stage": "rl", "kind": "grpo", "status": "succeeded",
                        "path": os.path.join(out, "rl")}) + "\n")
    w.write(json.dumps({"type": "done", "name": "bench", "status": "succeeded"}) + "\n")
    return 0


def main():
    from harness import Postgres, Server, create_key, make_tempdir, remove_tempdir, request
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="build/aha-server")
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--values", type=int, default=25)
    args = ap.parse_args()
    base = make_tempdir()
    pg = srv = None
    try:
        pg = Postgres(base)
        data = os.path.join(base, "data")
        os.makedirs(os.path.join(data, "models", "base"))
        os.makedirs(os.path.join(data, "data"))
        with open(os.path.join(data, "models", "base", "config.json"), "w") as f:
            json.dump({"max_position_embeddings": 64}, f)
        with open(os.path.join(data, "data", "rl.jsonl"), "w") as f:
            f.write('{"prompt":"1+1","answer":"2"}\n')
        engine = os.path.join(base, "engine")
        with open(engine, "w") as f:
            f.write("#!/bin/sh\nexec %s %s --fake-engine \"$@\"\n" % (sys.executable, os.path.abspath(__file__)))
        os.chmod(engine, 0o755)
        key = create_key(os.path.abspath(args.server), pg.url, "bench", "admin")
        srv = Server(os.path.abspath(args.server), pg.url, data, engine,
                     env={"BENCH_EVENTS": str(args.events), "BENCH_VALUES": str(args.values)})
        spec = {"name": "bench", "stages": [{"name": "rl", "kind": "grpo", "model": "$base",
                                             "dataset": "data/rl.jsonl", "reward": {"components": []}}]}
        t0 = time.time()
        st, run, _ = request(srv, "POST", "/v1/runs", {"pipeline": spec, "base_model": "base"}, key=key)
        assert st == 201, run
        while True:
            st, r, _ = request(srv, "GET", "/v1/runs/" + run["id"], key=key)
            if r["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        dt = time.time() - t0
        assert r["status"] == "succeeded", r
        rows = int(pg.psql("SELECT count(*) FROM run_metrics"))
        evs = int(pg.psql("SELECT count(*) FROM run_events"))
        first, last = pg.psql("SELECT extract(epoch FROM min(created_at)) || ' ' || extract(epoch FROM"
                              " max(created_at)) FROM run_events WHERE type = 'metric'").split()
        with open(os.path.join(data, "runs", run["id"], "emit_seconds")) as f:
            emit = float(f.read())
        assert rows == args.events * args.values, (rows, args.events * args.values)
        span = float(last) - float(first)
        print("runs ingest: %d metric values (%d events, %d run_events rows) recorded" % (rows, args.events, evs))
        print("runs ingest: %.0f values/s from POST to succeeded (%.2f s, engine start included)" % (rows / dt, dt))
        print("runs ingest: %.0f values/s between the first and the last metric transaction (%.2f s)"
              % (rows / max(span, 1e-6), span))
        print("runs ingest: the engine emitted them at %.0f values/s (%.2f s): never held up" % (rows / emit, emit))
    finally:
        if srv:
            srv.stop()
        if pg:
            pg.stop()
        remove_tempdir(base)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--fake-engine":
        sys.exit(fake_engine(sys.argv[1:]))
    sys.exit(main())
