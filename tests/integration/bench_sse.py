#!/usr/bin/env python3
"""tests/integration/bench_sse.py — run event streams under load: a
throwaway PostgreSQL, two release servers on it, W watchers on one run
while a writer inserts N events the way the run supervisor does (one
transaction and one NOTIFY each). Prints the writer's rate, events/s
delivered to all watchers together, the lag of the last watcher after the
last insert, and the same for W watchers replaying the finished run; checks
that every watcher got every seq exactly once (exits non-zero otherwise).

usage: bench_sse.py [--server build/aha-server] [--watchers 100] [--events 2000]"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, Postgres, Server, create_key, make_tempdir, remove_tempdir  # noqa: E402
from test_sse import FAKE, Watchers, Writer, metric_event, new_run  # noqa: E402


def verify(results, n):
    """Watchers whose seqs are not exactly 1..n, each once, ending with one
    final status."""
    want = list(range(1, n + 1))
    return sum(1 for seqs, final, _ in results if seqs != want or len(final) != 1)


def commits(pg):
    return int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def live(pg, servers, key, watchers, events, batch=1):
    run = new_run(pg)
    w = Writer(pg)
    ws = Watchers(servers, run, key, watchers)
    ws.wait_open()
    time.sleep(1.2)  # backends report their statistics at most once a second
    c0 = commits(pg)
    times = {}

    def write():
        times["t0"] = time.time()
        for i in range(1, events, batch):
            w.add_many(run, [metric_event(j) for j in range(i, min(i + batch, events))])
        w.add(run, "status", {"status": "succeeded"})
        w.sync()
        times["written"] = time.time()
    wt = threading.Thread(target=write)
    wt.start()
    results = ws.finish(timeout=300)
    wt.join()
    w.close()
    time.sleep(1.2)
    reads = commits(pg) - c0 - (events - 1 + batch - 1) // batch - 1 - 3  # less the writer's
    t0, t_written = times["t0"], times["written"]
    t_end = max(r[2] for r in results)
    bad = verify(results, events)
    delivered = sum(len(r[0]) for r in results)
    print("  live, %d watchers on %d server(s), %d events in transactions of %d: writer %.0f events/s; "
          "delivered %.0f events/s (%d in %.2f s); last watcher done %.2f s after the last insert; "
          "%.2f DB reads per watcher per 10 events; %d watchers wrong"
          % (len(results), len(servers), events, batch, events / (t_written - t0), delivered / (t_end - t0),
             delivered, t_end - t0, t_end - t_written, 10.0 * reads / delivered, bad))
    return run, bad


def replay(servers, run, key, watchers, events):
    t0 = time.time()
    results = Watchers(servers, run, key, watchers).finish(timeout=300)
    t_end = max(r[2] for r in results)
    bad = verify(results, events)
    delivered = sum(len(r[0]) for r in results)
    print("  replay of the finished run, %d watchers: delivered %.0f events/s (%d in %.2f s); %d watchers wrong"
          % (len(results), delivered / (t_end - t0), delivered, t_end - t0, bad))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.join(ROOT, "build", "aha-server"))
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    base = make_tempdir()
    pg = Postgres(base)
    servers = []
    bad = 0
    try:
        data = os.path.join(base, "data")
        os.makedirs(data)
        key = create_key(args.server, pg.url, "bench-read", "read")
        for _ in range(2):
            servers.append(Server(args.server, pg.url, data, FAKE))
        print("run event streams (SSE):")
        run, b = live(pg, servers[:1], key, args.watchers, args.events)
        bad += b
        bad += replay(servers[:1], run, key, args.watchers, args.events)
        bad += live(pg, servers, key, args.watchers, args.events)[1]
        bad += live(pg, servers, key, args.watchers, args.events * 5, batch=50)[1]
    finally:
        for srv in servers:
            srv.stop()
        pg.stop()
        remove_tempdir(base)
    print("bench sse: %s" % ("ok" if not bad else "FAILED"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
