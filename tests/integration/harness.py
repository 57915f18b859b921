"""tests/integration/harness.py — starts the pieces the integration tests
need: a throwaway PostgreSQL cluster on a free port (Unix socket in a temp
dir), aha-server on a free port, and API keys; plus small HTTP and SSE
helpers on the standard library only. Not a test by itself."""
import argparse
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import traceback

PG_BIN = "/usr/lib/postgresql/15/bin"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# Every test script counts its checks here and prints them last.
results = {"passed": 0, "failed": 0}


def check(name, fn):
    """Runs one named check; a failure is reported and the run goes on."""
    t = time.time()
    try:
        fn()
        results["passed"] += 1
        print("ok   %-58s %.2fs" % (name, time.time() - t), flush=True)
    except Exception as e:
        results["failed"] += 1
        print("FAIL %s: %s" % (name, e), flush=True)
        traceback.print_exc(limit=3)


def eq(a, b, what=""):
    assert a == b, "%s: expected %r, got %r" % (what, b, a)


def wait_for(pred, timeout=30, step=0.1):
    """pred()'s first true value within timeout seconds, else None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _as_pg_user():
    """PostgreSQL refuses to run as root: run its tools as `postgres` then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class Postgres:
    def __init__(self, base):
        self.dir = os.path.join(base, "pg")
        self.sock = base
        self.port = free_port()
        self.log = os.path.join(base, "pg.log")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(base, 0o755)
        subprocess.run(_as_pg_user() + [PG_BIN + "/initdb", "-D", self.dir, "-A", "trust", "-U", "aha",
                        "--no-sync", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        self.url = "postgresql://aha@/postgres?host=%s&port=%d" % (self.sock, self.port)
        self.start()

    def start(self):
        subprocess.run(_as_pg_user() + [PG_BIN + "/pg_ctl", "-D", self.dir, "-l", self.log, "-w", "-o",
                        "-p %d -k %s -c listen_addresses='' -c fsync=off" % (self.port, self.sock),
                        "start"], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(_as_pg_user() + [PG_BIN + "/pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop"],
                       check=False, stdout=subprocess.DEVNULL)

    def psql(self, sql):
        r = subprocess.run(["psql", self.url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout.strip()


class Server:
    def __init__(self, binary, db_url, data_dir, engine, extra=(), env=None):
        self.binary = binary
        self.db_url = db_url
        self.port = free_port()
        self.errlog = open(os.path.join(data_dir, "server-%d.log" % self.port), "w+")
        e = dict(os.environ)
        e.update(env or {})
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--data-dir", data_dir, "--database-url", db_url,
             "--engine", engine, "--migrations-dir", os.path.join(ROOT, "migrations")] + list(extra),
            stdout=subprocess.PIPE, stderr=self.errlog, env=e, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.wait(timeout=10)
            raise RuntimeError("server did not start: " + self.log_text())
        self.host = "127.0.0.1"

    def log_text(self):
        self.errlog.flush()
        self.errlog.seek(0)
        return self.errlog.read()

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                st, _, _ = request(self, "GET", "/readyz")
                if st == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def engine_pids(self):
        pids = []
        for tid in os.listdir("/proc/%d/task" % self.proc.pid):
            try:
                with open("/proc/%d/task/%s/children" % (self.proc.pid, tid)) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        return pids

    def stop(self, sig=15, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def request(srv, method, path, body=None, key=None, headers=None, raw=None, timeout=30):
    """Returns (status, parsed JSON or text, headers dict)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    h = dict(headers or {})
    if key:
        h["Authorization"] = "Bearer " + key
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    text = payload.decode("utf-8", "replace")
    if hdrs.get("content-type", "").startswith("application/json"):
        return r.status, json.loads(text), hdrs
    return r.status, text, hdrs


def stream(srv, path, body, key, timeout=60):
    """POSTs a streaming request; returns (status, raw body bytes, headers)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body).encode(),
              headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse()
    payload = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, payload, hdrs


def stream_open(srv, path, body, key, timeout=60):
    """POSTs a streaming request and returns once its status and headers
    are in (for a 200 the server has committed to SSE: the engine's first
    event came, or a heartbeat interval passed): an open response for
    stream_finish. Tests that break the engine "mid-stream" start here, not
    after a sleep: a generation that fails before the stream opens gets a
    plain error response by design."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body).encode(),
              headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse()
    r.conn = c
    return r


def stream_finish(r):
    """Reads the rest of a stream_open response; returns (status, raw body
    bytes, headers) as stream does."""
    payload = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    r.conn.close()
    return r.status, payload, hdrs


def parse_sse(raw):
    """Splits an SSE body into events, checking the framing byte for byte:
    every event is `data: <json or [DONE]>\\n\\n` or a `: comment\\n\\n`, the
    last one is [DONE]. Returns (events as parsed JSON, comments)."""
    text = raw.decode("utf-8")
    assert text.endswith("data: [DONE]\n\n"), "stream does not end with [DONE]: %r" % text[-80:]
    parts = text.split("\n\n")
    assert parts[-1] == "", "trailing bytes after the last event"
    events, comments = [], []
    for p in parts[:-1]:
        assert "\n" not in p, "multi-line event %r" % p
        if p.startswith(": "):
            comments.append(p)
            continue
        assert p.startswith("data: "), "bad event %r" % p
        data = p[6:]
        if data == "[DONE]":
            events.append("[DONE]")
        else:
            events.append(json.loads(data))
    assert events.count("[DONE]") == 1
    return events, comments


def create_key(binary, db_url, name, scope):
    r = subprocess.run([binary, "keys", "create", "--name", name, "--scope", scope,
                        "--database-url", db_url, "--migrations-dir", os.path.join(ROOT, "migrations")],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip().splitlines()[-1]


# Awkward JSON values for mutated requests: bounds of the integer types,
# huge and tiny numbers, empty and long strings, the wrong types.
AWKWARD = [-1, 0, 1, 2**31 - 1, 2**31, 2**63 - 1, -2**63, 1e308, -0.5, 0.5, "", "a" * 300, None, True,
           False, [], {}, [1, 2], {"a": 1}, 100, 257, "17", [{"role": "user"}]]


def mutate_json(rnd, j, depth=0):
    """j with one random edit (in place where it can): a member deleted or
    set to an AWKWARD value, or an edit inside one."""
    if isinstance(j, dict) and j:
        k = rnd.choice(list(j))
        r = rnd.random()
        if r < 0.2:
            del j[k]
        elif r < 0.5 or depth > 3:
            j[k] = rnd.choice(AWKWARD)
        else:
            j[k] = mutate_json(rnd, j[k], depth + 1)
        return j
    if isinstance(j, list) and j:
        i = rnd.randrange(len(j))
        j[i] = rnd.choice(AWKWARD) if rnd.random() < 0.5 else mutate_json(rnd, j[i], depth + 1)
        return j
    return rnd.choice(AWKWARD)


def damage_bytes(rnd, raw):
    """raw (bytes) with 1-3 bytes replaced by JSON syntax or invalid UTF-8."""
    b = bytearray(raw)
    for _ in range(rnd.randint(1, 3)):
        b[rnd.randrange(len(b))] = rnd.choice(b'{}[]",:0123456789-e\\ \xff')
    return bytes(b)


def make_tempdir():
    return tempfile.mkdtemp(prefix="aha-it-")


def remove_tempdir(d):
    shutil.rmtree(d, ignore_errors=True)


def tiny_training_data(engine, base):
    """A data directory under base for training runs: data/rl.jsonl (200
    arithmetic prompts) and models/tiny (pretrained two steps). Returns it."""
    data = os.path.join(base, "data")
    os.makedirs(os.path.join(data, "models"))
    os.makedirs(os.path.join(data, "data"))
    corpus = os.path.join(base, "text.jsonl")
    for cmd in (["datagen", "arithmetic", "--n", "200", "--seed", "1", "--format", "text", "--out", corpus],
                ["datagen", "arithmetic", "--n", "200", "--seed", "2", "--format", "rl",
                 "--out", os.path.join(data, "data", "rl.jsonl")],
                ["pretrain", "--config", "tiny", "--data", corpus, "--steps", "2",
                 "--out", os.path.join(data, "models", "tiny")]):
        subprocess.run([engine] + cmd, check=True, capture_output=True)
    return data


def finish(suite, base, pg, servers, ok=(0,)):
    """The end of a test script: stops the servers still running (an exit
    status outside ok is a failure, as is a sanitizer report in a server's
    log) and PostgreSQL, keeps base for inspection when a check failed
    (else removes it), prints `suite: N passed, M failed`; returns the
    script's exit status."""
    for s in servers:
        if not s:
            continue
        rc = s.stop() if s.proc.poll() is None else None
        if rc is not None and rc not in ok:
            results["failed"] += 1
            print("FAIL server exit status %s:\n%s" % (rc, s.log_text()[-3000:]))
        reports = [ln for ln in s.log_text().splitlines() if "Sanitizer" in ln or "runtime error" in ln]
        if reports:
            results["failed"] += 1
            print("FAIL sanitizer reports in the server log:\n" + "\n".join(reports[:20]))
    if pg:
        pg.stop()
    if results["failed"]:
        print("(kept %s for inspection)" % base)
    else:
        remove_tempdir(base)
    print("%s: %d passed, %d failed" % (suite, results["passed"], results["failed"]))
    return 1 if results["failed"] else 0


def script_args(configure=None):
    """A test script's command line: --server (default the sanitized server)
    and --engine, made absolute; configure(parser) adds the script's own."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.join(ROOT, "build", "aha-server-san"))
    ap.add_argument("--engine", default=os.path.join(ROOT, "build", "aha-engine"))
    if configure:
        configure(ap)
    args = ap.parse_args()
    args.server = os.path.abspath(args.server)
    args.engine = os.path.abspath(args.engine)
    return args
