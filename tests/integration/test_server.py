#!/usr/bin/env python3
"""tests/integration/test_server.py — aha-server against a real PostgreSQL,
with a scripted fake engine (fake_engine.py) for the streaming, reasoning and
supervisor paths and, when `aha-engine serve` exists, the real engine on a
freshly pretrained tiny model. Prints `server: N passed, M failed` last and
exits non-zero on any failure.

usage: test_server.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import copy
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ROOT, Postgres, Server, create_key, damage_bytes, finish, make_tempdir, mutate_json, parse_sse,  # noqa: E402
                     request, stream, stream_finish, stream_open,
                     results, check, eq, wait_for, script_args)

FAKE = os.path.join(ROOT, "tests", "integration", "fake_engine.py")
# schema versions the server applies: one per migrations/NNNN_*.sql
MIGRATIONS = sorted(str(int(f[:4])) for f in os.listdir(os.path.join(ROOT, "migrations"))
                    if f[:4].isdigit() and f.endswith(".sql"))
MAX_BODY = 65536
MAX_INFLIGHT = 64


def err_shape(body, status_code=None, code=None, param=None):
    assert isinstance(body, dict) and "error" in body, "not an OpenAI error: %r" % (body,)
    e = body["error"]
    for k in ("message", "type", "param", "code"):
        assert k in e, "error lacks %r: %r" % (k, e)
    assert isinstance(e["message"], str) and e["message"]
    if code is not None:
        eq(e["code"], code, "error code")
    if param is not None:
        eq(e["param"], param, "error param")


def chat(messages, **kw):
    body = {"model": "tiny", "messages": messages}
    body.update(kw)
    return body


def user(text):
    return [{"role": "user", "content": text}]


def metric(srv, name):
    _, text, _ = request(srv, "GET", "/metrics")
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def trace(srv, key, tid):
    st, body, _ = request(srv, "GET", "/v1/traces/" + tid, key=key)
    return body if st == 200 else None


def run_fake_engine_suite(args, pg, base):
    data = os.path.join(base, "data")
    os.makedirs(os.path.join(data, "models", "tiny"))
    with open(os.path.join(data, "models", "tiny", "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 128}, f)
    os.makedirs(os.path.join(base, "other-model"))
    with open(os.path.join(base, "other-model", "config.json"), "w") as f:
        json.dump({"max_position_embeddings": 64}, f)
    os.makedirs(os.path.join(base, "not-a-model"))
    os.makedirs(os.path.join(data, "models", "broken"))
    with open(os.path.join(data, "models", "broken", "config.json"), "w") as f:
        json.dump({"max_position_embeddings": 128, "fail_load": True}, f)
    englog = os.path.join(base, "engine.log")

    keys = {}

    def make_keys():
        for scope in ("admin", "inference", "read"):
            k = create_key(args.server, pg.url, scope + "-key", scope)
            assert k.startswith("aha-") and len(k) == 52, k
            keys[scope] = k
    check("keys create prints the key as its last line", make_keys)
    admin, inf, read = keys.get("admin"), keys.get("inference"), keys.get("read")

    def migrations_recorded():
        eq(pg.psql("SELECT version FROM schema_migrations ORDER BY version").split(),
           MIGRATIONS, "versions")
        h = pg.psql("SELECT encode(key_hash, 'hex') FROM api_keys LIMIT 1")
        eq(len(h), 64, "sha-256 hex length")
        assert pg.psql("SELECT count(*) FROM api_keys WHERE prefix LIKE 'aha-%'") == "3"
    check("migrations recorded in schema_migrations; keys stored hashed", migrations_recorded)

    srv = Server(args.server, pg.url, data, FAKE,
                 extra=["--heartbeat", "1", "--max-body", str(MAX_BODY),
                        "--max-inflight", str(MAX_INFLIGHT), "--kv-memory-mb", "64", "--kv-dtype", "f32", "--dtype", "bf16", "--max-seqs", "128",
                        "--engine-timeout", "4", "--speculative-tokens", "3", "--prefix-cache", "off",
                        "--draft-model", "tiny=tiny"],
                 env={"FAKE_ENGINE_LOG": englog})
    try:
        check("readyz turns ready (database and engine)", lambda: eq(srv.wait_ready(), True, "ready"))
        run_http_checks(srv, pg, admin, inf, read, base, englog)
        run_db_outage_checks(srv, pg, admin)
        run_engine_crash_checks(srv, admin, englog)
    finally:
        code = srv.stop()
        log = srv.log_text()
    check("server exits cleanly on SIGTERM", lambda: eq(code, 0, "exit code"))
    check("no sanitizer reports in the server log",
          lambda: eq([l for l in log.splitlines() if "Sanitizer" in l or "runtime error" in l], [],
                     "sanitizer lines"))

    def bad_draft_model():
        for bad in ("tiny=nope", "tiny", "=tiny", "tiny=tiny,"):
            r = subprocess.run([args.server, "--port", "0", "--data-dir", data, "--database-url", pg.url,
                                "--engine", FAKE, "--migrations-dir", os.path.join(ROOT, "migrations"),
                                "--draft-model", bad], capture_output=True, text=True, timeout=60)
            eq(r.returncode, 2, "exit code for --draft-model %s" % bad)
            assert "--draft-model: expected MODEL=DRAFT" in r.stderr, r.stderr
    check("--draft-model naming no model: refused at start", bad_draft_model)

    def second_start_applies_nothing():
        s2 = Server(args.server, pg.url, data, FAKE, extra=["--max-body", "2000000"])
        try:
            assert "applied migration" not in s2.log_text()
            eq(pg.psql("SELECT count(*) FROM schema_migrations"), str(len(MIGRATIONS)),
               "migrations")
            assert s2.wait_ready()
            st, body, _ = request(s2, "POST", "/v1/completions",
                                  {"model": "tiny", "prompt": "x" * (1 << 20), "max_tokens": 1}, key=admin)
            eq(st, 413, "a prompt over the engine's 1 MiB request line")
            err_shape(body, code="request_too_large")
            r = stream_open(s2, "/v1/chat/completions", chat(user("SLOW 0.2"), stream=True), admin)
            eq(r.status, 200, "status of the stream in flight")
            time.sleep(0.3)
        finally:
            eq(s2.stop(), 0, "exit with a stream in flight")
        events, _ = parse_sse(stream_finish(r)[1])  # the bytes sent before the exit
        err_shape(events[-2], code="engine_unavailable")
        log = s2.log_text()
        eq([l for l in log.splitlines() if "Sanitizer" in l or "runtime error" in l], [], "sanitizer lines")
    check("a second start reuses the schema; SIGTERM ends streams cleanly", second_start_applies_nothing)

    def ready_after_engine_hello():
        s3 = Server(args.server, pg.url, data, FAKE, env={"FAKE_ENGINE_READY_DELAY": "1.5"})
        try:
            st, body, _ = request(s3, "GET", "/readyz")
            eq(st, 503, "readyz while the engine starts up")
            t = time.time()
            assert s3.wait_ready(), "never ready"
            assert time.time() - t > 0.5, "ready before the engine said so"
        finally:
            eq(s3.stop(), 0, "exit")
        eq([l for l in s3.log_text().splitlines() if "Sanitizer" in l or "runtime error" in l], [],
           "sanitizer lines")
    check("readyz waits for the engine's ready line", ready_after_engine_hello)

    def newer_schema_refused():
        pg.psql("INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')")
        try:
            r = subprocess.run([args.server, "migrate", "--database-url", pg.url, "--migrations-dir",
                                os.path.join(ROOT, "migrations")], capture_output=True, text=True)
            assert r.returncode != 0 and "newer" in r.stderr, r.stderr
        finally:
            pg.psql("DELETE FROM schema_migrations WHERE version = 9999")
    check("a schema newer than the server is refused", newer_schema_refused)


def run_http_checks(srv, pg, admin, inf, read, base, englog):
    def health():
        st, body, _ = request(srv, "GET", "/healthz")
        eq((st, body), (200, {"status": "ok"}), "healthz")
        st, body, _ = request(srv, "GET", "/readyz")
        eq(st, 200, "readyz")
        eq(body["database"], "ok", "database")
        st, text, h = request(srv, "GET", "/metrics")
        eq(st, 200, "metrics")
        assert h["content-type"].startswith("text/plain")
        for name in ("aha_http_requests_total", "aha_engine_restarts_total",
                     "aha_time_to_first_token_seconds_bucket", "aha_inter_token_latency_seconds_count",
                     "aha_requests_running", "aha_requests_waiting", "aha_trace_writes_dropped_total",
                     "aha_trace_write_retries_total", "aha_prompt_tokens_total",
                     "aha_generation_tokens_total"):
            assert name in text, "metrics lack " + name
    check("healthz, readyz, metrics open and well-formed", health)

    def auth():
        st, body, _ = request(srv, "GET", "/v1/models")
        eq(st, 401, "no key")
        err_shape(body, code="missing_api_key")
        st, body, _ = request(srv, "GET", "/v1/models", key="aha-" + "0" * 48)
        eq(st, 401, "wrong key")
        err_shape(body, code="invalid_api_key")
        st, body, _ = request(srv, "GET", "/v1/models", headers={"Authorization": "Basic abc"})
        eq(st, 401, "not bearer")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=read)
        eq(st, 403, "read key on completions")
        err_shape(body, code="insufficient_scope")
        st, body, _ = request(srv, "POST", "/v1/models", {"id": "x", "path": "/tmp"}, key=inf)
        eq(st, 403, "inference key importing a model")
        st, _, _ = request(srv, "GET", "/v1/models", key=read)
        eq(st, 200, "read key lists models")
        st, _, _ = request(srv, "GET", "/v1/traces", key=read)
        eq(st, 200, "read key lists traces")
        st, _, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=inf)
        eq(st, 200, "inference key completes")
    check("API keys: missing, wrong, too small a scope, right scope", auth)

    def list_and_revoke():
        k = create_key(srv.binary, pg.url, "short-lived", "read")
        mig = ["--database-url", pg.url, "--migrations-dir", os.path.join(ROOT, "migrations")]
        r = subprocess.run([srv.binary, "keys", "list"] + mig, capture_output=True, text=True, check=True)
        line = [l for l in r.stdout.splitlines() if "short-lived" in l][0]
        assert k not in r.stdout and "active" in line, r.stdout
        kid = line.split()[0]
        subprocess.run([srv.binary, "keys", "revoke", "--id", kid] + mig, check=True, capture_output=True)
        st, body, _ = request(srv, "GET", "/v1/models", key=k)
        eq(st, 401, "revoked key")
        r = subprocess.run([srv.binary, "keys", "revoke", "--id", kid] + mig, capture_output=True, text=True)
        assert r.returncode != 0, "revoking twice must fail"
    check("keys list shows no secrets; a revoked key is refused", list_and_revoke)

    def models():
        st, body, _ = request(srv, "GET", "/v1/models", key=read)
        eq(body["object"], "list", "object")
        m = [x for x in body["data"] if x["id"] == "tiny"]
        eq(len(m), 1, "tiny listed")
        eq((m[0]["object"], m[0]["max_model_len"], m[0]["owned_by"]), ("model", 128, "aha"), "model")
        st, body, _ = request(srv, "GET", "/v1/models/tiny", key=read)
        eq((st, body["id"]), (200, "tiny"), "get")
        st, body, _ = request(srv, "GET", "/v1/models/nope", key=read)
        eq(st, 404, "unknown")
        err_shape(body, code="model_not_found")
        st, body, _ = request(srv, "POST", "/v1/models",
                              {"id": "other", "path": os.path.join(base, "other-model")}, key=admin)
        eq((st, body.get("id"), body.get("max_model_len")), (201, "other", 64), "import")
        st, body, _ = request(srv, "POST", "/v1/models",
                              {"id": "other", "path": os.path.join(base, "other-model")}, key=admin)
        eq(st, 409, "duplicate import")
        err_shape(body)
        st, body, _ = request(srv, "POST", "/v1/models",
                              {"id": "bad", "path": os.path.join(base, "not-a-model")}, key=admin)
        eq(st, 422, "directory without config.json")
        err_shape(body, param="path")
        st, body, _ = request(srv, "POST", "/v1/models", {"id": "../x", "path": base}, key=admin)
        eq(st, 400, "bad id")
        err_shape(body, param="id")
        st, body, _ = request(srv, "POST", "/v1/models", {"id": 5}, key=admin)
        eq(st, 400, "wrong type")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), model="other"), key=inf)
        eq(st, 200, "complete with the imported model")
        st, body, _ = request(srv, "DELETE", "/v1/models/other", key=admin)
        eq((st, body.get("deleted")), (200, True), "delete")
        assert os.path.isdir(os.path.join(base, "other-model")), "import source must survive delete"
        st, _, _ = request(srv, "GET", "/v1/models/other", key=read)
        eq(st, 404, "deleted model")
        st, _, _ = request(srv, "DELETE", "/v1/models/other", key=admin)
        eq(st, 404, "delete twice")
        st, _, _ = request(srv, "DELETE", "/v1/models/tiny", key=read)
        eq(st, 403, "read key deleting")
    check("models: list, get, import, delete and their errors", models)

    def errors():
        st, body, _ = request(srv, "POST", "/v1/chat/completions", raw=b"{not json", key=inf)
        eq(st, 400, "malformed JSON")
        err_shape(body, code="invalid_json")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", raw=b"[1,2]", key=inf)
        eq(st, 400, "array body")
        cases = [
            (chat(user("hi"), temperature="hot"), 400, "temperature"),
            (chat(user("hi"), temperature=3), 400, "temperature"),
            (chat(user("hi"), max_tokens="5"), 400, "max_tokens"),
            (chat(user("hi"), max_tokens=129), 400, "max_tokens"),
            (chat(user("hi"), max_completion_tokens=129), 400, "max_completion_tokens"),
            (chat(user("hi"), n=17), 400, "n"),
            (chat(user("hi"), stop=["a", "b", "c", "d", "e"]), 400, "stop"),
            (chat(user("hi"), stream="yes"), 400, "stream"),
            (chat(user("hi"), top_logprobs=3), 400, "top_logprobs"),
            (chat(user("hi"), stream_options={"include_usage": True}), 400, "stream_options"),
            (chat(user("hi"), logit_bias={"x": 1}), 400, "logit_bias"),
            (chat(user("hi"), logit_bias={"5": 101}), 400, "logit_bias"),
            (chat(user("hi"), logit_bias=[5]), 400, "logit_bias"),
            (chat(user("hi"), response_format={"type": "json_schema", "json_schema": {"name": "x"}}), 400,
             "response_format"),
            (chat(user("hi"), response_format="json"), 400, "response_format"),
            (chat(user("hi"), tools="f"), 400, "tools"),
            (chat([]), 400, "messages"),
            (chat("hello"), 400, "messages"),
            (chat([{"role": "wizard", "content": "x"}]), 400, "messages"),
            (chat([{"role": "user", "content": 5}]), 400, "messages"),
            ({"messages": user("hi")}, 400, "model"),
            (chat(user("hi"), model="nope"), 404, "model"),
        ]
        for body, status, param in cases:
            st, resp, _ = request(srv, "POST", "/v1/chat/completions", body, key=inf)
            eq(st, status, "status for %r" % (body,))
            err_shape(resp, param=param)
        st, body, _ = request(srv, "POST", "/v1/completions", {"model": "tiny"}, key=inf)
        eq(st, 400, "completions without prompt")
        err_shape(body, param="prompt")
        st, body, _ = request(srv, "POST", "/v1/completions", {"model": "tiny", "prompt": [1, "a"]}, key=inf)
        eq(st, 400, "mixed prompt array")
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": ["a"] * 9, "n": 2}, key=inf)
        eq(st, 400, "choices over the limit (9 prompts x n 2 > 16)")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("FAIL")), key=inf)
        eq(st, 400, "engine rejects the prompt")
        err_shape(body, code="invalid_request")
        st, raw, h = stream(srv, "/v1/chat/completions", chat(user("FAIL"), stream=True), inf)
        eq(st, 400, "a streamed request the engine rejects gets a plain error status")
        err_shape(json.loads(raw), code="invalid_request")
        st, body, _ = request(srv, "GET", "/v1/nothing", key=inf)
        eq(st, 404, "unknown route")
        err_shape(body)
        st, body, _ = request(srv, "GET", "/v1/chat/completions", key=inf)
        eq(st, 405, "wrong method")
        err_shape(body)
    check("errors: malformed JSON, wrong types, unknown model, limits", errors)

    def load_failure():
        for _ in range(2):  # every request retries the load, and says why it failed
            st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), model="broken"), key=inf)
            eq(st, 500, "model that fails to load")
            err_shape(body, code="model_load_failed")
            assert "lm_head.weight" in body["error"]["message"], body
        st, _, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=inf)
        eq(st, 200, "other models unaffected")
        with open(englog) as f:
            loads = [json.loads(l) for l in f if '"load"' in l]
        assert loads[-1].get("kv_memory_mb") == 64 and loads[-1].get("max_seqs") == 128, loads[-1]
        assert loads[-1].get("kv_dtype") == "f32" and loads[-1].get("dtype") == "bf16", loads[-1]
        assert loads[-1].get("speculative") == {"method": "ngram", "num_speculative_tokens": 3}, loads[-1]
        assert loads[-1].get("prefix_cache") is False, loads[-1]
        # --draft-model tiny=tiny: tiny's load names its draft's directory
        tiny = [l for l in loads if l.get("model") == "tiny"]
        assert tiny and tiny[-1].get("speculative") == {
            "model": os.path.realpath(os.path.join(base, "data", "models", "tiny")),
            "num_speculative_tokens": 3}, tiny
    check("a model that fails to load: 500 naming the cause, retried next time", load_failure)

    def body_limit():
        pad = MAX_BODY - len(json.dumps(chat(user("hi"))))
        exact = json.dumps(chat(user("hi"))).encode() + b" " * pad
        eq(len(exact), MAX_BODY, "exact body size")
        st, _, _ = request(srv, "POST", "/v1/chat/completions", raw=exact, key=inf)
        eq(st, 200, "body at the limit")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", raw=exact + b" ", key=inf)
        eq(st, 413, "body one byte over the limit")
        err_shape(body, code="request_too_large")
        # chunked upload (no Content-Length) over the limit
        s = socket.create_connection((srv.host, srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + inf.encode() +
                  b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 40000
        for _ in range(2):
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        resp = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            resp += d
        s.close()
        assert resp.startswith(b"HTTP/1.1 413"), resp[:100]
    check("body limit: at the limit ok, one byte past is 413 (also chunked)", body_limit)

    def inflight_limit():
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), n=16), key=inf)
        eq(st, 200, "16 choices fit")
        # 3.6 s each: long enough that the racers below all arrive while
        # the first four admitted still run, on a loaded 2-core machine
        # too (at 1.5 s the check failed once in a busy CI run)
        body_slow = chat(user("SLOW 0.12"), n=16, max_tokens=30)
        holders = [threading.Thread(target=request, args=(srv, "POST", "/v1/chat/completions", body_slow),
                                    kwargs={"key": inf}) for _ in range(4)]
        for t in holders:
            t.start()
        # running (a first token came back): surely submitted to the engine;
        # a request counted waiting may not have reached engine_submit yet
        ok = wait_for(lambda: (metric(srv, "aha_requests_running") or 0) >= 4, timeout=5)
        assert ok, "slow requests did not start"
        st, body, h = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=inf)
        eq(st, 429, "one past %d generations in flight" % MAX_INFLIGHT)
        eq(h.get("retry-after"), "1", "Retry-After")
        err_shape(body, code="too_many_requests")
        for t in holders:
            t.join()
        # 8 such requests at once: the limit admits 4, whatever the timing
        codes = []
        racers = [threading.Thread(target=lambda: codes.append(
            request(srv, "POST", "/v1/chat/completions", body_slow, key=inf)[0])) for _ in range(8)]
        for t in racers:
            t.start()
        for t in racers:
            t.join()
        eq(sorted(codes), [200] * 4 + [429] * 4, "8 requests of 16 racing for 64 generations")
    check("generations in flight: one past the limit is 429", inflight_limit)

    ids = {}

    def chat_split():
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), seed=3), key=inf)
        eq(st, 200, "status")
        eq(body["object"], "chat.completion", "object")
        ch = body["choices"][0]
        eq(ch["message"]["reasoning_content"], "Let me think", "reasoning")
        eq(ch["message"]["content"], "\n\nThe answer is 4.", "content")
        eq(ch["message"]["role"], "assistant", "role")
        eq(ch["finish_reason"], "stop", "finish")
        u = body["usage"]
        eq((u["completion_tokens"], u["completion_tokens_details"]["reasoning_tokens"]), (9, 6), "usage")
        eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"], "total")
        ids["chat"] = body["id"]
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("NOTHINK")), key=inf)
        m = body["choices"][0]["message"]
        eq((m["reasoning_content"], m["content"]), ("The answer is 4.", None), "no </think>")
        eq(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 4, "all reasoning")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("PREFILL")), key=inf)
        m = body["choices"][0]["message"]
        eq((m["reasoning_content"], m["content"]), ("Let me think", "\n\nOK"), "prefilled <think>")
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("PREFILL"), stream=True), inf)
        deltas = [e["choices"][0]["delta"] for e in parse_sse(raw)[0][:-1]]
        eq("".join(d.get("reasoning_content", "") for d in deltas), "Let me think", "prefilled, streamed")
        eq("".join(d.get("content", "") for d in deltas), "\n\nOK", "prefilled, streamed content")
        st, body, _ = request(srv, "POST", "/v1/chat/completions",
                              chat(user("hi"), include_reasoning=False), key=inf)
        m = body["choices"][0]["message"]
        assert "reasoning_content" not in m, m
        eq(m["content"], "\n\nThe answer is 4.", "content without reasoning")
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), max_tokens=4), key=inf)
        ch = body["choices"][0]
        eq((ch["finish_reason"], ch["message"]["reasoning_content"], ch["message"]["content"]),
           ("length", "Let me think", None), "cut inside the reasoning")
        st, body, _ = request(srv, "POST", "/v1/chat/completions",
                              chat(user("hi"), max_completion_tokens=5), key=inf)
        eq(body["choices"][0]["message"]["reasoning_content"], "Let me think</th",
           "a partial close tag at the end stays reasoning")
        ids["length"] = body["id"]
    check("chat: reasoning split with and without tags, include_reasoning, length", chat_split)

    def reasoning_not_sent():
        msgs = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "4", "reasoning_content": "secret"},
                {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": "2+3?"}]}]
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(msgs), key=inf)
        eq(st, 200, "status (the fake engine errors if reasoning_content reaches it)")
        with open(englog) as f:
            lines = [json.loads(l) for l in f if '"generate"' in l]
        last = [l for l in lines if l.get("messages") and len(l["messages"]) == 3][-1]
        eq(last["messages"][2]["content"], "and 2+3?", "content parts joined")
        assert all("reasoning_content" not in m for m in last["messages"])
    check("chat: reasoning_content in assistant messages is left out of the prompt", reasoning_not_sent)

    def chat_logprobs():
        st, body, _ = request(srv, "POST", "/v1/chat/completions",
                              chat(user("NOTHINK"), logprobs=True, top_logprobs=2), key=inf)
        lp = body["choices"][0]["logprobs"]["content"]
        eq(len(lp), 4, "one entry per token")
        eq((lp[0]["token"], lp[0]["logprob"], len(lp[0]["top_logprobs"])), ("The", -0.5, 2), "entry")
        eq(lp[0]["top_logprobs"][1]["token"], "token_id:1", "alternatives without text use vLLM's form")
        eq(lp[0]["bytes"], list(b"The"), "bytes")
    check("chat: logprobs and top_logprobs", chat_logprobs)

    def chat_stream():
        st, raw, h = stream(srv, "/v1/chat/completions",
                            chat(user("hi"), stream=True, stream_options={"include_usage": True}), inf)
        eq(st, 200, "status")
        assert h["content-type"].startswith("text/event-stream"), h
        events, _ = parse_sse(raw)
        eq(events[-1], "[DONE]", "last")
        chunks = events[:-1]
        for c in chunks:
            eq(c["object"], "chat.completion.chunk", "object")
            eq(c["id"], chunks[0]["id"], "same id")
        eq(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""}, "role first")
        usage = chunks[-1]
        eq(usage["choices"], [], "usage chunk has no choices")
        eq((usage["usage"]["completion_tokens"], usage["usage"]["completion_tokens_details"]["reasoning_tokens"]),
           (9, 6), "usage")
        deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        content = "".join(d.get("content", "") for d in deltas)
        eq(reasoning, "Let me think", "streamed reasoning")
        eq(content, "\n\nThe answer is 4.", "streamed content")
        kinds = [("r" if "reasoning_content" in d else "c" if "content" in d else "-") for d in deltas]
        s = "".join(kinds)
        assert s.rstrip("-") == s.rstrip("-").replace("cr", ""), "reasoning after content: " + s
        assert "<th" not in raw.decode() and "</th" not in raw.decode(), "tag fragments leaked"
        eq(chunks[-2]["choices"][0]["finish_reason"], "stop", "finish chunk")
        for c in chunks[1:-2]:
            eq(c["choices"][0]["finish_reason"], None, "no finish before the end")
        ids["stream"] = chunks[0]["id"]
        # without include_usage: no usage chunk and no usage field
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("NOTHINK"), stream=True), inf)
        events, _ = parse_sse(raw)
        assert all(e == "[DONE]" or ("usage" not in e and e["choices"]) for e in events), events
        rs = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events[:-1])
        eq(rs, "The answer is 4.", "stream without </think>")
        st, raw, _ = stream(srv, "/v1/chat/completions",
                            chat(user("hi"), stream=True, include_reasoning=False), inf)
        assert b"reasoning_content" not in raw
    check("chat stream: SSE framing byte for byte, reasoning then content, usage", chat_stream)

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

    def tool_calls():
        # auto: the <tool_call> block becomes tool_calls; one that is not a
        # call stays in the content as written
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("TOOLCALL"), tools=tools),
                              key=inf)
        eq(st, 200, "status %r" % (body,))
        ch = body["choices"][0]
        eq(ch["finish_reason"], "tool_calls", "finish")
        m = ch["message"]
        eq(m["reasoning_content"], "weather tool", "reasoning")
        eq(m["content"], "\n\nChecking.\n\n<tool_call>\n{bad}\n</tool_call> <tool done.", "content")
        eq(len(m["tool_calls"]), 1, "calls")
        c = m["tool_calls"][0]
        assert c["id"].startswith("call_") and c["type"] == "function" and "index" not in c, c
        eq(c["function"]["name"], "get_weather", "name")
        eq(json.loads(c["function"]["arguments"]), {"city": "Paris"}, "arguments")
        with open(englog) as f:
            gen = [json.loads(l) for l in f if '"TOOLCALL"' in l][-1]
        eq(gen["tools"], tools, "tools forwarded to the engine")
        assert "tool_choice" not in gen, gen
        # streamed: the same content, and the call as one delta with its index
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("TOOLCALL"), tools=tools, stream=True),
                            inf)
        events, _ = parse_sse(raw)
        deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
        eq("".join(d.get("content", "") for d in deltas), m["content"], "streamed content")
        calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
        eq([(tc["index"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in calls],
           [(0, "get_weather", {"city": "Paris"})], "streamed calls")
        assert not any("Paris" in d.get("content", "") for d in deltas), "the call leaked into content"
        eq([e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1], "tool_calls",
           "streamed finish")
        # required (or a named function): the whole answer is the call
        for tc in ("required", {"type": "function", "function": {"name": "get_weather"}}):
            for streamed in (False, True):
                req = chat(user("TOOLFORCED"), tools=tools, tool_choice=tc, stream=streamed)
                if streamed:
                    st, raw, _ = stream(srv, "/v1/chat/completions", req, inf)
                    events, _ = parse_sse(raw)
                    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
                    assert not any(d.get("content") for d in deltas), deltas
                    calls = [tc2 for d in deltas for tc2 in d.get("tool_calls", [])]
                else:
                    st, body, _ = request(srv, "POST", "/v1/chat/completions", req, key=inf)
                    eq(body["choices"][0]["message"]["content"], None, "forced: no content")
                    eq(body["choices"][0]["finish_reason"], "tool_calls", "forced finish")
                    calls = body["choices"][0]["message"]["tool_calls"]
                eq([(c2["function"]["name"], json.loads(c2["function"]["arguments"])) for c2 in calls],
                   [("get_weather", {"city": "Rome"})], "forced call (%r, stream %s)" % (tc, streamed))
        with open(englog) as f:
            gen = [json.loads(l) for l in f if '"TOOLFORCED"' in l][-1]
        eq(gen["tool_choice"], {"type": "function", "function": {"name": "get_weather"}}, "tool_choice forwarded")
        # none: no parsing; an assistant's calls go on to the engine
        st, body, _ = request(srv, "POST", "/v1/chat/completions",
                              chat(user("TOOLCALL"), tools=tools, tool_choice="none"), key=inf)
        assert "<tool_call>" in body["choices"][0]["message"]["content"], body
        assert "tool_calls" not in body["choices"][0]["message"], body
        hist = [{"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                                  "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny NOTHINK"}]
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(hist, tools=tools), key=inf)
        eq(st, 200, "history with calls %r" % (body,))
        with open(englog) as f:
            gen = [json.loads(l) for l in f if '"sunny NOTHINK"' in l][-1]
        eq(gen["messages"][1]["tool_calls"], hist[1]["tool_calls"], "the calls forwarded")
        for bad, param in [({"tools": {"a": 1}}, "tools"), ({"tools": tools, "tool_choice": "maybe"}, "tool_choice")]:
            st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi"), **bad), key=inf)
            eq((st, body["error"]["param"]), (400, param), "refused %r" % (bad,))
    check("tools: <tool_call> blocks become tool_calls (plain and streamed), forced calls, none", tool_calls)

    def enable_thinking():
        # vLLM's chat_template_kwargs: enable_thinking false reaches the
        # engine (which renders an empty reasoning block), and the answer
        # is all content, streamed or not
        kw = {"chat_template_kwargs": {"enable_thinking": False}}
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("thinkless"), **kw), key=inf)
        eq(st, 200, "status %r" % (body,))
        msg = body["choices"][0]["message"]
        eq(msg["content"], "The answer is 4.", "all content")
        assert not msg.get("reasoning_content"), msg
        with open(englog) as f:
            gen = [json.loads(l) for l in f if '"thinkless"' in l][-1]
        eq(gen.get("enable_thinking"), False, "forwarded")
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("thinkless"), stream=True, **kw), inf)
        events, _ = parse_sse(raw)
        deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
        eq("".join(d.get("content") or "" for d in deltas), "The answer is 4.", "streamed content")
        assert not any(d.get("reasoning_content") for d in deltas), deltas
        st, body, _ = request(srv, "POST", "/v1/chat/completions",
                              chat(user("thinkful"), chat_template_kwargs={"enable_thinking": True}), key=inf)
        eq(body["choices"][0]["message"]["reasoning_content"], "Let me think", "true: reasoning as usual")
        with open(englog) as f:
            gen = [json.loads(l) for l in f if '"thinkful"' in l][-1]
        assert "enable_thinking" not in gen, gen
        for bad, param in [(5, "chat_template_kwargs"), ({"foo": 1}, "chat_template_kwargs.foo"),
                           ({"enable_thinking": "no"}, "chat_template_kwargs.enable_thinking")]:
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  chat(user("hi"), chat_template_kwargs=bad), key=inf)
            eq((st, body["error"]["param"]), (400, param), "refused %r" % (bad,))
    check("chat_template_kwargs.enable_thinking false: all content, forwarded", enable_thinking)

    def completions():
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "NOTHINK", "max_tokens": 10}, key=inf)
        eq(st, 200, "status")
        eq(body["object"], "text_completion", "object")
        eq(body["choices"][0]["text"], "The answer is 4.", "text")
        eq(body["choices"][0]["logprobs"], None, "no logprobs")
        ids["completion"] = body["id"]
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": ["NOTHINK", "COUNT"], "n": 2, "max_tokens": 3,
                               "seed": 1}, key=inf)
        eq([c["index"] for c in body["choices"]], [0, 1, 2, 3], "indexes")
        eq(body["choices"][2]["text"], "t0 t1 t2 ", "second prompt")
        eq(body["choices"][0]["finish_reason"], "length", "length")
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2}, key=inf)
        eq(st, 200, "token-id prompt")
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": [[1, 2], [3]], "max_tokens": 2}, key=inf)
        eq(len(body["choices"]), 2, "two token-id prompts")
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "NOTHINK", "max_tokens": 2, "logprobs": 1}, key=inf)
        lp = body["choices"][0]["logprobs"]
        eq((lp["tokens"], lp["token_logprobs"], lp["text_offset"]), (["The", " answer"], [-0.5, -0.5], [0, 3]),
           "legacy logprobs")
        eq(lp["top_logprobs"][0], {"token_id:0": -0.5}, "top")
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "a b c", "max_tokens": 0, "echo": True,
                               "logprobs": 1}, key=inf)
        eq(st, 200, "echo with max_tokens 0")
        ch = body["choices"][0]
        eq(ch["text"], "a b c", "echoed prompt")
        eq(ch["logprobs"]["token_logprobs"], [None, -1.0, -1.0], "prompt logprobs")
        eq(ch["logprobs"]["tokens"], ["token_id:100", "token_id:101", "token_id:102"], "prompt tokens")
        eq(ch["logprobs"]["top_logprobs"], [None, {"token_id:7": -0.1}, {"token_id:7": -0.1}], "prompt tops")
        st, raw, _ = stream(srv, "/v1/completions",
                            {"model": "tiny", "prompt": "COUNT", "max_tokens": 5, "stream": True,
                             "stream_options": {"include_usage": True}}, inf)
        events, _ = parse_sse(raw)
        text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
        eq(text, "t0 t1 t2 t3 t4 ", "streamed text")
        eq(events[-2]["usage"]["completion_tokens"], 5, "usage")
        eq(events[-3]["choices"][0]["finish_reason"], "length", "finish")
    check("completions: string, batch, token ids, n, logprobs, echo, stream", completions)

    def nul_text():
        # an engine event with "\u0000" (outside the protocol) still ends
        # its request; the NUL arrives as U+FFFD
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "NUL", "max_tokens": 8}, key=inf, timeout=20)
        eq(st, 200, "NUL %r" % (body,))
        eq(body["choices"][0]["text"], "a\ufffdb", "text")
        st, raw, _ = stream(srv, "/v1/completions", {"model": "tiny", "prompt": "NUL", "stream": True}, inf)
        events, _ = parse_sse(raw)
        eq("".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"]), "a\ufffdb", "streamed text")
    check("an engine line with a NUL in its text is not lost", nul_text)

    def garbled_line():
        # an engine event cut short (not JSON) ends its request with an
        # error at once (not at the engine timeout), the engine is told to
        # drop it, and it keeps serving
        t0 = time.monotonic()
        st, body, _ = request(srv, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "GARBLE", "max_tokens": 50}, key=inf, timeout=20)
        eq(st, 500, "garbled %r" % (body,))
        err_shape(body, code="engine_error")
        assert "not JSON" in body["error"]["message"], body
        assert time.monotonic() - t0 < 5, "the request waited %.1f s" % (time.monotonic() - t0)
        st, raw, _ = stream(srv, "/v1/completions", {"model": "tiny", "prompt": "GARBLE", "stream": True}, inf)
        events, _ = parse_sse(raw)
        assert any("error" in e for e in events), events
        deadline = time.monotonic() + 5
        while True:
            with open(englog) as f:
                sent = [json.loads(l) for l in f if l.strip()]
            gens = [m["id"] for m in sent if m.get("type") == "generate" and "GARBLE" in m.get("prompt", "")]
            cancels = {m["id"] for m in sent if m.get("type") == "cancel"}
            if len(gens) == 2 and set(gens) <= cancels or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(gens) == 2 and set(gens) <= cancels, (gens, cancels)
        st, body, _ = request(srv, "POST", "/v1/completions", {"model": "tiny", "prompt": "NOTHINK"}, key=inf)
        eq(st, 200, "the next request")
    check("an engine line that is not JSON fails its request at once", garbled_line)

    def heartbeat():
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("SLOW 2"), stream=True, max_tokens=1), inf)
        events, comments = parse_sse(raw)
        assert comments and all(c == ": keep-alive" for c in comments), comments
    check("stream: comment heartbeats while the engine is quiet", heartbeat)

    def late_first_token():
        c = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
        c.request("POST", "/v1/chat/completions", body=json.dumps(chat(user("LATE 2.5"), stream=True)),
                  headers={"Authorization": "Bearer " + inf, "Content-Type": "application/json"})
        t = time.time()
        r = c.getresponse()
        waited = time.time() - t
        eq(r.status, 200, "status")
        assert waited < 2.0, "headers waited %.2fs for the first token" % waited
        raw = r.read()
        c.close()
        events, comments = parse_sse(raw)
        assert comments, "no heartbeat before the first token"
        eq("".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]), "\n\nThe answer is 4.",
           "content")
    check("stream: a late first token opens the stream after one heartbeat interval", late_first_token)

    def engine_silence():
        out = {}

        def cancels():
            with open(englog) as f:
                return sum(1 for l in f if '"cancel"' in l)
        before = cancels()

        def streamed():
            out["s"] = stream(srv, "/v1/chat/completions", chat(user("LATE 100"), stream=True), inf)
        t = threading.Thread(target=streamed)
        t.start()
        st, body, h = request(srv, "POST", "/v1/chat/completions", chat(user("LATE 100")), key=inf)
        eq(st, 503, "non-streamed request the engine never answers")
        err_shape(body, code="engine_timeout")
        t.join(timeout=30)
        events, comments = parse_sse(out["s"][1])
        err_shape(events[-2], code="engine_timeout")
        assert comments, "heartbeats while waiting"
        assert wait_for(lambda: cancels() >= before + 2, timeout=5), "both sent a cancel to the engine"
    check("an engine that never answers: 503 / error chunk after --engine-timeout", engine_silence)

    def disconnect_cancels():
        s = socket.create_connection((srv.host, srv.port))
        body = json.dumps(chat(user("SLOW 0.2"), stream=True)).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + inf.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while b"s1 " not in got:
            got += s.recv(65536)
        rid = got.split(b'"id":"')[1].split(b'"')[0].decode()
        s.close()

        def cancelled():
            with open(englog) as f:
                return any('"cancel"' in l and rid in l for l in f)
        assert wait_for(cancelled, timeout=10), "no cancel reached the engine"
        t = wait_for(lambda: trace(srv, admin, rid), timeout=10)
        assert t, "no trace for the cancelled request"
        eq(t["finish_reason"], "cancelled", "finish_reason")
    check("stream: a client that disconnects cancels its generation", disconnect_cancels)

    def many_streams():
        n = 50
        out = [None] * n

        def one(i):
            out[i] = stream(srv, "/v1/completions",
                            {"model": "tiny", "prompt": "COUNT", "max_tokens": 30, "stream": True}, inf)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        want = "".join("t%d " % i for i in range(30))
        for st, raw, _ in out:
            eq(st, 200, "status")
            events, _ = parse_sse(raw)
            eq("".join(e["choices"][0]["text"] for e in events[:-1]), want, "tokens in order, none lost")
    check("50 concurrent streams: no lost or reordered tokens", many_streams)

    def traces():
        for k in ("chat", "stream", "completion", "length"):
            assert wait_for(lambda: trace(srv, read, ids[k])), "trace %s missing" % k
        t = trace(srv, read, ids["chat"])
        eq((t["reasoning_content"], t["content"], t["finish_reason"], t["model"]),
           ("Let me think", "\n\nThe answer is 4.", "stop", "tiny"), "chat trace")
        eq(t["messages"], user("hi"), "messages")
        eq(t["params"]["seed"], 3, "params")
        eq((t["usage"]["prompt_tokens"], t["usage"]["completion_tokens"], t["usage"]["reasoning_tokens"]),
           (1, 9, 6), "usage")
        assert t["latency_ms"] >= t["ttft_ms"] >= 0 and t["api_key_id"], t
        c = trace(srv, read, ids["completion"])
        eq((c["prompt"], c["content"], c["endpoint"]), ("NOTHINK", "The answer is 4.", "completions"), "completion")
        st, body, _ = request(srv, "GET", "/v1/traces?limit=100", key=read)
        eq(body["object"], "list", "list")
        total = int(pg.psql("SELECT count(*) FROM traces"))
        assert total >= 30, total
        st, body, _ = request(srv, "GET", "/v1/traces?finish_reason=length&limit=100", key=read)
        assert body["data"] and all(x["finish_reason"] == "length" for x in body["data"])
        st, body, _ = request(srv, "GET", "/v1/traces?q=think&model=tiny&limit=100", key=read)
        assert ids["chat"] in [x["id"] for x in body["data"]]
        assert all("think" in (x["reasoning_content"] or "") + (x["content"] or "") + json.dumps(x["messages"])
                   + json.dumps(x["prompt"]) for x in body["data"])
        st, body, _ = request(srv, "GET", "/v1/traces?q=zebra", key=read)
        eq(body["data"], [], "no match")
        # what was asked is searched too: a completion's prompt, a chat's messages
        st, body, _ = request(srv, "GET", "/v1/traces?q=NOTHINK&limit=100", key=read)
        assert ids["completion"] in [x["id"] for x in body["data"]], body
        st, body, _ = request(srv, "GET", "/v1/traces?limit=100&q=hi", key=read)
        assert ids["chat"] in [x["id"] for x in body["data"]], body
        st, body, _ = request(srv, "GET", "/v1/traces?model=nope", key=read)
        eq(body["data"], [], "model filter")
        st, p1, _ = request(srv, "GET", "/v1/traces?limit=2", key=read)
        eq((len(p1["data"]), p1["has_more"]), (2, True), "page 1")
        st, p2, _ = request(srv, "GET", "/v1/traces?limit=2&after=" + p1["last_id"], key=read)
        eq(len(p2["data"]), 2, "page 2")
        assert not set(x["id"] for x in p1["data"]) & set(x["id"] for x in p2["data"]), "pages overlap"
        st, body, _ = request(srv, "GET", "/v1/traces?since=%d&limit=100" % (time.time() + 3600), key=read)
        eq(body["data"], [], "since the future")
        st, body, _ = request(srv, "GET", "/v1/traces?until=2000-01-01T00:00:00Z", key=read)
        eq(body["data"], [], "until 2000")
        st, body, _ = request(srv, "GET", "/v1/traces?since=yesterday-ish", key=read)
        eq(st, 400, "bad time")
        err_shape(body)
        st, body, _ = request(srv, "GET", "/v1/traces?limit=101", key=read)
        eq(st, 400, "limit one past the maximum")
        err_shape(body, param="limit")
        st, body, _ = request(srv, "GET", "/v1/traces/chatcmpl-nope", key=read)
        eq(st, 404, "unknown trace")
        err_shape(body, code="trace_not_found")
    check("traces: every completion stored; filters, search, keyset pages", traces)

    def every_completion_traced():
        wait_for(lambda: metric(srv, "aha_trace_queue_depth") == 0)
        written = metric(srv, "aha_trace_writes_total")
        eq(int(pg.psql("SELECT count(*) FROM traces")), int(written), "rows vs writes")
        completions = sum(float(l.rsplit(" ", 1)[1]) for l in request(srv, "GET", "/metrics")[1].splitlines()
                          if l.startswith("aha_http_requests_total") and "completions" in l and 'status="200"' in l)
        assert written >= completions, (written, completions)
        eq(metric(srv, "aha_trace_writes_dropped_total"), 0.0, "dropped")
    check("a trace row for every completion, none dropped", every_completion_traced)

    def poisoned_trace_dropped_and_counted():
        pg.psql("ALTER TABLE traces ADD CONSTRAINT test_poison CHECK (messages::text NOT LIKE '%POISON%')")
        try:
            before = metric(srv, "aha_trace_writes_dropped_total")
            out = []
            texts = ["batch 1", "POISON", "batch 2", "batch 3"]
            ts = [threading.Thread(target=lambda t=t: out.append(
                request(srv, "POST", "/v1/chat/completions", chat(user(t)), key=inf)[1]["id"])) for t in texts]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert wait_for(lambda: metric(srv, "aha_trace_writes_dropped_total") == before + 1), "drop not counted"
            assert wait_for(lambda: metric(srv, "aha_trace_queue_depth") == 0)
            stored = [i for i in out if trace(srv, read, i)]
            eq(len(stored), 3, "the other traces are written")
        finally:
            pg.psql("ALTER TABLE traces DROP CONSTRAINT test_poison")
    check("a trace the database rejects is dropped, counted, and blocks nothing", poisoned_trace_dropped_and_counted)


def run_db_outage_checks(srv, pg, admin):
    def outage():
        request(srv, "GET", "/v1/models", key=admin)  # the key is fresh in the cache
        before = metric(srv, "aha_trace_write_retries_total")
        dropped = metric(srv, "aha_trace_writes_dropped_total")
        pg.stop()
        try:
            st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=admin)
            eq(st, 200, "completion while PostgreSQL is down")
            rid = body["id"]
            st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("hi"), stream=True), admin)
            eq(st, 200, "stream while PostgreSQL is down")
            st, body, _ = request(srv, "GET", "/readyz")
            eq(st, 503, "readyz while PostgreSQL is down")
            st, body, _ = request(srv, "GET", "/v1/traces", key=admin)
            eq(st, 503, "traces while PostgreSQL is down")
            err_shape(body, code="database_unavailable")
            assert wait_for(lambda: metric(srv, "aha_trace_write_retries_total") > before, timeout=10), \
                "no retries counted"
            assert metric(srv, "aha_trace_queue_depth") >= 1
        finally:
            pg.start()
        assert wait_for(lambda: trace(srv, admin, rid), timeout=20), "trace not written after PostgreSQL returned"
        eq(metric(srv, "aha_trace_writes_dropped_total"), dropped, "dropped")
    check("PostgreSQL stopped: completions answered, traces written after", outage)


def run_engine_crash_checks(srv, key, englog):
    def crash():
        before = metric(srv, "aha_engine_restarts_total")
        st, raw, _ = stream(srv, "/v1/chat/completions", chat(user("CRASH"), stream=True), key)
        eq(st, 200, "status")
        events, _ = parse_sse(raw)
        eq(events[-1], "[DONE]", "ends with [DONE]")
        err = events[-2]
        err_shape(err, code="engine_unavailable")
        assert wait_for(lambda: metric(srv, "aha_engine_restarts_total") > before), "restart not counted"
        assert srv.wait_ready(), "engine not back"
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=key)
        eq(st, 200, "serving after the restart")
        # a non-streamed request in flight gets a clean 503
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("CRASH")), key=key)
        eq(st, 503, "non-streamed request when the engine dies")
        err_shape(body, code="engine_unavailable")
        assert srv.wait_ready()
        # killed from outside, mid-stream: once the stream has begun (a
        # fixed sleep raced the engine's start on a loaded host)
        r = stream_open(srv, "/v1/chat/completions", chat(user("SLOW 0.2"), stream=True), key)
        eq(r.status, 200, "status of the stream to break")
        time.sleep(0.3)
        for pid in srv.engine_pids():
            os.kill(pid, 9)
        events, _ = parse_sse(stream_finish(r)[1])
        err_shape(events[-2], code="engine_unavailable")
        assert srv.wait_ready(), "engine not back after SIGKILL"
        st, body, _ = request(srv, "POST", "/v1/chat/completions", chat(user("hi")), key=key)
        eq(st, 200, "serving after SIGKILL")
    check("engine killed mid-stream: error chunk, [DONE], restarted, still serving", crash)

    def before_first_event():
        # Nothing streamed yet: the client gets a plain 503 it may retry,
        # not a 200 stream holding only an error. The kill comes well
        # within the 1 s heartbeat that would open the stream anyway.
        def generates():
            with open(englog) as f:
                return sum(1 for l in f if '"generate"' in l and "LATE 30" in l)
        before = generates()
        out = {}

        def run():
            out["r"] = stream(srv, "/v1/chat/completions", chat(user("LATE 30"), stream=True), key)
        t = threading.Thread(target=run)
        t.start()
        assert wait_for(lambda: generates() > before, timeout=10, step=0.01), "no generate reached the engine"
        for pid in srv.engine_pids():
            os.kill(pid, 9)
        t.join(timeout=30)
        st, body, hdrs = out["r"]
        eq(st, 503, "status")
        eq(hdrs.get("retry-after"), "1", "Retry-After")
        err_shape(json.loads(body), code="engine_unavailable")
        assert srv.wait_ready(), "engine not back"
    check("engine killed before a stream's first event: a plain 503 to retry", before_first_event)


def engine_has_serve(engine):
    if not os.access(engine, os.X_OK):
        return False
    r = subprocess.run([engine, "--help"], capture_output=True, text=True)
    return "serve" in r.stdout + r.stderr


def run_real_engine_suite(args, pg, base):
    """The real engine on a tiny model pretrained here for a few steps."""
    data = os.path.join(base, "real")
    model = os.path.join(data, "models", "tiny-real")
    os.makedirs(os.path.join(data, "models"))
    corpus = os.path.join(base, "arith.jsonl")
    subprocess.run([args.engine, "datagen", "arithmetic", "--n", "200", "--seed", "1", "--format", "text",
                    "--out", corpus], check=True, capture_output=True)
    subprocess.run([args.engine, "pretrain", "--config", "tiny", "--data", corpus, "--steps", "2",
                    "--out", model], check=True, capture_output=True)
    # the same model with Qwen3's chat template, which has tool calls
    shutil.copytree(model, model + "-q3")
    with open(os.path.join(model + "-q3", "chat_template.name"), "w") as f:
        f.write("qwen3")
    key = create_key(args.server, pg.url, "real", "admin")
    srv = Server(args.server, pg.url, data, args.engine)
    try:
        check("real engine: ready", lambda: eq(srv.wait_ready(60), True, "ready"))

        def real_chat():
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("What is 2+2?"), "max_tokens": 8,
                                   "seed": 1}, key=key, timeout=120)
            eq(st, 200, "status %r" % (body,))
            u = body["usage"]
            assert u["completion_tokens"] >= 1 and u["prompt_tokens"] >= 1, u
            assert "reasoning_tokens" in u["completion_tokens_details"]
            # the same long prompt again: its first whole KV blocks come from
            # the engine's prefix cache, the output is the same
            msgs = user("What is " + " + ".join(str(i) for i in range(12)) + "?")
            cached_before = metric(srv, "aha_prompt_tokens_cached_total")
            outs = []
            for _ in range(2):
                st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                      {"model": "tiny-real", "messages": msgs, "max_tokens": 6, "temperature": 0},
                                      key=key, timeout=120)
                eq(st, 200, "status %r" % (body,))
                outs.append(body)
            u0, u1 = outs[0]["usage"], outs[1]["usage"]
            eq(u0["prompt_tokens_details"]["cached_tokens"], 0, "first: nothing cached")
            eq(u1["prompt_tokens_details"]["cached_tokens"], (u1["prompt_tokens"] - 1) // 16 * 16, "second: cached")
            assert u1["prompt_tokens"] > 16, u1
            eq(outs[0]["choices"][0]["message"], outs[1]["choices"][0]["message"], "same output")
            eq(metric(srv, "aha_prompt_tokens_cached_total") - cached_before,
               u1["prompt_tokens_details"]["cached_tokens"], "the cached-tokens counter")
            # the engine's own figures, polled every second: its prefix cache
            # hits, KV cache use and the rest of vLLM's series
            assert wait_for(lambda: (metric(srv, "aha_prefix_cache_hits_total") or 0)
                            >= u1["prompt_tokens_details"]["cached_tokens"], timeout=10), \
                metric(srv, "aha_prefix_cache_hits_total")
            assert metric(srv, "aha_prefix_cache_queries_total") >= metric(srv, "aha_prefix_cache_hits_total")
            for name in ("aha_kv_cache_usage_ratio", "aha_engine_sequences_running", "aha_engine_requests_waiting",
                         "aha_preemptions_total", "aha_spec_decode_draft_tokens_total",
                         "aha_spec_decode_accepted_tokens_total"):
                v = metric(srv, name)
                assert v is not None and 0 <= v, (name, v)
            assert metric(srv, "aha_kv_cache_usage_ratio") <= 1
        check("real engine: chat completion, prefix cache, engine metrics", real_chat)

        def real_stream():
            st, raw, _ = stream(srv, "/v1/completions",
                                {"model": "tiny-real", "prompt": "1 + 1 =", "max_tokens": 8, "stream": True,
                                 "stream_options": {"include_usage": True}, "seed": 2}, key, timeout=120)
            eq(st, 200, "status")
            events, _ = parse_sse(raw)
            text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
            eq(events[-2]["usage"]["completion_tokens"] >= 1, True, "usage")
            assert isinstance(text, str)
        check("real engine: streamed completion", real_stream)

        def real_logit_bias():
            # +100 on token 65 ("A" in the byte-level vocabulary): every
            # greedy choice; a plain-text response_format and no tools pass
            st, body, _ = request(srv, "POST", "/v1/completions",
                                  {"model": "tiny-real", "prompt": "1 + 1 =", "max_tokens": 3, "temperature": 0,
                                   "logit_bias": {"65": 100}}, key=key, timeout=120)
            eq(st, 200, "status %r" % (body,))
            eq(body["choices"][0]["text"], "AAA", "biased text")
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("2+2?"), "max_tokens": 2,
                                   "response_format": {"type": "text"}, "tools": []}, key=key, timeout=120)
            eq(st, 200, "text response_format %r" % (body,))
        check("real engine: logit_bias", real_logit_bias)

        def real_json_mode():
            # response_format json_object: the content is one JSON object,
            # ended as soon as it is whole; "{" and "}" pushed up give "{}"
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("2+2? JSON please"), "max_tokens": 40,
                                   "response_format": {"type": "json_object"}, "logit_bias": {"123": 100, "125": 100}},
                                  key=key, timeout=120)
            eq(st, 200, "status %r" % (body,))
            ch = body["choices"][0]
            eq((ch["message"]["content"], ch["finish_reason"]), ("{}", "stop"), "forced object")
            assert not ch["message"].get("reasoning_content"), ch
            for seed in range(4):
                st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                      {"model": "tiny-real", "messages": user("2+2?"), "max_tokens": 64, "seed": seed,
                                       "response_format": {"type": "json_object"}}, key=key, timeout=120)
                eq(st, 200, "status %r" % (body,))
                ch = body["choices"][0]
                text = ch["message"]["content"] or ""
                assert text.startswith("{"), ch
                if ch["finish_reason"] == "stop":
                    assert isinstance(json.loads(text), dict), text
        check("real engine: JSON mode", real_json_mode)

        def real_json_schema():
            # response_format json_schema: the content is an object of the
            # schema; a schema outside the subset is a 400 naming it
            schema = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0,
                                                                  "maximum": 99},
                                                       "sure": {"type": "boolean"},
                                                       "code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                      "required": ["answer", "sure", "code"], "additionalProperties": False}
            rf = {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": schema}}
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("2+2?"), "max_tokens": 600, "seed": 3,
                                   "response_format": rf}, key=key, timeout=120)
            eq(st, 200, "status %r" % (body,))
            ch = body["choices"][0]
            eq(ch["finish_reason"], "stop", "finished %r" % (ch,))
            o = json.loads(ch["message"]["content"])
            eq(list(o), ["answer", "sure", "code"], "keys")
            assert isinstance(o["answer"], int) and 0 <= o["answer"] <= 99, o
            assert isinstance(o["sure"], bool) and re.fullmatch("[A-Z]{3}", o["code"]), o
            bad = {"type": "json_schema", "json_schema": {"name": "b", "schema": {
                "type": "object", "properties": {"x": {"type": "number", "multipleOf": 2}}}}}
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("hi"), "response_format": bad},
                                  key=key, timeout=120)
            eq(st, 400, "unsupported schema %r" % (body,))
            assert "multipleOf" in body["error"]["message"], body
        check("real engine: json_schema", real_json_schema)

        def real_tools_need_a_template():
            # this model's template (not qwen3's) has no tool calls: a 400 naming it
            st, body, _ = request(srv, "POST", "/v1/chat/completions",
                                  {"model": "tiny-real", "messages": user("hi"), "tools": [
                                      {"type": "function", "function": {"name": "f"}}]}, key=key, timeout=120)
            eq(st, 400, "status %r" % (body,))
            assert "chat template has no tool calls" in body["error"]["message"], body
        check("real engine: tools need a template with tool calls", real_tools_need_a_template)

        def real_n_logprobs_echo():
            st, body, _ = request(srv, "POST", "/v1/completions",
                                  {"model": "tiny-real", "prompt": "3 + 4 =", "max_tokens": 4, "n": 3, "seed": 5,
                                   "logprobs": 2}, key=key, timeout=120)
            eq(st, 200, "n=3 %r" % (body,))
            eq([c["index"] for c in body["choices"]], [0, 1, 2], "indexes")
            for c in body["choices"]:
                lp = c["logprobs"]
                eq(len(lp["tokens"]), len(lp["token_logprobs"]), "logprob arrays")
                assert all(len(t) <= 2 for t in lp["top_logprobs"]), lp["top_logprobs"]
            eq(body["usage"]["completion_tokens"], sum(1 for c in body["choices"] for _ in c["logprobs"]["tokens"]),
               "usage counts every choice")
            st, body, _ = request(srv, "POST", "/v1/completions",
                                  {"model": "tiny-real", "prompt": "3 + 4 = 7", "max_tokens": 0, "echo": True,
                                   "logprobs": 1}, key=key, timeout=120)
            eq(st, 200, "echo %r" % (body,))
            ch = body["choices"][0]
            eq(ch["text"], "3 + 4 = 7", "echo text")
            lps = ch["logprobs"]["token_logprobs"]
            assert len(lps) == body["usage"]["prompt_tokens"] and lps[0] is None and all(
                isinstance(x, float) for x in lps[1:]), ch["logprobs"]
            st, raw, _ = stream(srv, "/v1/chat/completions",
                                {"model": "tiny-real", "messages": user("2+2?"), "max_tokens": 6, "n": 2,
                                 "stream": True, "stream_options": {"include_usage": True}}, key, timeout=120)
            events, _ = parse_sse(raw)
            finishes = [e["choices"][0]["index"] for e in events[:-1]
                        if e["choices"] and e["choices"][0]["finish_reason"]]
            eq(sorted(finishes), [0, 1], "one finish per choice")
            eq(events[-2]["usage"]["completion_tokens"] >= 2, True, "usage")
        check("real engine: n samples, logprobs, echo with prompt logprobs, chat stream n=2", real_n_logprobs_echo)

        def official_sdk():
            # The unmodified official OpenAI Node SDK (pinned in tests/openai/package.json).
            sdk = os.path.join(ROOT, "tests", "openai")
            subprocess.run(["bash", os.path.join(sdk, "install.sh")], check=True, timeout=300)
            r = subprocess.run(["node", os.path.join(sdk, "client.mjs"), "http://%s:%d/v1" % (srv.host, srv.port),
                                key, "tiny-real", "tiny-real-q3"], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "ok   tools: a forced call streamed" in r.stdout, r.stdout
        check("real engine: the official OpenAI Node SDK", official_sdk)

        def real_kill():
            pids = srv.engine_pids()
            assert pids, "no engine child"
            os.kill(pids[0], 9)
            assert wait_for(lambda: srv.engine_pids() and srv.engine_pids() != pids, timeout=20)
            assert srv.wait_ready(60)
            st, body, _ = request(srv, "POST", "/v1/completions",
                                  {"model": "tiny-real", "prompt": "2 + 2 =", "max_tokens": 4}, key=key,
                                  timeout=120)
            eq(st, 200, "after restart %r" % (body,))
        check("real engine: killed and restarted", real_kill)

        def real_draft_model():
            # another server whose tiny-real drafts with itself: the same
            # seeded and greedy outputs, the drafts counted in /metrics
            body = {"model": "tiny-real", "prompt": "12 + 7 = 19. 12 + 7 =", "max_tokens": 24, "n": 2,
                    "seed": 3, "logprobs": 1}
            greedy = {"model": "tiny-real", "prompt": "2 + 2 =", "max_tokens": 24, "temperature": 0}
            want = [request(srv, "POST", "/v1/completions", b, key=key, timeout=120) for b in (body, greedy)]
            s2 = Server(args.server, pg.url, data, args.engine,
                        extra=["--draft-model", "tiny-real=tiny-real", "--speculative-tokens", "3"])
            try:
                assert s2.wait_ready(60)
                for b, (st, w, _) in zip((body, greedy), want):
                    st2, got, _ = request(s2, "POST", "/v1/completions", b, key=key, timeout=120)
                    eq((st, st2), (200, 200), "status %r %r" % (w, got))
                    eq([(c["text"], c["logprobs"]) for c in got["choices"]],
                       [(c["text"], c["logprobs"]) for c in w["choices"]], "outputs with a draft model")
                assert wait_for(lambda: (metric(s2, "aha_spec_decode_draft_tokens_total") or 0) > 0, timeout=5)
            finally:
                s2.stop()
        check("real engine: a draft model (--draft-model) changes no output", real_draft_model)

        def mutated_bodies():
            # valid bodies with random edits (fields deleted or set to
            # awkward values and wrong types, nested values edited, bytes
            # damaged): every answer a 2xx or a 4xx, none a 5xx, the server
            # alive (the sanitized build aborts on any memory error)
            rnd = random.Random(14)
            reward = {"name": "fz", "components": [{"type": "accuracy", "weight": 1.0, "extract": "answer_tag"},
                                                   {"type": "format", "weight": 0.5, "mode": "lenient"}]}
            st, made, _ = request(srv, "POST", "/v1/rewards", reward, key=key)
            eq(st, 201, "reward %r" % (made,))
            bodies = [
                ("/v1/chat/completions", {"model": "tiny-real", "messages": [{"role": "system", "content": "be brief"},
                                                                           {"role": "user", "content": "2+2?"}],
                                          "max_tokens": 6, "temperature": 0.7, "top_p": 0.9, "n": 2, "seed": 1,
                                          "stop": ["x"], "logprobs": True, "top_logprobs": 2,
                                          "logit_bias": {"17": 2}, "presence_penalty": 0.1,
                                          "response_format": {"type": "json_schema", "json_schema": {
                                              "name": "a", "schema": {"type": "object", "properties": {
                                                  "a": {"type": "integer"}}, "required": ["a"],
                                                  "additionalProperties": False}}}}),
                ("/v1/completions", {"model": "tiny-real", "prompt": "1+1=", "max_tokens": 5, "echo": True,
                                     "logprobs": 2, "n": 1, "stream": False, "seed": 2, "stop": "\n"}),
                ("/v1/rewards", reward),
                ("/v1/rewards/%s/score" % made["id"], {"items": [{"completion": "<think>x</think><answer>4</answer>",
                                                                  "answer": "4", "completion_tokens": 7}]}),
            ]
            seen = {}
            for it in range(300):
                path, body = rnd.choice(bodies)
                body = copy.deepcopy(body)
                for _ in range(rnd.randint(1, 3)):
                    body = mutate_json(rnd, body)
                raw = json.dumps(body).encode()
                if rnd.random() < 0.2:
                    raw = damage_bytes(rnd, raw)
                st, got, _ = request(srv, "POST", path, key=key, raw=raw,
                                     headers={"Content-Type": "application/json"}, timeout=120)
                assert st < 500, "%s %r -> %d %r" % (path, raw[:300], st, got)
                seen[st // 100] = seen.get(st // 100, 0) + 1
                assert srv.proc.poll() is None, "server exited after %s %r" % (path, raw[:300])
            assert seen.get(2, 0) > 10 and seen.get(4, 0) > 100, seen
        check("real engine: 300 mutated request bodies, no 5xx", mutated_bodies)
    finally:
        srv.stop()


def main():
    args = script_args(lambda ap: ap.add_argument("--no-real-engine", action="store_true"))
    base = make_tempdir()
    pg = None
    try:
        def reasoning_unit():
            exe = os.path.join(base, "test_reasoning")
            subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-g", "-O1", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=undefined", os.path.join(ROOT, "tests/integration/test_reasoning.c"),
                            os.path.join(ROOT, "server/reasoning.c"), os.path.join(ROOT, "server/util.c"),
                            "-o", exe], check=True)
            r = subprocess.run([exe], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        check("reasoning splitter: every way of cutting tags across tokens", reasoning_unit)
        pg = Postgres(base)
        run_fake_engine_suite(args, pg, base)
        if args.no_real_engine:
            print("skip real-engine checks (--no-real-engine)")
        elif engine_has_serve(args.engine):
            run_real_engine_suite(args, pg, base)
        else:
            print("skip real-engine checks: %s has no `serve` command yet" % args.engine)
    except Exception as e:
        results["failed"] += 1
        print("FAIL harness: %s" % e)
        traceback.print_exc()
    return finish("server", base, pg, [])


if __name__ == "__main__":
    sys.exit(main())
