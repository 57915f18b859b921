"""tests/integration/test_integrations.py — server/integrations.c against
real local HTTP servers: a fake MLflow tracking server (the REST API 2.0
subset aha uses, validating payloads as MLflow does and answering with its
error JSON) and a webhook receiver that checks HMAC signatures. Both can
fail on purpose (5xx then success, 429, slow replies, malformed replies,
4xx). integrations.c runs inside build/integrations-driver (sanitizers),
scripted over stdin.

    python3 tests/integration/test_integrations.py --driver build/integrations-driver
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import posixpath
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# MLflow's own rules (mlflow/utils/validation.py).
NAME_RE = re.compile(r"^[/\w.\- ]*$", re.ASCII)
MAX_METRICS, MAX_PARAMS_TAGS, MAX_ENTITIES = 1000, 100, 1000
MAX_KEY, MAX_PARAM_VAL, MAX_TAG_VAL = 250, 6000, 5000
STATUSES = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}


class MlflowError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad(msg):
    raise MlflowError(400, "INVALID_PARAMETER_VALUE", msg)


def check_name(kind, name):
    if not isinstance(name, str) or not name:
        bad("Missing value for required parameter '%s key'" % kind)
    norm = posixpath.normpath(name)
    if not NAME_RE.match(name) or len(name) > MAX_KEY or norm != name or norm == "." \
            or norm.startswith("..") or norm.startswith("/"):
        bad("Invalid %s name: '%s'" % (kind, name))


def check_int(field, v, required=True):
    if v is None:
        if required:
            bad("Missing value for required parameter '%s'" % field)
        return
    if isinstance(v, bool) or not isinstance(v, int):
        bad("Invalid value %r for parameter '%s': expected int64" % (v, field))


def check_kv_list(kind, items, max_val):
    if not isinstance(items, list):
        bad("Invalid value for parameter '%ss': expected a list" % kind)
    for it in items:
        if not isinstance(it, dict) or set(it) - {"key", "value"}:
            bad("Invalid %s entry %r" % (kind, it))
        check_name(kind, it.get("key"))
        v = it.get("value")
        if not isinstance(v, str):
            bad("Invalid value for %s '%s': expected a string" % (kind, it.get("key")))
        if len(v) > max_val:
            bad("%s '%s' had length %d, which exceeded length limit of %d"
                % (kind, it["key"], len(v), max_val))


class FakeMlflow:
    """The tracking server's state, its request log and its scripted faults."""

    def __init__(self, token=None, basic=None):
        self.lock = threading.Lock()
        self.experiments = {"Default": "0"}
        self.runs = {}
        self.requests = []     # (endpoint, body or query)
        self.rejected = []     # payloads MLflow would refuse (should stay empty)
        # endpoint -> list of ("status", code) | ("slow", s) | ("malformed",) | ("race",)
        # | ("lost",) (handled, then answered 502)
        self.faults = {}
        self.token, self.basic = token, basic

    def fault(self, endpoint, *actions):
        with self.lock:
            self.faults.setdefault(endpoint, []).extend(actions)

    def count(self, endpoint):
        with self.lock:
            return sum(1 for e, _ in self.requests if e == endpoint)

    def handle(self, endpoint, method, body, query, headers):
        """Returns (status, reply object or raw bytes, extra headers)."""
        with self.lock:
            self.requests.append((endpoint, body if method == "POST" else query))
            actions = self.faults.get(endpoint)
            action = actions.pop(0) if actions else None
        if action and action[0] == "slow":
            time.sleep(action[1])
        elif action and action[0] == "status":
            extra = {"Retry-After": "1"} if action[1] == 429 else {}
            return action[1], {"error_code": "INTERNAL_ERROR", "message": "injected"}, extra
        elif action and action[0] == "malformed":
            return 200, b"<html>proxy error</html>", {}
        if self.token and headers.get("Authorization") != "Bearer " + self.token:
            return 401, {"error_code": "UNAUTHENTICATED", "message": "bad token"}, {}
        if self.basic:
            want = "Basic " + base64.b64encode(self.basic.encode()).decode()
            if headers.get("Authorization") != want:
                return 401, {"error_code": "UNAUTHENTICATED", "message": "bad credentials"}, {}
        try:
            with self.lock:
                if action and action[0] == "race" and endpoint == "experiments/create":
                    # another client created it between our get-by-name and create
                    self.experiments[body["name"]] = str(len(self.experiments))
                rep = self.api(endpoint, method, body, query)
            if action and action[0] == "lost":
                return 502, b"bad gateway", {}   # done, but the reply never arrives
            return 200, rep, {}
        except MlflowError as e:
            with self.lock:
                if e.code == "INVALID_PARAMETER_VALUE":
                    self.rejected.append((endpoint, e.message))
            return e.status, {"error_code": e.code, "message": e.message}, {}

    def run(self, body):
        rid = body.get("run_id")
        if not isinstance(rid, str) or not rid:
            bad("Missing value for required parameter 'run_id'")
        if rid not in self.runs:
            raise MlflowError(404, "RESOURCE_DOES_NOT_EXIST", "Run '%s' not found" % rid)
        return self.runs[rid]

    def api(self, endpoint, method, body, query):
        if endpoint == "experiments/get-by-name":
            if method != "GET":
                raise MlflowError(405, "BAD_REQUEST", "GET only")
            name = query.get("experiment_name", [None])[0]
            if not name:
                bad("Missing value for required parameter 'experiment_name'")
            if name not in self.experiments:
                raise MlflowError(404, "RESOURCE_DOES_NOT_EXIST",
                                  "Could not find experiment with name '%s'" % name)
            return {"experiment": {"experiment_id": self.experiments[name], "name": name,
                                   "lifecycle_stage": "active"}}
        if method != "POST" or not isinstance(body, dict):
            bad("expected a JSON object body")
        if endpoint == "experiments/create":
            name = body.get("name")
            if not isinstance(name, str) or not name:
                bad("Missing value for required parameter 'name'")
            if name in self.experiments:
                raise MlflowError(400, "RESOURCE_ALREADY_EXISTS",
                                  "Experiment '%s' already exists." % name)
            self.experiments[name] = str(len(self.experiments))
            return {"experiment_id": self.experiments[name]}
        if endpoint == "runs/create":
            exp = body.get("experiment_id")
            if not isinstance(exp, str) or exp not in self.experiments.values():
                raise MlflowError(404, "RESOURCE_DOES_NOT_EXIST", "No experiment %r" % exp)
            check_int("start_time", body.get("start_time"))
            check_kv_list("tag", body.get("tags", []), MAX_TAG_VAL)
            rn = body.get("run_name")
            if rn is not None and not isinstance(rn, str):
                bad("run_name: expected a string")
            rid = uuid.uuid4().hex
            self.runs[rid] = {"experiment_id": exp, "run_name": rn, "start_time": body["start_time"],
                              "tags": {t["key"]: t["value"] for t in body.get("tags", [])},
                              "status": "RUNNING", "end_time": None, "metrics": [], "params": {},
                              "status_log": []}
            return {"run": {"info": {"run_id": rid, "run_uuid": rid, "experiment_id": exp,
                                     "run_name": rn, "status": "RUNNING",
                                     "start_time": body["start_time"],
                                     "lifecycle_stage": "active"}, "data": {}}}
        if endpoint == "runs/log-batch":
            run = self.run(body)
            if set(body) - {"run_id", "metrics", "params", "tags"}:
                bad("unknown fields %r" % sorted(set(body) - {"run_id", "metrics", "params", "tags"}))
            metrics, params, tags = body.get("metrics", []), body.get("params", []), body.get("tags", [])
            if len(metrics) > MAX_METRICS:
                bad("A batch logging request can contain at most %d metrics. Got %d metrics."
                    % (MAX_METRICS, len(metrics)))
            if len(params) > MAX_PARAMS_TAGS or len(tags) > MAX_PARAMS_TAGS:
                bad("A batch logging request can contain at most 100 params and 100 tags")
            if len(metrics) + len(params) + len(tags) > MAX_ENTITIES:
                bad("A batch logging request can contain at most 1000 entities")
            for m in metrics:
                if not isinstance(m, dict) or set(m) - {"key", "value", "timestamp", "step"}:
                    bad("Invalid metric %r" % m)
                check_name("metric", m.get("key"))
                if isinstance(m.get("value"), bool) or not isinstance(m.get("value"), (int, float)):
                    bad("Got invalid value %r for metric '%s'" % (m.get("value"), m["key"]))
                check_int("timestamp", m.get("timestamp"))
                check_int("step", m.get("step"), required=False)
            check_kv_list("param", params, MAX_PARAM_VAL)
            check_kv_list("tag", tags, MAX_TAG_VAL)
            keys = [p["key"] for p in params]
            if len(keys) != len(set(keys)):
                bad("Duplicate parameter keys have been submitted")
            for p in params:
                old = run["params"].get(p["key"])
                if old is not None and old != p["value"]:
                    bad("Changing param values is not allowed. Param with key='%s'" % p["key"])
            run["metrics"] += metrics
            run["params"].update({p["key"]: p["value"] for p in params})
            run["tags"].update({t["key"]: t["value"] for t in tags})
            return {}
        if endpoint == "runs/update":
            run = self.run(body)
            st = body.get("status")
            if st is not None and st not in STATUSES:
                bad("Invalid value %r for parameter 'status'" % st)
            check_int("end_time", body.get("end_time"), required=False)
            if st:
                run["status"] = st
                run["status_log"].append(st)
            if body.get("end_time") is not None:
                run["end_time"] = body["end_time"]
            return {"run_info": {"run_id": body["run_id"], "status": run["status"]}}
        if endpoint == "runs/search":
            exps = body.get("experiment_ids")
            if not isinstance(exps, list) or not all(isinstance(e, str) for e in exps):
                bad("experiment_ids: expected a list of strings")
            check_int("max_results", body.get("max_results"), required=False)
            if body.get("run_view_type", "ACTIVE_ONLY") not in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL"):
                bad("run_view_type")
            m = re.match(r"^tags\.`([^`]+)` = '([^']*)'$", body.get("filter", ""))
            if not m:
                bad("Invalid filter %r (this fake knows tags.`k` = 'v' only)" % body.get("filter"))
            found = [{"info": {"run_id": rid, "run_uuid": rid, "experiment_id": r["experiment_id"],
                               "status": r["status"]}, "data": {}}
                     for rid, r in self.runs.items()
                     if r["experiment_id"] in exps and r["tags"].get(m.group(1)) == m.group(2)]
            return {"runs": found[:body.get("max_results", 1000)]} if found else {}
        raise MlflowError(404, "ENDPOINT_NOT_FOUND", "No endpoint " + endpoint)


class Hooks:
    """The webhook receiver's log and scripted faults."""

    def __init__(self, secret):
        self.secret = secret
        self.lock = threading.Lock()
        self.received = []     # every attempt: dict(headers, body, valid)
        self.faults = []       # ("status", code) | ("slow", s)

    def handle(self, headers, raw):
        sig = headers.get("X-Aha-Signature", "")
        want = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest() \
            if self.secret else ""
        with self.lock:
            self.received.append({"headers": dict(headers), "body": json.loads(raw),
                                  "valid": hmac.compare_digest(sig, want)})
            action = self.faults.pop(0) if self.faults else None
        if action and action[0] == "slow":
            time.sleep(action[1])
        if action and action[0] == "status":
            return action[1], {"Retry-After": "1"} if action[1] == 429 else {}
        return 204, {}

    def delivered(self):
        """The first attempt of each delivery id, in order."""
        seen, out = set(), []
        with self.lock:
            for r in self.received:
                d = r["headers"].get("X-Aha-Delivery")
                if d not in seen:
                    seen.add(d)
                    out.append(r)
        return out


def start_http(mlflow=None, hooks=None):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body, extra):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def serve(self, method):
            u = urlparse(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                if u.path.startswith("/api/2.0/mlflow/") and mlflow:
                    body = None
                    if method == "POST":
                        if self.headers.get("Content-Type") != "application/json":
                            return self.reply(400, {"error_code": "BAD_REQUEST",
                                                    "message": "Content-Type"}, {})
                        body = json.loads(raw)
                    st, rep, extra = mlflow.handle(u.path[len("/api/2.0/mlflow/"):], method, body,
                                                   parse_qs(u.query), self.headers)
                    return self.reply(st, rep, extra)
                if u.path == "/hook" and hooks and method == "POST":
                    st, extra = hooks.handle(self.headers, raw)
                    self.send_response(st)
                    self.send_header("Content-Length", "0")
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    return
                self.reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": u.path}, {})
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self):
            self.serve("GET")

        def do_POST(self):
            self.serve("POST")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d" % srv.server_address[1]


class Driver:
    def __init__(self, binary, logdir, name):
        self.errpath = os.path.join(logdir, name + ".stderr")
        self.err = open(self.errpath, "w+")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, env=env)

    def cmd(self, **kw):
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("driver died: " + self.log())
        return json.loads(line)

    def log(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def finish(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=30)
        text = self.log()
        assert rc == 0, "driver exit %d: %s" % (rc, text[-3000:])
        for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert pat not in text, "sanitizer report:\n" + text[-4000:]
        return text


PARAMS = {"pipeline": "r1-zero", "lr": 1e-6, "grpo": {"group_size": 8, "beta": 0.04},
          "stages": [{"type": "sft", "epochs": 2}, {"type": "grpo", "rewards": ["accuracy", "format"]}],
          "notes": "x" * 7000, "weird key@1": True}


def cfg(ml_url=None, hook_url=None, secret="s3cret", **extra):
    c = {}
    if ml_url:
        c["mlflow"] = {"tracking_uri": ml_url, "experiment": "aha-test", **extra.get("mlflow", {})}
    if hook_url:
        c["webhook"] = {"url": hook_url + "/hook", "secret": secret, **extra.get("webhook", {})}
    return c


def assert_fast(reply, what, limit=0.25):
    """A call that must not wait on the network (which here takes seconds or
    forever); the slack is for a loaded machine and ASan."""
    assert reply["elapsed"] < limit, "%s took %.3fs (must not block)" % (what, reply["elapsed"])


# ------------------------------------------------------------------ tests

def test_validate(drv_bin, logdir):
    d = Driver(drv_bin, logdir, "validate")
    bad_cfgs = [
        ([1], "integrations: expected an object"),
        ({"mlfow": {}}, "integrations.mlfow: unknown key"),
        ({"mlflow": {}}, "integrations.mlflow.tracking_uri: is required"),
        ({"mlflow": {"tracking_uri": "file:///tmp/x"}},
         "integrations.mlflow.tracking_uri: expected an http(s) URL"),
        ({"mlflow": {"tracking_uri": "http://"}},
         "integrations.mlflow.tracking_uri: expected an http(s) URL"),
        ({"mlflow": {"tracking_uri": "http://h", "experiment": 3}},
         "integrations.mlflow.experiment: expected a string"),
        ({"mlflow": {"tracking_uri": "http://h", "tags": {"a//b": "x"}}},
         "integrations.mlflow.tags.a//b: invalid MLflow tag name"),
        ({"mlflow": {"tracking_uri": "http://h", "tags": {"k": 1}}},
         "integrations.mlflow.tags.k: expected a string"),
        ({"mlflow": {"tracking_uri": "http://h", "username": "u"}},
         "integrations.mlflow.password: username and password go together"),
        ({"mlflow": {"tracking_uri": "http://h", "token": "t", "username": "u", "password": "p"}},
         "integrations.mlflow.token: give either token"),
        ({"mlflow": {"tracking_uri": "http://h", "timeout_ms": 5}},
         "integrations.mlflow.timeout_ms: expected an integer"),
        ({"mlflow": {"tracking_uri": "http://h", "extra": 1}}, "integrations.mlflow.extra: unknown key"),
        ({"webhook": {"url": "ftp://h"}}, "integrations.webhook.url: expected an http(s) URL"),
        ({"webhook": {"secret": "x"}}, "integrations.webhook.url: is required"),
        ({"webhook": {"url": "http://h", "events": []}}, "integrations.webhook.events: expected a non-empty"),
        ({"webhook": {"url": "http://h", "events": ["running", "done"]}},
         "integrations.webhook.events[1]: expected one of"),
        ({"webhook": {"url": "http://h", "events": ["failed", "failed"]}},
         "integrations.webhook.events[1]: duplicate event"),
        ({"webhook": {"url": "http://h", "secret": ""}}, "integrations.webhook.secret: must not be empty"),
        ({"webhook": {"url": "http://h", "retries": 3}}, "integrations.webhook.retries: unknown key"),
    ]
    for c, want in bad_cfgs:
        r = d.cmd(cmd="validate", cfg=c)
        assert not r["ok"] and r["error"].startswith(want), (c, r, want)
    good = [None, {}, {"mlflow": None},
            {"mlflow": {"tracking_uri": "https://mlflow.example.com/prefix/", "experiment": "e",
                        "run_name": "r", "tags": {"team": "rl", "a/b.c": ""}, "token": "t",
                        "timeout_ms": 5000}},
            {"mlflow": {"tracking_uri": "http://h:5000", "username": "u", "password": "p"}},
            {"webhook": {"url": "http://127.0.0.1:9000/hook", "secret": "s",
                         "events": ["queued", "running", "succeeded", "failed", "cancelled"],
                         "timeout_ms": 1000}}]
    for c in good:
        r = d.cmd(cmd="validate", cfg=c)
        assert r["ok"], (c, r)
    # nothing configured: open returns NULL
    assert not d.cmd(cmd="open", cfg={}, run_id="r0")["ok"]
    red = d.cmd(cmd="redact", cfg={"mlflow": {"tracking_uri": "http://h", "token": "t"},
                                   "webhook": {"url": "http://h", "secret": "s"}})["cfg"]
    assert red["mlflow"]["token"] == "***" and red["webhook"]["secret"] == "***", red
    assert red["mlflow"]["tracking_uri"] == "http://h"
    d.finish()


def test_happy_path_and_resume(drv_bin, logdir):
    ml = FakeMlflow()
    hooks = Hooks("s3cret")
    srv, url = start_http(ml, hooks)
    try:
        d = Driver(drv_bin, logdir, "happy")
        r = d.cmd(cmd="open", cfg=cfg(url, url, mlflow={"tags": {"team": "rl"}}), run_id="run_1",
                  run_name="zero-1", params=PARAMS)
        assert r["ok"]
        assert_fast(r, "open", 1.0)
        assert_fast(d.cmd(cmd="status", status="queued"), "status")
        st = d.cmd(cmd="wait_state", timeout=10)["state"]
        assert st and len(st["mlflow_run_id"]) == 32 and st["mlflow_experiment_id"], st
        assert_fast(d.cmd(cmd="status", status="running"), "status")
        ts = 1700000000.0
        r = d.cmd(cmd="metrics_bulk", stage="reasoning_rl", n=2500, ts=ts)
        assert r["elapsed"] < 1.0, r
        assert_fast(d.cmd(cmd="metrics", stage="reasoning_rl", step=500, ts=ts + 10,
                          values={"rewards": {"accuracy": {"mean": 0.5}}, "a//b": 1, "x@y": 2,
                                  "nan": None, "text": "skip"}), "metrics")
        assert_fast(d.cmd(cmd="status", status="succeeded", message="done"), "status")
        r = d.cmd(cmd="close", timeout=10)
        stats = r["stats"]
        d.finish()

        assert ml.count("experiments/create") == 1 and ml.count("runs/create") == 1
        assert not ml.rejected, ml.rejected
        run = ml.runs[st["mlflow_run_id"]]
        assert run["run_name"] == "zero-1" and run["tags"]["team"] == "rl"
        assert run["tags"]["aha.run_id"] == "run_1"
        # params: flattened, sanitized, truncated
        p = run["params"]
        assert p["pipeline"] == "r1-zero" and p["grpo.group_size"] == "8" and p["lr"] == "1e-06", p
        assert p["stages.0.type"] == "sft" and p["stages.1.rewards"] == '["accuracy","format"]', p
        assert len(p["notes"]) == MAX_PARAM_VAL and p["weird key_1"] == "true", p
        # 2,500 bulk points + 3 in one call: 1000 + 1000 + 503 -> 3 log-batch calls for
        # metrics, plus params and the status message tag
        batches = [b for e, b in ml.requests if e == "runs/log-batch" and b.get("metrics")]
        assert [len(b["metrics"]) for b in batches] == [1000, 1000, 503], [len(b["metrics"]) for b in batches]
        ms = run["metrics"]
        bulk = [m for m in ms if m["key"].startswith("reasoning_rl/m")]
        assert len(bulk) == 2500
        for i, m in enumerate(bulk):
            assert m["key"] == "reasoning_rl/m%d" % (i % 5) and m["value"] == i, m
            assert m["step"] == i // 5 and m["timestamp"] == 1700000000000 + i, m
        keys = {m["key"] for m in ms[2500:]}
        assert keys == {"reasoning_rl/rewards/accuracy/mean", "reasoning_rl/a/b", "reasoning_rl/x_y"}, keys
        assert run["status_log"] == ["SCHEDULED", "RUNNING", "FINISHED"], run["status_log"]
        assert run["end_time"] and run["tags"].get("aha.status_message") == "done"
        assert stats["mlflow"]["delivered"] == 2503 + 3 and stats["mlflow"]["failed"] == 0, stats
        # webhook: default events skip "queued"; signed; in order; unique ids
        got = hooks.delivered()
        assert [h["body"]["status"] for h in got] == ["running", "succeeded"], got
        for h in got:
            assert h["valid"], h
            assert h["headers"]["X-Aha-Event"] == "run.status"
            b = h["body"]
            assert b["type"] == "run.status" and b["run_id"] == "run_1" and b["run_name"] == "zero-1"
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", b["timestamp"]), b
        assert got[1]["body"]["message"] == "done" and got[0]["body"]["message"] is None
        assert len({h["headers"]["X-Aha-Delivery"] for h in got}) == 2

        # a restarted server continues the same MLflow run: no new run, no params again
        d = Driver(drv_bin, logdir, "resume")
        assert d.cmd(cmd="open", cfg=cfg(url), state=st, run_id="run_1", run_name="zero-1",
                     params=PARAMS)["ok"]
        assert d.cmd(cmd="state")["state"] == st
        d.cmd(cmd="status", status="running")
        d.cmd(cmd="metrics", stage="reasoning_rl", step=600, ts=ts + 20, values={"reward": 0.9})
        d.cmd(cmd="status", status="failed", message="engine exited with status 1")
        d.cmd(cmd="close", timeout=10)
        d.finish()
        assert ml.count("runs/create") == 1 and ml.count("experiments/get-by-name") == 1
        assert run["metrics"][-1]["key"] == "reasoning_rl/reward" and run["metrics"][-1]["step"] == 600
        assert run["status_log"][-2:] == ["RUNNING", "FAILED"]
        assert run["tags"]["aha.status_message"] == "engine exited with status 1"
        assert not ml.rejected, ml.rejected

        # a restart that lost the state finds the run by its aha.run_id tag
        d = Driver(drv_bin, logdir, "lost-state")
        assert d.cmd(cmd="open", cfg=cfg(url), run_id="run_1", run_name="zero-1",
                     params=PARAMS)["ok"]
        assert d.cmd(cmd="wait_state", timeout=10)["state"] == st
        d.cmd(cmd="metrics", stage="reasoning_rl", step=700, ts=ts + 30, values={"reward": 1})
        d.cmd(cmd="close", timeout=10)
        d.finish()
        # one search before the first create, one now
        assert ml.count("runs/create") == 1 and ml.count("runs/search") == 2
        assert run["metrics"][-1]["step"] == 700
        assert not ml.rejected, ml.rejected

        # a second run in the same experiment finds it instead of creating it
        d = Driver(drv_bin, logdir, "second")
        assert d.cmd(cmd="open", cfg=cfg(url), run_id="run_2", params={})["ok"]
        st2 = d.cmd(cmd="wait_state", timeout=10)["state"]
        d.cmd(cmd="close", timeout=10)
        d.finish()
        assert st2["mlflow_experiment_id"] == st["mlflow_experiment_id"]
        assert st2["mlflow_run_id"] != st["mlflow_run_id"]
        assert ml.count("experiments/create") == 1 and ml.count("runs/create") == 2
        assert ml.count("runs/search") == 3
        assert ml.runs[st2["mlflow_run_id"]]["run_name"] == "run_2"
    finally:
        srv.shutdown()


def test_retries(drv_bin, logdir):
    ml = FakeMlflow(token="tok")
    hooks = Hooks("k")
    srv, url = start_http(ml, hooks)
    try:
        # experiment created concurrently (RESOURCE_ALREADY_EXISTS) -> get-by-name again;
        # runs/create: 500, a malformed 200, then success; log-batch: 503 then 429
        ml.fault("experiments/create", ("race",))
        ml.fault("runs/create", ("status", 500), ("malformed",))
        ml.fault("runs/log-batch", ("status", 503), ("status", 429))
        hooks.faults += [("status", 500), ("status", 502), ("status", 429)]
        d = Driver(drv_bin, logdir, "retries")
        c = cfg(url, url, secret="k", mlflow={"token": "tok"})
        assert d.cmd(cmd="open", cfg=c, run_id="run_r", params={"a": 1})["ok"]
        d.cmd(cmd="status", status="running")
        d.cmd(cmd="metrics", stage="", step=1, ts=1700000000, values={"loss": 1.5})
        st = d.cmd(cmd="wait_state", timeout=10)["state"]
        stats = d.cmd(cmd="close", timeout=20)["stats"]
        d.finish()
        assert st, "no MLflow run"
        assert ml.count("experiments/get-by-name") == 2 and ml.count("experiments/create") == 1
        assert ml.count("runs/create") == 3, ml.count("runs/create")
        run = ml.runs[st["mlflow_run_id"]]
        assert run["params"] == {"a": "1"} and run["metrics"][0]["key"] == "loss", run
        assert run["status_log"] == ["RUNNING"]
        assert not ml.rejected, ml.rejected
        # the webhook: 500, 502, 429 (Retry-After: 1), then 204, same delivery id and body
        assert len(hooks.received) == 4, hooks.received
        assert len({r["headers"]["X-Aha-Delivery"] for r in hooks.received}) == 1
        assert all(r["valid"] for r in hooks.received)
        assert stats["webhook"] == {"delivered": 1, "failed": 0, "dropped": 0, "requests": 4,
                                    "retries": 3}, stats
        assert stats["mlflow"]["failed"] == 0 and stats["mlflow"]["retries"] >= 4, stats

        # runs/create succeeded but its reply was lost: the next search finds the run
        ml.fault("runs/create", ("lost",))
        d = Driver(drv_bin, logdir, "lost-reply")
        assert d.cmd(cmd="open", cfg=c, run_id="run_lost")["ok"]
        st = d.cmd(cmd="wait_state", timeout=10)["state"]
        d.cmd(cmd="close", timeout=10)
        d.finish()
        made = [rid for rid, r in ml.runs.items() if r["tags"].get("aha.run_id") == "run_lost"]
        assert made == [st["mlflow_run_id"]], (made, st)

        # a 4xx other than 429 is not retried
        hooks.received.clear()
        hooks.faults += [("status", 410)]
        d = Driver(drv_bin, logdir, "gone")
        assert d.cmd(cmd="open", cfg=cfg(None, url, secret="k"), run_id="run_g")["ok"]
        d.cmd(cmd="status", status="failed", message="boom")
        stats = d.cmd(cmd="close", timeout=10)["stats"]
        d.finish()
        assert len(hooks.received) == 1 and stats["webhook"]["failed"] == 1, (hooks.received, stats)

        # a wrong token: MLflow refuses (401), nothing is retried forever, close is quick
        d = Driver(drv_bin, logdir, "badtoken")
        assert d.cmd(cmd="open", cfg=cfg(url, mlflow={"token": "nope"}), run_id="run_t")["ok"]
        d.cmd(cmd="metrics", stage="s", step=1, ts=1700000000, values={"x": 1})
        r = d.cmd(cmd="close", timeout=10)
        d.finish()
        assert r["elapsed"] < 2, r
        assert "HTTP 401" in open(d.errpath).read()
    finally:
        srv.shutdown()


def test_basic_auth_and_slow(drv_bin, logdir):
    ml = FakeMlflow(basic="alice:pw")
    hooks = Hooks("k")
    srv, url = start_http(ml, hooks)
    try:
        # log-batch answers after 2 s, past the 500 ms timeout: retried; the webhook too
        ml.fault("runs/log-batch", ("slow", 2))
        hooks.faults += [("slow", 2)]
        d = Driver(drv_bin, logdir, "slow")
        c = cfg(url, url, secret="k", mlflow={"username": "alice", "password": "pw", "timeout_ms": 500},
                webhook={"timeout_ms": 500, "events": ["succeeded"]})
        assert d.cmd(cmd="open", cfg=c, run_id="run_s")["ok"]
        d.cmd(cmd="status", status="running")
        d.cmd(cmd="metrics", stage="s", step=3, ts=1700000000, values={"x": 1})
        d.cmd(cmd="status", status="succeeded")
        stats = d.cmd(cmd="close", timeout=20)["stats"]
        d.finish()
        st = list(ml.runs.values())
        assert len(st) == 1 and st[0]["metrics"][0]["step"] == 3, st
        assert st[0]["status_log"] == ["RUNNING", "FINISHED"]
        assert [h["body"]["status"] for h in hooks.delivered()] == ["succeeded"]
        assert len(hooks.received) == 2 and stats["webhook"]["delivered"] == 1, stats
        assert stats["mlflow"]["retries"] >= 1, stats
    finally:
        srv.shutdown()


def test_dead_endpoints_never_block(drv_bin, logdir):
    # one port with nothing listening, one that accepts and never answers
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    hung = "http://127.0.0.1:%d" % hang.getsockname()[1]
    try:
        # "dead" also sends one metric point past the queue's bound (100,000)
        for name, ml_url, hook_url, n in (("dead", dead, dead, 100001), ("hung", hung, hung, 5000)):
            d = Driver(drv_bin, logdir, name)
            r = d.cmd(cmd="open", cfg=cfg(ml_url, hook_url), run_id="run_d", params=PARAMS)
            assert r["ok"]
            assert_fast(r, "open", 1.0)
            assert_fast(d.cmd(cmd="status", status="running"), "status")
            r = d.cmd(cmd="metrics_bulk", stage="s", n=n, ts=1700000000)
            assert r["elapsed"] < n / 1000.0, r
            for i in range(20):
                assert_fast(d.cmd(cmd="metrics", stage="s", step=i, ts=1700000000, values={"y": i}),
                            "metrics")
            assert_fast(d.cmd(cmd="status", status="failed", message="x"), "status")
            assert d.cmd(cmd="state")["state"] is None
            t0 = time.time()
            r = d.cmd(cmd="close", timeout=1.5)
            took = time.time() - t0
            log = d.finish()
            assert took < 3.0, "%s: close took %.2fs (bound 1.5s)" % (name, took)
            assert r["stats"]["mlflow"]["dropped"] >= n, r
            assert ("100000 metric points queued; dropping new ones" in log) == (n > 100000), log[-2000:]
            assert r["stats"]["mlflow"]["delivered"] == 0, r
    finally:
        hang.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", default="build/integrations-driver")
    ap.add_argument("-k", default="")
    args = ap.parse_args()
    drv = os.path.abspath(args.driver)
    logdir = tempfile.mkdtemp(prefix="aha-integ-")
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and args.k in k]
    failed = 0
    for t in tests:
        t0 = time.time()
        try:
            t(drv, logdir)
            print("ok   %s (%.1fs)" % (t.__name__, time.time() - t0))
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__)
            traceback.print_exc()
    print("%d of %d integration tests passed (logs in %s)" % (len(tests) - failed, len(tests), logdir))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
