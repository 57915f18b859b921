#!/usr/bin/env python3
"""tests/integration/test_sse.py — GET /v1/runs/{id}/events against a real
PostgreSQL and two server instances on one database. Events are written the
way the run supervisor writes them (INSERT into run_events, then NOTIFY
aha_run_events, '<run id>:<seq>'), by psql, so the stream is tested apart
from the engine. Prints `sse: N passed, M failed` last and exits non-zero on
any failure.

With --engine (an aha-engine that has `train`), a real training run
through POST /v1/runs is also watched from two servers, one of which runs
its engine.

usage: test_sse.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import argparse
import http.client
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ROOT, Postgres, Server, check, create_key, eq, make_tempdir,  # noqa: E402
                     remove_tempdir, request, results)

FAKE = os.path.join(ROOT, "tests", "integration", "fake_engine.py")
FINAL = ("succeeded", "failed", "cancelled")


# ---- writing events as the run supervisor does ---------------------------------

def new_run(pg):
    rid = "run-%024x" % random.getrandbits(96)
    # claimed by no live server, with a lease that never lapses: the servers' schedulers leave it alone
    pg.psql("INSERT INTO runs (id, name, pipeline_id, spec, status, claimed_by, heartbeat_at) VALUES "
            "('%s', 'name-%s', 'pipe-test', '{}', 'running', 'srv-sse-test', 'infinity')" % (rid, rid[4:]))
    return rid


class Writer:
    """A psql session that appends events to runs, one transaction and one
    NOTIFY per event (or per batch with add_many)."""

    def __init__(self, pg, seq=None):
        self.p = subprocess.Popen(["psql", pg.url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.seq = seq if seq is not None else {}
        self.lock = threading.Lock()

    def _sql(self, run, events):
        out = ["BEGIN;"]
        for typ, data in events:
            seq = self.seq.get(run, 0) + 1
            self.seq[run] = seq
            js = json.dumps(data)
            assert "$j$" not in js
            out.append("INSERT INTO run_events (run_id, seq, type, data) VALUES ('%s', %d, '%s', $j$%s$j$);"
                       % (run, seq, typ, js))
        out.append("UPDATE runs SET last_seq = %d WHERE id = '%s';" % (self.seq[run], run))
        out.append("NOTIFY aha_run_events, '%s:%d';" % (run, self.seq[run]))
        out.append("COMMIT;")
        return "\n".join(out) + "\n"

    def add(self, run, typ, data):
        return self.add_many(run, [(typ, data)])

    def add_many(self, run, events):
        with self.lock:
            self.p.stdin.write(self._sql(run, events))
            self.p.stdin.flush()
            return self.seq[run]

    def sync(self):
        """Returns once psql has run everything written so far."""
        with self.lock:
            self.p.stdin.write("SELECT 'synced';\n")
            self.p.stdin.flush()
            while self.p.stdout.readline().strip() != "synced":
                pass

    def close(self):
        self.sync()
        self.p.stdin.close()
        self.p.wait(timeout=10)


def metric_event(step):
    return ("metric", {"stage": "rl", "step": step, "values": {"reward": step / 100.0, "kl": 0.001}})


# ---- reading a stream ---------------------------------------------------------

class Stream:
    """GET /v1/runs/{id}/events over HTTP/1.1 (chunked, as browsers get it),
    parsed as it arrives. events: [(id, event, data)] with data parsed;
    comments and retry hints kept; eof once the server ended the body
    cleanly (its last chunk came)."""

    def __init__(self, srv, run, key, last_event_id=None, after=None, timeout=30):
        self.c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
        h = {"Accept": "text/event-stream"}
        if key:
            h["Authorization"] = "Bearer " + key
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        path = "/v1/runs/%s/events" % run
        if after is not None:
            path += "?after=%s" % after
        self.c.request("GET", path, headers=h)
        self.r = self.c.getresponse()
        self.status = self.r.status
        self.headers = {k.lower(): v for k, v in self.r.getheaders()}
        self.events, self.comments, self.retry = [], [], []
        self.eof = False
        self.block = []

    def body_json(self):
        return json.loads(self.r.read())

    def _line(self):
        line = self.r.readline()
        if not line:
            self.eof = True
            return None
        assert line.endswith(b"\n"), "truncated line %r" % line
        return line[:-1].decode("utf-8")

    def read_event(self):
        """Reads up to the next event; returns it, or None at the end."""
        while True:
            line = self._line()
            if line is None:
                assert not self.block, "stream ended inside an event: %r" % self.block
                return None
            if line:
                self.block.append(line)
                continue
            block, self.block = self.block, []
            if not block:
                continue
            if len(block) == 1 and block[0].startswith(": "):
                self.comments.append(block[0])
                continue
            if len(block) == 1 and block[0].startswith("retry: "):
                self.retry.append(int(block[0][7:]))
                continue
            assert len(block) == 3, "event is not id/event/data: %r" % block
            assert block[0].startswith("id: ") and block[1].startswith("event: ") and \
                block[2].startswith("data: "), "bad event %r" % block
            ev = (int(block[0][4:]), block[1][7:], json.loads(block[2][6:]))
            self.events.append(ev)
            return ev

    def read_until(self, pred, timeout=20):
        """Reads events until pred(event) or the end; returns the event."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self.read_event()
            if ev is None or pred(ev):
                return ev
        raise AssertionError("no such event within %ss" % timeout)

    def read_all(self):
        while self.read_event() is not None:
            pass
        assert self.r.isclosed() or self.eof
        self.close()
        return self.events

    def ids(self):
        return [e[0] for e in self.events]

    def close(self):
        self.c.close()


def final_status(ev):
    return ev[1] == "status" and ev[2].get("status") in FINAL


def assert_contiguous(ids, first, last, what):
    want = list(range(first, last + 1))
    if ids == want:
        return
    bad = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
    raise AssertionError("%s: want seqs %d..%d once each, got %d ids; first difference at #%d: %r"
                         % (what, first, last, len(ids), bad, ids[max(0, bad - 2):bad + 3]))


# ---- many watchers on raw sockets (also the bench's client) --------------------

class Watchers:
    """n concurrent streams of one run read by one thread (selectors;
    HTTP/1.0, so no chunking and the server closes at the end); srv may be
    a list of servers, taken in turn."""

    def __init__(self, srv, run, key, n, after=0):
        srvs = srv if isinstance(srv, list) else [srv]
        self.sel = selectors.DefaultSelector()
        self.state = []
        self.t0 = time.time()
        req = ("GET /v1/runs/%s/events?after=%d HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n"
               % (run, after, key)).encode()
        for i in range(n):
            sk = socket.create_connection((srvs[i % len(srvs)].host, srvs[i % len(srvs)].port))
            sk.sendall(req)
            sk.setblocking(False)
            st = {"sock": sk, "buf": b"", "head": None, "seqs": [], "final": [], "done": None}
            self.state.append(st)
            self.sel.register(sk, selectors.EVENT_READ, st)
        self.open_n = n

    def _pump(self, stop, timeout):
        deadline = time.time() + timeout
        while self.open_n and not stop() and time.time() < deadline:
            for k, _ in self.sel.select(timeout=0.2):
                self._read(k.data)
        return stop() or not self.open_n

    def _read(self, st):
        try:
            d = st["sock"].recv(1 << 16)
        except BlockingIOError:
            return
        if not d:
            st["done"] = time.time()
            self.sel.unregister(st["sock"])
            st["sock"].close()
            self.open_n -= 1
            return
        st["buf"] += d
        if st["head"] is None:
            if b"\r\n\r\n" not in st["buf"]:
                return
            st["head"], st["buf"] = st["buf"].split(b"\r\n\r\n", 1)
            assert b" 200 " in st["head"].split(b"\r\n")[0], st["head"][:80]
        *blocks, st["buf"] = st["buf"].split(b"\n\n")
        for b in blocks:
            if not b.startswith(b"id: "):
                continue
            lines = b.split(b"\n")
            st["seqs"].append(int(lines[0][4:]))
            if lines[1] == b"event: status":
                data = json.loads(lines[2][6:])
                if data.get("status") in FINAL:
                    st["final"].append(data)

    def wait_open(self, timeout=30):
        """Returns once every stream has its 200 and headers."""
        assert self._pump(lambda: all(st["head"] is not None for st in self.state), timeout), \
            "watchers did not all open within %ss" % timeout

    def finish(self, timeout=60):
        """Reads until every stream ends; returns [(seqs, final status data,
        end time)] per watcher; raises when one did not end in time."""
        self._pump(lambda: False, timeout)
        late = self.open_n
        for st in self.state:
            if st["done"] is None:
                st["sock"].close()
        self.sel.close()
        assert not late, "%d of %d watchers did not end within %ss" % (late, len(self.state), timeout)
        return [(st["seqs"], st["final"], st["done"]) for st in self.state]


# ---- the checks ---------------------------------------------------------------

def run_checks(args, pg, base, srv_a, srv_b, keys):
    admin, read = keys["admin"], keys["read"]
    w = Writer(pg)

    done_run = new_run(pg)
    for i in range(1, 5):
        w.add(done_run, *metric_event(i * 10))
    w.add(done_run, "checkpoint", {"stage": "rl", "step": 40, "path": "runs/x/rl/step-40"})
    w.add(done_run, "log", {"message": "line one\nline two"})
    w.add(done_run, "status", {"status": "succeeded", "message": "done"})
    w.sync()

    def auth_and_404():
        s = Stream(srv_a, done_run, None)
        eq(s.status, 401, "no key")
        eq(s.body_json()["error"]["code"], "missing_api_key", "code")
        s.close()
        s = Stream(srv_a, done_run, "aha-" + "0" * 48)
        eq(s.status, 401, "wrong key")
        s.close()
        s = Stream(srv_a, "run-nope", read)
        eq(s.status, 404, "unknown run")
        e = s.body_json()["error"]
        eq((e["code"], e["type"]), ("run_not_found", "invalid_request_error"), "error")
        s.close()
        s = Stream(srv_a, done_run, read, after="-1")
        eq(s.status, 400, "negative after")
        eq(s.body_json()["error"]["param"], "after", "param")
        s.close()
        s = Stream(srv_a, done_run, read, last_event_id="x")
        eq(s.status, 400, "bad Last-Event-ID")
        s.close()
        s = Stream(srv_a, done_run, read)
        eq(s.status, 200, "read scope is enough")
        s.read_all()
    check("events: no key 401, unknown run 404, bad ids 400, read scope enough", auth_and_404)

    def replay_finished():
        s = Stream(srv_a, done_run, read)
        eq(s.status, 200, "status")
        assert s.headers["content-type"].startswith("text/event-stream"), s.headers
        eq(s.headers.get("cache-control"), "no-cache", "cache-control")
        t = time.time()
        evs = s.read_all()
        assert time.time() - t < 5, "a finished run's stream must end at once"
        assert_contiguous([e[0] for e in evs], 1, 7, "replay")
        eq([e[1] for e in evs], ["metric"] * 4 + ["checkpoint", "log", "status"], "types")
        eq(evs[0][2], metric_event(10)[1], "data")
        eq(evs[5][2]["message"], "line one\nline two", "a newline inside data stays in one data line")
        eq(evs[6][2]["status"], "succeeded", "final")
        assert s.retry and s.retry[0] > 0, "no retry: hint"
    check("replay from 0 of a finished run, then the stream ends", replay_finished)

    def resume_finished():
        s = Stream(srv_b, done_run, read, last_event_id=4)
        assert_contiguous([e[0] for e in s.read_all()], 5, 7, "Last-Event-ID 4")
        s = Stream(srv_b, done_run, read, after=2)
        assert_contiguous([e[0] for e in s.read_all()], 3, 7, "?after=2")
        s = Stream(srv_b, "name-" + done_run[4:], read, after=5)
        assert_contiguous([e[0] for e in s.read_all()], 6, 7, "by the run's name")
        s = Stream(srv_b, done_run, read, last_event_id=6, after=1)
        assert_contiguous([e[0] for e in s.read_all()], 7, 7, "the header wins over ?after")
        for lid in (7, 100):
            s = Stream(srv_b, done_run, read, last_event_id=lid)
            eq(s.status, 204, "a client that has the final event: 204 stops EventSource reconnecting")
            eq(s.read_all(), [], "nothing after the final event")
    check("Last-Event-ID and ?after resume a finished run (header wins; by name too)", resume_finished)

    def live_ends_on_final():
        run = new_run(pg)
        w.add(run, "stage", {"stage": "rl", "state": "started"})
        w.sync()
        s = Stream(srv_a, run, read)
        eq(s.read_event()[0], 1, "replayed first event")
        w.add(run, *metric_event(1))
        ev = s.read_event()
        eq((ev[0], ev[1]), (2, "metric"), "live event")
        w.add(run, "status", {"status": "running"})  # not final
        eq(s.read_event()[2], {"status": "running"}, "a non-final status")
        t = time.time()
        w.add(run, "status", {"status": "failed", "message": "boom"})
        eq(s.read_event()[2]["status"], "failed", "final status")
        eq(s.read_event(), None, "the stream ends after the final status")
        assert time.time() - t < 3, "slow end"
        s.close()
    check("live events; the stream ends after the final status event", live_ends_on_final)

    def resumed_run():
        run = new_run(pg)
        w.add(run, *metric_event(1))
        w.add(run, "status", {"status": "failed", "message": "engine exited"})
        w.sync()
        eq([e[0] for e in Stream(srv_a, run, read).read_all()], [1, 2], "ends on the final status")
        s = Stream(srv_a, run, read, last_event_id=2)
        eq(s.status, 204, "the client has everything")
        s.close()
        live = Stream(srv_b, run, read, last_event_id=1)
        eq(live.read_event()[2]["status"], "failed", "the failed status")
        eq(live.read_event(), None, "the stream ends there")
        live.close()
        for st in ("queued", "running"):  # POST /v1/runs/{id}/resume
            w.add(run, "status", {"status": st})
        w.add(run, *metric_event(2))
        w.sync()
        s = Stream(srv_a, run, read, last_event_id=2)
        eq(s.status, 200, "after a resume there is more")
        eq(s.read_event()[0], 3, "the resume's first event")
        s2 = Stream(srv_b, run, read)
        eq(s2.read_event()[0], 1, "a replay from the start")
        w.add(run, "status", {"status": "succeeded"})
        assert_contiguous([e[0] for e in s.read_all()], 3, 6, "resumed with Last-Event-ID")
        assert_contiguous([e[0] for e in s2.read_all()], 1, 6, "a replay goes past the earlier failed status")
    check("a resumed run: streams end only on a final status that is the last event", resumed_run)

    def scheduler_events():
        # a queued run as POST /v1/runs leaves it; a scheduler claims it and the
        # fake engine cannot train, so runs.c itself writes running, then failed
        rid = "run-%024x" % random.getrandbits(96)
        pg.psql("BEGIN; INSERT INTO runs (id, name, pipeline_id, spec, last_seq) VALUES "
                "('%s', 'sched-%s', 'inline', '{\"name\": \"x\", \"stages\": []}', 1); "
                "INSERT INTO run_events (run_id, seq, type, data) VALUES ('%s', 1, 'status', "
                "'{\"status\": \"queued\"}'); NOTIFY aha_run_events, '%s:1'; COMMIT" % (rid, rid[4:], rid, rid))
        streams = [Stream(srv, rid, read, timeout=60) for srv in (srv_a, srv_b)]
        for s in streams:
            evs = s.read_all()
            eq([e[2]["status"] for e in evs], ["queued", "running", "failed"], "status events")
            assert_contiguous([e[0] for e in evs], 1, 3, "the scheduler's events")
    check("the scheduler's own status events reach streams on both servers", scheduler_events)

    def second_instance_live():
        run = new_run(pg)
        w.sync()
        s_b = Stream(srv_b, run, read)
        s_a = Stream(srv_a, run, read)
        for i in range(1, 21):
            w.add(run, *metric_event(i))
        w.add(run, "status", {"status": "cancelled"})
        assert_contiguous([e[0] for e in s_b.read_all()], 1, 21, "server B")
        assert_contiguous([e[0] for e in s_a.read_all()], 1, 21, "server A")
    check("live delivery through a second server instance (LISTEN fan-out)", second_instance_live)

    def resume_under_concurrent_writes():
        run = new_run(pg)
        total = 400
        w.sync()
        stop = threading.Event()

        def writer():
            for i in range(1, total):
                if stop.is_set():
                    return
                if i % 7 == 0:
                    w.add_many(run, [metric_event(i), ("sample", {"step": i, "completion": "x" * 50})])
                else:
                    w.add(run, *metric_event(i))
                time.sleep(0.002)
            w.add(run, "status", {"status": "succeeded"})
        wt = threading.Thread(target=writer)
        wt.start()
        got = []
        hops = 0
        servers = [srv_a, srv_b]
        try:
            last = 0
            while True:  # reconnect every few events, alternating servers and ways to resume
                srv = servers[hops % 2]
                s = Stream(srv, run, read, **({"last_event_id": last} if hops % 3 else {"after": last}))
                if s.status == 204:  # the last hop read the final event
                    s.close()
                    break
                eq(s.status, 200, "status")
                n = random.randint(1, 40)
                ended = False
                for _ in range(n):
                    ev = s.read_event()
                    if ev is None:
                        ended = True
                        break
                    got.append(ev[0])
                    last = ev[0]
                s.close()
                hops += 1
                if ended:
                    break
        finally:
            stop.set()
            wt.join()
        final = w.seq[run]
        assert_contiguous(got, 1, final, "resumed %d times across two servers" % hops)
        assert hops > 5, hops
    check("Last-Event-ID / ?after resume while events are written: no gap, no dup",
          resume_under_concurrent_writes)

    def out_of_order_commits():
        run = new_run(pg)
        w.add(run, *metric_event(1))
        w.sync()

        def put(seq, typ="metric", data=None):
            pg.psql("INSERT INTO run_events (run_id, seq, type, data) VALUES ('%s', %d, '%s', '%s'); "
                    "NOTIFY aha_run_events, '%s:%d'" % (run, seq, typ, json.dumps(data or {"step": seq}),
                                                       run, seq))
        s = Stream(srv_a, run, read)
        eq(s.read_event()[0], 1, "first")
        put(3)  # a writer's transaction for seq 2 commits after the one for 3
        time.sleep(0.5)
        put(2)
        eq([s.read_event()[0], s.read_event()[0]], [2, 3], "2 awaited, then 3, in order")
        t = time.time()
        put(5, "status", {"status": "succeeded"})  # 4 never comes
        eq(s.read_event()[0], 5, "a seq missing for long is skipped")
        assert time.time() - t >= 4, "skipped too soon: %.1fs" % (time.time() - t)
        eq(s.read_event(), None, "end")
        s.close()
        assert "seq 4 to 4 missing" in srv_a.log_text(), "the skip is logged"
    check("a seq committed out of order is awaited; one never committed is skipped after 5 s",
          out_of_order_commits)

    def heartbeats():
        run = new_run(pg)
        w.sync()
        s = Stream(srv_a, run, read)
        time.sleep(2.6)
        w.add(run, "status", {"status": "succeeded"})
        s.read_all()
        eq(s.ids(), [1], "the event after the heartbeats")
        assert len(s.comments) >= 2, "heartbeats with --heartbeat 1: %r" % s.comments
        assert all(c == ": keep-alive" for c in s.comments), s.comments
    check("heartbeat comments on a quiet stream (--heartbeat 1)", heartbeats)

    def slow_reader():
        run = new_run(pg)
        w.sync()
        slow = socket.create_connection((srv_a.host, srv_a.port))
        slow.sendall(("GET /v1/runs/%s/events HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n"
                      % (run, read)).encode())
        fast = Stream(srv_a, run, read)
        big = "y" * 2000
        n = 3000
        for i in range(1, n, 50):  # ~6 MB that the slow client does not read yet
            w.add_many(run, [("sample", {"step": j, "completion": big}) for j in range(i, i + 50)])
        w.add(run, "status", {"status": "succeeded"})
        t = time.time()
        fast.read_all()
        assert_contiguous(fast.ids(), 1, n + 1, "fast reader next to a stalled one")
        fast_s = time.time() - t
        buf = b""
        t = time.time()
        slow.settimeout(30)
        while True:
            d = slow.recv(1 << 16)
            if not d:
                break
            buf += d
        slow.close()
        ids = [int(b.split(b"\n")[0][4:]) for b in buf.split(b"\r\n\r\n", 1)[1].split(b"\n\n")
               if b.startswith(b"id: ")]
        assert_contiguous(ids, 1, n + 1, "the stalled reader, once it reads")
        assert fast_s < 20, fast_s
        print("     fast reader %.2fs, the stalled one drained in %.2fs" % (fast_s, time.time() - t))
    check("a stalled client blocks no one and still gets every event", slow_reader)

    def hundred_watchers():
        run = new_run(pg)
        w.sync()
        ws = Watchers(srv_b, run, read, 100)
        ws.wait_open()
        for i in range(1, 200):
            w.add(run, *metric_event(i))
        w.add(run, "status", {"status": "succeeded"})
        for seqs, final, _ in ws.finish():
            assert_contiguous(seqs, 1, 200, "a watcher of 100")
            eq(len(final), 1, "one final status")
    check("100 watchers on one run each get every event once", hundred_watchers)

    def disconnects():
        run = new_run(pg)
        for i in range(1, 30):
            w.add(run, *metric_event(i))
        w.sync()
        socks = []
        for i in range(20):
            s = socket.create_connection((srv_a.host, srv_a.port))
            s.sendall(("GET /v1/runs/%s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                       % (run, read)).encode())
            s.recv(100)
            socks.append(s)
        for i, s in enumerate(socks):  # half reset, half closed politely
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        for i in range(30, 60):  # wakes the streams whose clients are gone
            w.add(run, *metric_event(i))
        w.sync()
        time.sleep(1.5)  # a heartbeat reaches the idle ones
        st, body, _ = request(srv_a, "GET", "/healthz")
        eq(st, 200, "healthy after disconnects")
        w.add(run, "status", {"status": "succeeded"})
        s = Stream(srv_a, run, read)
        assert_contiguous([e[0] for e in s.read_all()], 1, 60, "a stream after the disconnects")
    check("clients that disconnect mid-stream leave the server healthy", disconnects)

    def postgres_restart():
        run = new_run(pg)
        w.add(run, *metric_event(1))
        w.close()
        s = Stream(srv_b, run, read)
        eq(s.read_event()[0], 1, "before the restart")
        pg.stop()
        time.sleep(0.5)
        pg.start()
        w2 = Writer(pg, w.seq)
        for i in range(2, 6):
            w2.add(run, *metric_event(i))
        w2.add(run, "status", {"status": "succeeded"})
        w2.close()
        s.c.sock.settimeout(20)
        assert_contiguous([e[0] for e in s.read_all()], 1, 6, "across a PostgreSQL restart")
        assert "LISTEN connection lost" in srv_b.log_text(), "the listener noticed nothing"
        for srv in (srv_a, srv_b):  # the pools drop their dead connections as they meet them
            ok = 0
            for _ in range(40):
                ok = ok + 1 if request(srv, "GET", "/readyz")[0] == 200 else 0
                if ok == 10:
                    break
    check("a PostgreSQL restart: LISTEN reconnects, streams catch up", postgres_restart)

    def shutdown_ends_streams():
        run = new_run(pg)
        w3 = Writer(pg)
        w3.add(run, *metric_event(1))
        w3.close()
        s = Stream(srv_a, run, read)
        eq(s.read_event()[0], 1, "first event")
        t = time.time()
        code = srv_a.stop()
        eq(code, 0, "exit code with a stream open")
        eq(s.read_event(), None, "the stream ends cleanly (last chunk sent)")
        assert time.time() - t < 10
        s.close()
    check("SIGTERM ends open streams cleanly", shutdown_ends_streams)


def run_real_engine_check(args, pg, base, keys):
    """Two servers with the real engine; a run posted to the first; its
    events watched on both: one of them did not run the engine."""
    data = os.path.join(base, "data-real")
    os.makedirs(os.path.join(data, "models"))
    os.makedirs(os.path.join(data, "data"))
    corpus = os.path.join(base, "text.jsonl")
    subprocess.run([args.engine, "datagen", "arithmetic", "--n", "200", "--seed", "1", "--format", "text",
                    "--out", corpus], check=True, capture_output=True)
    subprocess.run([args.engine, "datagen", "arithmetic", "--n", "200", "--seed", "2", "--format", "rl",
                    "--out", os.path.join(data, "data", "rl.jsonl")], check=True, capture_output=True)
    subprocess.run([args.engine, "pretrain", "--config", "tiny", "--data", corpus, "--steps", "2",
                    "--out", os.path.join(data, "models", "tiny")], check=True, capture_output=True)
    servers = [Server(args.server, pg.url, data, args.engine, extra=["--heartbeat", "1"]) for _ in range(2)]
    try:
        def real_run():
            body = {"name": "sse-real", "base_model": "tiny", "pipeline": {"name": "sse-real", "stages": [
                {"name": "rl", "kind": "grpo", "model": "$base", "dataset": "data/rl.jsonl",
                 "reward": {"components": [{"type": "accuracy", "weight": 1.0}]},
                 "params": {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8,
                            "checkpoint_every": 2, "log_completions": 1, "seed": 1}}]}}
            st, run, _ = request(servers[0], "POST", "/v1/runs", body, key=keys["admin"], timeout=60)
            eq(st, 201, "POST /v1/runs: %r" % (run,))
            streams = [Stream(srv, run["id"], keys["read"], timeout=120) for srv in servers]
            got = [s.read_all() for s in streams]
            rows = pg.psql("SELECT seq || ' ' || type || ' ' || data::text FROM run_events WHERE run_id = '%s' "
                           "ORDER BY seq" % run["id"])
            want = [(int(q), t, json.loads(d)) for q, t, d in (l.split(" ", 2) for l in rows.splitlines())]
            for evs in got:
                eq(evs, want, "the stream is the run's event log")
            statuses = [d["status"] for _, t, d in want if t == "status"]
            eq((statuses[0], statuses[-1]), ("queued", "succeeded"), "statuses")
            types = set(t for _, t, _ in want)
            assert {"metric", "checkpoint", "status"} <= types, types
        check("a real training run's events, watched from two servers", real_run)
    finally:
        logs = [(srv, srv.stop(), srv.log_text()) for srv in servers]
    return logs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.join(ROOT, "build", "aha-server-san"))
    ap.add_argument("--engine", help="an aha-engine with `train`: also watch a real run")
    args = ap.parse_args()
    args.server = os.path.abspath(args.server)
    base = make_tempdir()
    pg = None
    servers = []
    logs = []
    try:
        pg = Postgres(base)
        data = os.path.join(base, "data")
        os.makedirs(data)
        keys = {s: create_key(args.server, pg.url, s + "-key", s) for s in ("admin", "read")}
        try:
            for _ in range(2):
                servers.append(Server(args.server, pg.url, data, FAKE, extra=["--heartbeat", "1"]))
            run_checks(args, pg, base, servers[0], servers[1], keys)
        finally:
            for srv in servers:
                code = srv.stop()
                logs.append((srv, code, srv.log_text()))
        if args.engine:
            logs += run_real_engine_check(args, pg, base, keys)
    except Exception as e:  # the harness itself failed: report, clean up, go on to the summary
        results["failed"] += 1
        print("FAIL harness: %s" % e, flush=True)
        traceback.print_exc()
    finally:
        if pg:
            pg.stop()
    for srv, code, log in logs:
        check("server :%d exits cleanly" % srv.port, lambda: eq(code, 0, "exit code"))
        check("server :%d: no sanitizer reports" % srv.port,
              lambda: eq([l for l in log.splitlines() if "Sanitizer" in l or "runtime error" in l], [],
                         "sanitizer lines"))
    if results["failed"] == 0:
        remove_tempdir(base)
    else:
        print("logs kept in " + base)
    print("sse: %d passed, %d failed" % (results["passed"], results["failed"]))
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
