#!/usr/bin/env python3
"""tests/web/test_dashboard.py — the bundled dashboard, end to end: a real
PostgreSQL, the sanitized server, the real engine (a tiny model trained and
served), and Debian's Chromium driven by puppeteer-core (dashboard.mjs).

Here: the static files as HTTP serves them (redirects, types, the security
headers, ETags, HEAD, methods, names that must not resolve, what the loader
skips, a missing --web-dir). Then a dataset, a reward spec and a pipeline,
two finished runs, a run left running and stored traces are set up, and
dashboard.mjs checks the pages against the API in the browser. Prints `dashboard: N passed, M failed` last.

usage: test_dashboard.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import json
import os
import subprocess
import sys
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import (ROOT, Postgres, Server, check, create_key, eq, finish, make_tempdir,  # noqa: E402
                     request, results, tiny_training_data, wait_for, script_args)

# The text a user sent, stored in a trace: it must come back as text.
XSS = 'zebraquartz <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
# The same in a dataset's row, field name and name.
DS_XSS = '<img src=x onerror="window.__pwned=3"><b>bold</b>'
DS_NAME = 'dash rows <b>bold</b><img src=x onerror="window.__pwned=4">'


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
        for name in sorted(f for f in os.listdir(os.path.join(ROOT, "web")) if f.endswith(".js")):  # app.js, modules
            st, js, h = request(a, "GET", "/dashboard/" + name)
            eq((st, h.get("content-type")), (200, "text/javascript; charset=utf-8"), name)
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


def catalog_setup(ctx):
    """A dataset (25 rows, one with markup in a value, a field name and its
    name), a reward spec and a pipeline using both: the catalog's pages."""
    a = ctx.a
    with open(os.path.join(ctx.data, "data", "rl.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:24]
    rows.insert(0, {"prompt": DS_XSS + " What is 2 + 2?", "answer": "4", "<i>note</i>": DS_XSS})
    raw = "".join(json.dumps(r) + "\n" for r in rows).encode()
    st, ds, _ = request(a, "POST", "/v1/datasets?purpose=rl&name=" + urllib.parse.quote(DS_NAME), raw=raw,
                        headers={"Content-Type": "application/jsonl"}, key=ctx.admin)
    eq(st, 201, "POST dataset %r" % (ds,))
    st, rw, _ = request(a, "POST", "/v1/rewards", {
        "name": "dash-reward", "description": "accuracy, and the format under another name",
        "components": [{"type": "accuracy", "weight": 1.0}, {"type": "format", "weight": 0.2, "name": "fmt"}]},
        key=ctx.admin)
    eq(st, 201, "POST reward %r" % (rw,))
    spec = pipeline("dash-catalog", 4, 2)
    spec["stages"][0].update(dataset=ds["id"], reward=rw["id"])
    st, pl, _ = request(a, "POST", "/v1/pipelines", spec, key=ctx.admin, timeout=60)
    eq(st, 201, "POST pipeline %r" % (pl,))
    return ds["id"], rw["id"], pl["id"]


def browser_checks(ctx):
    a = ctx.a
    dataset, reward, pl = catalog_setup(ctx)
    st, done, _ = request(a, "POST", "/v1/runs", {"pipeline": pipeline("dash", 4, 2), "base_model": "tiny",
                                                  "name": "done", "tags": ["dashboard"]}, key=ctx.admin)
    eq(st, 201, "POST run %r" % (done,))
    # a second finished run to compare with: the stored pipeline, whose reward
    # names a component differently (a metric only this run has), 2 steps
    st, done2, _ = request(a, "POST", "/v1/runs", {"pipeline": pl, "base_model": "tiny", "name": "done2",
                                                   "tags": ["dashboard", "catalog"],
                                                   "overrides": {"rl": {"params": {"steps": 2}}}}, key=ctx.admin)
    eq(st, 201, "POST run %r" % (done2,))
    wait_run(ctx, done["id"], ("succeeded",))
    wait_run(ctx, done2["id"], ("succeeded",))
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
           "done2": done2["id"], "live": ctx.live, "trace": trace["id"], "xss": XSS, "model": "tiny",
           "dataset": dataset, "dataset_name": DS_NAME, "ds_xss": DS_XSS, "reward": reward, "pipeline": pl}
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
    args = script_args()
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
    if ctx.a and ctx.a.proc.poll() is None:  # runs left going (the live one, the one the browser started)
        try:
            for status in ("running", "queued"):
                st, runs, _ = request(ctx.a, "GET", "/v1/runs?limit=100&status=" + status, key=ctx.admin)
                for r in runs.get("data", []) if st == 200 else []:
                    request(ctx.a, "POST", "/v1/runs/%s/cancel" % r["id"], key=ctx.admin)
        except OSError as e:
            print("teardown: cancelling runs: %s" % e)
    return finish("dashboard", base, ctx.pg, [ctx.a])


if __name__ == "__main__":
    sys.exit(main())
