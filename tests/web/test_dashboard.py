#!/usr/bin/env python3
"""tests/web/test_dashboard.py — the bundled dashboard, end to end: a real
PostgreSQL, the sanitized server, the real engine (a tiny model trained and
served), and Debian's Chromium driven by puppeteer-core (dashboard.mjs).

Here: the static files as HTTP serves them (redirects, types, the security
headers, ETags, HEAD, methods, names that must not resolve, what the loader
skips, a missing --web-dir). Then a finished run, a run left running and
stored traces are set up, and dashboard.mjs checks the pages against the
API in the browser. Prints `dashboard: N passed, M failed` last.

usage: test_dashboard.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import argparse
import json
import os
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import (ROOT, Postgres, Server, check, create_key, eq, finish, make_tempdir,  # noqa: E402
                     request, results, tiny_training_data, wait_for)

# The text a user sent, stored in a trace: it must come back as text.
XSS = 'zebraquartz <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def pipeline(name, steps, checkpoint_every):
    return {"name": name, "stages": [
        {"name": "rl", "kind": "grpo", "model": "$base", "dataset": "data/rl.jsonl",
         "reward": {"components": [{"type": "accuracy", "weight": 1.0}, {"type": "format", "weight": 0.2}]},
         "params": {"steps": steps, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8,
                    "checkpoint_every": checkpoint_every, "log_completions": 1, "seed": 1}}]}


class Ctx:
    pass


def static_checks(ctx):
    a = ctx.a

    def redirects():
        for path in ("/", "/dashboard"):
            st, _, h = request(a, "GET", path)
            eq(st, 302, path)
            eq(h.get("location"), "/dashboard/", path + " Location")

    def index():
        st, body, h = request(a, "GET", "/dashboard/")
        eq(st, 200, "status")
        eq(h.get("content-type"), "text/html; charset=utf-8", "type")
        with open(os.path.join(ROOT, "web", "index.html"), encoding="utf-8") as f:
            eq(body, f.read(), "body")
        csp = h.get("content-security-policy", "")
        for d in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
            assert d in csp, "CSP %r lacks %r" % (csp, d)
        eq(h.get("x-content-type-options"), "nosniff", "nosniff")
        st, js, h = request(a, "GET", "/dashboard/app.js")
        eq((st, h.get("content-type")), (200, "text/javascript; charset=utf-8"), "app.js")
        st, _, h = request(a, "GET", "/dashboard/style.css")
        eq((st, h.get("content-type")), (200, "text/css; charset=utf-8"), "style.css")

    def etag_and_head():
        st, body, h = request(a, "GET", "/dashboard/app.js")
        tag = h["etag"]
        assert tag.startswith('"') and tag.endswith('"'), tag
        st, body2, h2 = request(a, "GET", "/dashboard/app.js", headers={"If-None-Match": tag})
        eq((st, body2), (304, ""), "If-None-Match")
        eq(h2.get("etag"), tag, "304 ETag")
        st, _, _ = request(a, "GET", "/dashboard/app.js", headers={"If-None-Match": '"0000000000000000"'})
        eq(st, 200, "other ETag")
        st, body3, h3 = request(a, "HEAD", "/dashboard/app.js")
        eq((st, body3), (200, ""), "HEAD")
        eq(h3.get("content-length"), str(len(body.encode())), "HEAD Content-Length")

    def refused():
        for path in ("/dashboard/nope.js", "/dashboard/../Makefile", "/dashboard/..%2fMakefile",
                     "/dashboard/%2e%2e/README.md", "/dashboard/web/app.js", "/dashboard//etc/passwd",
                     "/dashboard/index.html/", "/dashboardx"):
            st, body, _ = request(a, "GET", path)
            eq(st, 404, path)
            assert isinstance(body, dict) and "error" in body, "%s: %r" % (path, body)
        st, body, _ = request(a, "POST", "/dashboard/", body={})
        eq(st, 405, "POST")
        eq(body["error"]["code"], "method_not_allowed", "POST code")

    def loader_rules():
        # only plain files named [A-Za-z0-9._-] with a known extension load
        d = os.path.join(ctx.base, "webdir")
        os.makedirs(os.path.join(d, "sub"))
        files = {"a.js": "1", ".hidden.js": "2", "bad name.js": "3", "x.exe": "4", "sub/b.js": "5"}
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        os.symlink(os.path.join(ROOT, "Makefile"), os.path.join(d, "link.txt"))
        s = Server(ctx.args.server, ctx.pg.url, ctx.data, ctx.args.engine, extra=["--web-dir", d])
        try:
            eq(request(s, "GET", "/dashboard/a.js")[:2], (200, "1"), "a.js")
            for name in (".hidden.js", "bad%20name.js", "x.exe", "sub/b.js", "link.txt", "index.html"):
                eq(request(s, "GET", "/dashboard/" + name)[0], 404, name)
        finally:
            eq(s.stop(), 0, "server exit")
        r = subprocess.run([ctx.args.server, "--port", "0", "--database-url", ctx.pg.url,
                            "--data-dir", ctx.data, "--web-dir", os.path.join(d, "none"),
                            "--migrations-dir", os.path.join(ROOT, "migrations")],
                           capture_output=True, text=True, timeout=60)
        eq(r.returncode, 1, "missing --web-dir exit status")
        assert "none" in r.stderr and "No such file" in r.stderr, r.stderr

    check("/ and /dashboard redirect to /dashboard/", redirects)
    check("index, script, style: bodies, types, CSP, nosniff", index)
    check("ETag and If-None-Match (304), HEAD", etag_and_head)
    check("unknown and escaping names 404, POST 405", refused)
    check("loader skips dotfiles, odd names, links, subdirs; bad --web-dir fails", loader_rules)


def wait_run(ctx, rid, statuses, timeout=300):
    def get():
        st, body, _ = request(ctx.a, "GET", "/v1/runs/" + rid, key=ctx.read)
        return body if st == 200 and body["status"] in statuses else None
    got = wait_for(get, timeout=timeout, step=0.5)
    assert got, "run %s never reached %s" % (rid, statuses)
    return got


def browser_checks(ctx):
    a = ctx.a
    st, done, _ = request(a, "POST", "/v1/runs", {"pipeline": pipeline("dash", 4, 2), "base_model": "tiny",
                                                  "name": "done", "tags": ["dashboard"]}, key=ctx.admin)
    eq(st, 201, "POST run %r" % (done,))
    wait_run(ctx, done["id"], ("succeeded",))
    # stays running for the browser's live checks; dashboard.mjs cancels it
    st, live, _ = request(a, "POST", "/v1/runs", {"pipeline": pipeline("dash-live", 2000, 0),
                                                  "base_model": "tiny", "name": "live"}, key=ctx.admin)
    eq(st, 201, "POST live run %r" % (live,))
    ctx.live = live["id"]
    st, out, _ = request(a, "POST", "/v1/chat/completions",
                         {"model": "tiny", "messages": [{"role": "user", "content": XSS}], "max_tokens": 12,
                          "temperature": 0}, key=ctx.admin, timeout=120)
    eq(st, 200, "chat %r" % (out,))
    trace = wait_for(lambda: (request(a, "GET", "/v1/traces?q=zebraquartz", key=ctx.read)[1].get("data")
                              or [None])[0], timeout=30)
    assert trace, "the trace was not stored"
    wait_run(ctx, ctx.live, ("running",), timeout=120)
    cfg = {"url": "http://127.0.0.1:%d" % a.port, "read": ctx.read, "admin": ctx.admin, "done": done["id"],
           "live": ctx.live, "trace": trace["id"], "xss": XSS, "model": "tiny"}
    r = subprocess.run(["node", os.path.join(HERE, "dashboard.mjs"), json.dumps(cfg)], capture_output=True,
                       text=True, timeout=600)
    # dashboard.mjs prints one `ok NAME` or `FAIL NAME: why` line per check
    lines = r.stdout.splitlines()
    for line in lines:
        print(line, flush=True)
        if line.startswith("ok "):
            results["passed"] += 1
        elif line.startswith("FAIL "):
            results["failed"] += 1
    if r.returncode or not any(x.startswith("ok ") for x in lines):
        results["failed"] += 1
        print("FAIL dashboard.mjs exit status %d:\n%s" % (r.returncode, r.stderr[-3000:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="build/aha-server-san")
    ap.add_argument("--engine", default="build/aha-engine")
    args = ap.parse_args()
    args.server = os.path.abspath(args.server)
    args.engine = os.path.abspath(args.engine)
    subprocess.run(["bash", os.path.join(HERE, "install.sh")], check=True)
    base = make_tempdir()
    ctx = Ctx()
    ctx.args, ctx.base, ctx.a, ctx.pg, ctx.live = args, base, None, None, None
    try:
        ctx.pg = Postgres(base)
        ctx.data = tiny_training_data(args.engine, base)
        ctx.admin = create_key(args.server, ctx.pg.url, "admin", "admin")
        ctx.read = create_key(args.server, ctx.pg.url, "read", "read")
        ctx.a = Server(args.server, ctx.pg.url, ctx.data, args.engine,
                       extra=["--max-runs", "1", "--web-dir", os.path.join(ROOT, "web")])
        static_checks(ctx)
        browser_checks(ctx)
    except Exception as e:
        results["failed"] += 1
        print("FAIL harness: %s" % e)
        traceback.print_exc()
    if ctx.a and ctx.live and ctx.a.proc.poll() is None:
        request(ctx.a, "POST", "/v1/runs/%s/cancel" % ctx.live, key=ctx.admin)
    return finish("dashboard", base, ctx.pg, [ctx.a])


if __name__ == "__main__":
    sys.exit(main())
