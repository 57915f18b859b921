#!/usr/bin/env python3
"""tests/integration/test_runs.py — training runs end to end: a real
PostgreSQL, the sanitized server, the real engine training a tiny model for
a few steps. Covers POST /v1/runs (compile, bad input), the queue and its
events, metrics/samples/checkpoints, the stage model served and chatted
with, cancel, kill -9 of the engine (failed with its cause; auto_resume),
two servers on one database, and a server killed mid-run (lease expiry,
resumed, no metric duplicated). Prints `runs: N passed, M failed` last.

usage: test_runs.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import http.client
import json
import os
import subprocess
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Postgres, Server, check, create_key, eq, finish, make_tempdir,  # noqa: E402
                     request, results, tiny_training_data, wait_for, script_args)



def pipeline(name="t-zero", steps=4, checkpoint_every=2, dataset="data/rl.jsonl"):
    return {"name": name, "stages": [
        {"name": "rl", "kind": "grpo", "model": "$base", "dataset": dataset,
         "reward": {"components": [{"type": "accuracy", "weight": 1.0}, {"type": "format", "weight": 0.2}]},
         "params": {"steps": steps, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8,
                    "checkpoint_every": checkpoint_every, "log_completions": 1, "seed": 1}}]}


def kd_pipeline(teacher):
    """A distill stage whose student is the model tiny, taught by teacher."""
    return {"name": "t-kd", "stages": [{"name": "kd", "kind": "distill", "model": "tiny", "teacher": teacher,
                                        "dataset": "data/rl.jsonl", "params": {"max_steps": 1}}]}


def engine_supports(engine, flag):
    r = subprocess.run([engine, "train"], capture_output=True, text=True)
    return flag in r.stdout + r.stderr


def train_pids(srv):
    out = []
    for pid in srv.engine_pids():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"\0train\0" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


class Ctx:
    pass


def run_get(ctx, srv, rid):
    st, body, _ = request(srv, "GET", "/v1/runs/" + rid, key=ctx.read)
    eq(st, 200, "GET run %r" % (body,))
    return body


def wait_status(ctx, srv, rid, statuses, timeout=180):
    got = wait_for(lambda: run_get(ctx, srv, rid)["status"] in statuses and run_get(ctx, srv, rid),
                   timeout=timeout, step=0.5)
    assert got, "run %s never reached %s: %r" % (rid, statuses, run_get(ctx, srv, rid))
    return got


def events(ctx, rid):
    rows = ctx.pg.psql("SELECT seq || ' ' || type || ' ' || data::text FROM run_events WHERE run_id = '%s'"
                       " ORDER BY seq" % rid)
    out = []
    for line in rows.splitlines():
        seq, typ, data = line.split(" ", 2)
        out.append((int(seq), typ, json.loads(data)))
    return out


def statuses(evs):
    return [d["status"] for _, t, d in evs if t == "status"]


def create(ctx, srv, body, want=201):
    st, out, _ = request(srv, "POST", "/v1/runs", body, key=ctx.admin, timeout=60)
    eq(st, want, "POST /v1/runs %r" % (out,))
    return out


def checks(ctx):
    a = ctx.a

    def bad_input():
        cases = [
            ({}, 400, "pipeline"),
            ({"pipeline": "no-such-pipeline", "base_model": "tiny"}, 404, "pipeline"),
            ({"pipeline": pipeline(), "base_model": "no-such-model"}, 404, "base_model"),
            ({"pipeline": pipeline(dataset="data/none.jsonl"), "base_model": "tiny"}, 404, "pipeline"),
            ({"pipeline": pipeline(dataset="../../etc/passwd"), "base_model": "tiny"}, 404, "pipeline"),
            ({"pipeline": pipeline()}, 422, "base_model"),
            ({"pipeline": kd_pipeline("$base")}, 422, "base_model"),
            ({"pipeline": kd_pipeline("no-such-model")}, 404, "pipeline"),
            ({"pipeline": pipeline(), "base_model": "tiny", "overrides": {"nope": {"params": {}}}}, 422,
             "overrides"),
            ({"pipeline": pipeline(), "base_model": "tiny", "overrides": {"rl": {"model": "x"}}}, 422,
             "overrides"),
            ({"pipeline": pipeline(), "base_model": "tiny",
              "overrides": {"rl": {"params": {"learning_rate": "fast"}}}}, 422, "pipeline"),
            ({"pipeline": pipeline(), "base_model": "tiny", "name": "has space"}, 400, "name"),
            ({"pipeline": pipeline(), "base_model": "tiny", "name": "tiny"}, 409, "name"),
            ({"pipeline": pipeline(), "base_model": "tiny", "tags": "x"}, 400, "tags"),
            ({"pipeline": pipeline(), "base_model": "tiny", "colour": 1}, 400, "colour"),
        ]
        for body, status, param in cases:
            st, out, _ = request(a, "POST", "/v1/runs", body, key=ctx.admin, timeout=60)
            eq(st, status, "status for %r: %r" % (body, out))
            eq(out["error"]["param"], param, "param for %r: %r" % (body, out))
            assert out["error"]["message"], out
        st, out, _ = request(a, "POST", "/v1/runs", {"pipeline": pipeline(), "base_model": "tiny"},
                             key=ctx.read)
        eq(st, 403, "read key cannot create")
        st, out, _ = request(a, "GET", "/v1/runs", key=None)
        eq(st, 401, "no key")
        st, out, _ = request(a, "GET", "/v1/runs/run-nope", key=ctx.read)
        eq(st, 404, "unknown run")
        eq(ctx.pg.psql("SELECT count(*) FROM runs"), "0", "nothing stored")
    check("POST /v1/runs: bad input is a 4xx naming the field; nothing queued", bad_input)

    def whole_flow():
        run = create(ctx, a, {"pipeline": pipeline(), "base_model": "tiny", "name": "flow",
                              "tags": ["demo", "ci"]})
        eq(run["status"] in ("queued", "running"), True, "new run status")
        eq(run["name"], "flow", "name")
        eq(run["pipeline"], "t-zero", "the pipeline's name")
        assert os.path.isabs(run["spec"]["base_model"]), run["spec"]
        ctx.flow = run["id"]
        done = wait_status(ctx, a, run["id"], ("succeeded", "failed", "cancelled"))
        eq(done["status"], "succeeded", "final status %r" % (done,))
        eq([s["model"] for s in done["stages"]], ["flow/rl"], "stage models")
        evs = events(ctx, run["id"])
        eq([e[0] for e in evs], list(range(1, len(evs) + 1)), "gapless seq")
        eq(int(ctx.pg.psql("SELECT last_seq FROM runs WHERE id = '%s'" % run["id"])), len(evs), "last_seq")
        eq(statuses(evs), ["queued", "running", "succeeded"], "status events")
        eq(evs[-1][1], "status", "the last event is the final status")
        n_values = sum(len(d["values"]) for _, t, d in evs if t == "metric")
        eq(int(ctx.pg.psql("SELECT count(*) FROM run_metrics WHERE run_id = '%s'" % run["id"])), n_values,
           "one metric row per value")
        assert any(m["name"] == "reward" and m["step"] == 4 for m in done["latest_metrics"]), done["latest_metrics"]
    check("run: queued -> running -> succeeded, every event recorded", whole_flow)

    def listing():
        st, out, _ = request(a, "GET", "/v1/runs?tag=demo&status=succeeded", key=ctx.read)
        eq(st, 200, "list")
        eq([r["name"] for r in out["data"]], ["flow"], "filtered")
        st, out, _ = request(a, "GET", "/v1/runs?tag=none", key=ctx.read)
        eq(out["data"], [], "no match")
        st, out, _ = request(a, "GET", "/v1/runs?limit=0", key=ctx.read)
        eq(st, 400, "limit 0")
        st, out, _ = request(a, "GET", "/v1/runs?status=bogus", key=ctx.read)
        eq(st, 400, "bad status")
    check("GET /v1/runs: filters and limits", listing)

    def metrics_api():
        rid = ctx.flow
        st, out, _ = request(a, "GET", "/v1/runs/%s/metrics?names=reward,kl" % rid, key=ctx.read)
        eq(st, 200, "metrics json")
        names = sorted(s["name"] for s in out["data"])
        eq(names, ["kl", "reward"], "names")
        for s in out["data"]:
            eq(s["steps"], [1, 2, 3, 4], "steps")
            eq(len(s["values"]), 4, "values")
        st, text, h = request(a, "GET", "/v1/runs/flow/metrics?names=reward&format=csv", key=ctx.read)
        eq(st, 200, "csv")
        assert h["content-type"].startswith("text/csv"), h
        lines = text.strip().splitlines()
        eq(lines[0], "stage,step,name,value", "header")
        eq([ln.split(",")[1] for ln in lines[1:]], ["1", "2", "3", "4"], "csv steps")
        st, out, _ = request(a, "GET", "/v1/runs/%s/metrics?format=xml" % rid, key=ctx.read)
        eq(st, 400, "bad format")
        st, out, _ = request(a, "GET", "/v1/runs/%s/samples?step=2" % rid, key=ctx.read)
        eq(st, 200, "samples")
        assert out["data"] and all(s["step"] == 2 and "completion" in s for s in out["data"]), out
        st, asc, _ = request(a, "GET", "/v1/runs/%s/samples?stage=rl" % rid, key=ctx.read)
        st, desc, _ = request(a, "GET", "/v1/runs/%s/samples?stage=rl&order=desc&limit=3" % rid, key=ctx.read)
        eq(st, 200, "samples order=desc")
        eq(desc["data"], asc["data"][::-1][:3], "order=desc: the newest first")
        st, out, _ = request(a, "GET", "/v1/runs/%s/samples?order=up" % rid, key=ctx.read)
        eq((st, out["error"]["param"]), (400, "order"), "bad order")
        st, out, _ = request(a, "GET", "/v1/runs/%s/checkpoints" % rid, key=ctx.read)
        eq([(c["stage"], c["step"]) for c in out["data"]], [("rl", 2)], "checkpoints")
    check("metrics json/csv, samples by step, checkpoints", metrics_api)

    def served():
        st, out, _ = request(a, "GET", "/v1/models", key=ctx.read)
        assert "flow/rl" in [m["id"] for m in out["data"]], out
        st, out, _ = request(a, "POST", "/v1/chat/completions",
                             {"model": "flow/rl", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                              "max_tokens": 4}, key=ctx.admin, timeout=120)
        eq(st, 200, "chat with the trained stage %r" % (out,))
        assert out["usage"]["completion_tokens"] >= 1
    check("the stage model is in /v1/models and answers chat", served)

    def catalog_flow():
        # the user's path: upload -> reward -> pipeline -> run -> SSE -> model -> chat
        with open(os.path.join(ctx.data, "data", "rl.jsonl"), "rb") as f:
            raw = f.read()
        st, ds, _ = request(a, "POST", "/v1/datasets?purpose=rl&name=arith-rl", raw=raw, key=ctx.admin,
                            headers={"Content-Type": "application/jsonl"})
        assert st in (200, 201), (st, ds)
        st, rw, _ = request(a, "POST", "/v1/rewards", {"name": "flow-reward", "components": [
            {"type": "accuracy", "weight": 1.0}, {"type": "format", "weight": 0.2}]}, key=ctx.admin)
        assert st in (200, 201), (st, rw)
        spec = pipeline(name="catalog-flow", dataset=ds["id"])
        spec["stages"][0]["reward"] = rw["id"]
        st, pl, _ = request(a, "POST", "/v1/pipelines", spec, key=ctx.admin, timeout=60)
        assert st in (200, 201), (st, pl)
        run = create(ctx, a, {"pipeline": "catalog-flow", "base_model": "tiny", "name": "cflow"})
        st, body, _ = request(a, "DELETE", "/v1/datasets/" + ds["id"], key=ctx.admin)
        eq(st, 409, "a dataset in use cannot be deleted: %r" % (body,))
        c = http.client.HTTPConnection(a.host, a.port, timeout=300)
        c.request("GET", "/v1/runs/%s/events" % run["id"], headers={"Authorization": "Bearer " + ctx.read})
        r = c.getresponse()
        eq(r.status, 200, "SSE status")
        assert r.getheader("Content-Type").startswith("text/event-stream"), r.getheader("Content-Type")
        got, cur = [], {}
        for line in r.read().decode().split("\n"):  # the stream ends after the final status
            if not line:
                if "id" in cur:
                    got.append((int(cur["id"]), cur.get("event"), json.loads(cur["data"])))
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(":")
                cur[k] = v[1:] if v.startswith(" ") else v
        c.close()
        eq([g[0] for g in got], list(range(1, len(got) + 1)), "SSE ids are the gapless seq")
        eq((got[-1][1], got[-1][2].get("status")), ("status", "succeeded"), "the stream ends on the final status")
        assert any(t == "metric" for _, t, _ in got), [t for _, t, _ in got]
        eq(len(got), len(events(ctx, run["id"])), "SSE carried every recorded event")
        st, models, _ = request(a, "GET", "/v1/models", key=ctx.read)
        assert "cflow/rl" in [m["id"] for m in models["data"]], models
        st, out, _ = request(a, "POST", "/v1/chat/completions", {
            "model": "cflow/rl", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 4},
            key=ctx.admin, timeout=120)
        eq(st, 200, "chat with the stage model: %r" % (out,))
        for name in ("r1-zero", "sft", "pretrain-tiny", "r1"):
            ok = wait_for(lambda: request(a, "GET", "/v1/pipelines/" + name, key=ctx.read)[0] == 200, 120, 1)
            assert ok, "built-in pipeline %s missing" % name
    check("upload -> reward -> pipeline -> run -> SSE -> succeeded -> stage model chats; templates exist",
          catalog_flow)

    def stage_dataset():
        # generate -> sft in one run: the generated JSONL joins the catalog
        # as an sft dataset named <run>/<stage>, which the stage reports
        spec = {"name": "gen-sft", "stages": [
            {"name": "gen", "kind": "generate", "model": "$base", "dataset": "data/rl.jsonl",
             "params": {"num_samples": 2, "max_completion_length": 4, "seed": 3,
                        "prompt_template": "User: {prompt}\nAssistant:"}},
            {"name": "tune", "kind": "sft", "model": "$base", "dataset": "gen",
             "params": {"max_steps": 2, "batch_size": 4, "seq_len": 64}},
            {"name": "kd", "kind": "distill", "model": "$base", "teacher": "tune", "dataset": "gen",
             "params": {"max_steps": 2, "batch_size": 4, "seq_len": 64}}]}
        # a stored pipeline names datasets by id
        with open(os.path.join(ctx.data, "data", "rl.jsonl"), "rb") as f:
            st, ds, _ = request(a, "POST", "/v1/datasets?purpose=rl&name=arith-rl", raw=f.read(), key=ctx.admin,
                                headers={"Content-Type": "application/jsonl"})
        assert st in (200, 201), (st, ds)
        bad = json.loads(json.dumps(spec))
        bad["name"], bad["stages"][0]["dataset"], bad["stages"][2]["teacher"] = "bad-kd", ds["id"], "gen"
        st, out, _ = request(a, "POST", "/v1/pipelines", bad, key=ctx.admin, timeout=60)
        eq((st, out["error"]["message"]), (400, 'stage "kd": teacher "gen" names a generate stage, which '
                                                 'produces no model'), "a teacher must be a model")
        bad["stages"][2]["teacher"] = "no-such-model"
        st, out, _ = request(a, "POST", "/v1/pipelines", bad, key=ctx.admin, timeout=60)
        eq(st, 400, "an unknown teacher %r" % (out,))
        assert 'teacher "no-such-model" is neither' in out["error"]["message"], out
        run = create(ctx, a, {"pipeline": spec, "base_model": "tiny", "name": "gensft"})
        out = wait_status(ctx, a, run["id"], ("succeeded", "failed"))
        eq(out["status"], "succeeded", "generate -> sft run: %r" % (out.get("error"),))
        # the import follows the stage's event, which may be in the batch that ends the run
        by_name = lambda r: {s["name"]: s for s in r["stages"]}
        wait_for(lambda: by_name(run_get(ctx, a, run["id"]))["gen"]["dataset"], timeout=30, step=0.5)
        stages = by_name(run_get(ctx, a, run["id"]))
        eq((stages["gen"]["model"], stages["tune"]["model"], stages["kd"]["model"]),
           (None, "gensft/tune", "gensft/kd"), "which stages are models")
        did = stages["gen"]["dataset"]
        assert did and did.startswith("ds-"), stages["gen"]
        st, ds, _ = request(a, "GET", "/v1/datasets/" + did, key=ctx.read)
        eq(st, 200, "the stage's dataset: %r" % (ds,))
        with open(os.path.join(ctx.data, "data", "rl.jsonl")) as f:
            prompts = sum(1 for line in f if line.strip())
        eq((ds["name"], ds["purpose"], ds["rows"]), ("gensft/gen", "sft", 2 * prompts), "dataset record")
        st, rows, _ = request(a, "GET", "/v1/datasets/%s/rows?limit=2" % did, key=ctx.read)
        eq(st, 200, "rows %r" % (rows,))
        first = rows["data"][0]
        assert {"prompt", "completion", "finish_reason", "completion_tokens", "answer"} <= set(first), first
    check("a generate stage's dataset joins the catalog; sft and distill stages train on it", stage_dataset)

    def integrations_through_a_run():
        # MLflow and the webhook fed by a real run (the fakes check payloads as the real ones do)
        import test_integrations as ti
        ml, hooks = ti.FakeMlflow(), ti.Hooks("s3cret")
        httpd, url = ti.start_http(ml, hooks)
        try:
            run = create(ctx, a, {"pipeline": pipeline(name="integ"), "base_model": "tiny", "name": "integ",
                                  "integrations": ti.cfg(url, url)})
            st, got, _ = request(a, "GET", "/v1/runs/" + run["id"], key=ctx.read)
            eq(got.get("integrations", {}).get("webhook", {}).get("secret"), "***", "secrets redacted")
            done = wait_status(ctx, a, run["id"], ("succeeded", "failed", "cancelled"))
            eq(done["status"], "succeeded", "final status")
            assert wait_for(lambda: [d["body"]["status"] for d in hooks.delivered()] == ["running", "succeeded"],
                            30), [d["body"] for d in hooks.delivered()]
            assert all(r["valid"] for r in hooks.received), "a webhook signature did not verify"
            eq(hooks.delivered()[-1]["body"]["run_id"], run["id"], "webhook run id")
            assert wait_for(lambda: any(r["status"] == "FINISHED" for r in ml.runs.values()), 30), ml.runs
            eq(len(ml.runs), 1, "one MLflow run")
            mrun = list(ml.runs.values())[0]
            n_values = int(ctx.pg.psql("SELECT count(*) FROM run_metrics WHERE run_id = '%s'" % run["id"]))
            eq(len(mrun["metrics"]), n_values, "every metric value reached MLflow")
            assert any(m["key"].endswith("reward") and m["step"] == 4 for m in mrun["metrics"]), mrun["metrics"][:5]
            assert mrun["params"], "params logged"
            eq(ml.rejected, [], "payloads MLflow would refuse")
        finally:
            httpd.shutdown()
    check("a run's MLflow tracking and signed webhook, end to end", integrations_through_a_run)

    def queued_cancel_and_stage_base():
        # blocks the only slot so the next one stays queued
        long = create(ctx, a, {"pipeline": pipeline(steps=500, checkpoint_every=1), "base_model": "tiny",
                               "name": "long"})
        ctx.long = long["id"]
        q = create(ctx, a, {"pipeline": pipeline(), "base_model": "flow/rl", "name": "from-flow"})
        eq(q["status"], "queued", "second run waits")
        st, out, _ = request(a, "POST", "/v1/runs/from-flow/cancel", key=ctx.admin)
        eq(st, 200, "cancel queued %r" % (out,))
        eq(out["status"], "cancelled", "cancelled at once")
        eq(statuses(events(ctx, q["id"])), ["queued", "cancelled"], "events")
        st, out, _ = request(a, "POST", "/v1/runs/from-flow/cancel", key=ctx.admin)
        eq(st, 409, "cancel twice")
    check("a finished run's stage is a base model; a queued run cancels at once", queued_cancel_and_stage_base)

    def running_cancel():
        rid = ctx.long
        assert wait_for(lambda: ctx.pg.psql("SELECT count(*) FROM run_checkpoints WHERE run_id = '%s'" % rid)
                        not in ("", "0"), timeout=120), "no checkpoint"
        st, out, _ = request(a, "POST", "/v1/runs/%s/cancel" % rid, key=ctx.admin)
        eq(st, 202, "cancel running %r" % (out,))
        done = wait_status(ctx, a, rid, ("cancelled", "failed", "succeeded"), timeout=60)
        eq(done["status"], "cancelled", "status %r" % (done,))
        evs = events(ctx, rid)
        eq(statuses(evs)[-1], "cancelled", "final event")
        assert done["resume_from"], "a checkpoint to resume from: %r" % (done,)
        if ctx.safe_stop:
            d = [d for _, t, d in evs if t == "done"]
            assert d and d[-1]["status"] == "cancelled" and d[-1].get("checkpoint"), d
    check("cancel a running run: SIGTERM, cancelled, checkpoint kept", running_cancel)

    def kill9():
        run = create(ctx, a, {"pipeline": pipeline(steps=500, checkpoint_every=1), "base_model": "tiny",
                              "name": "killed"})
        rid = run["id"]
        assert wait_for(lambda: ctx.pg.psql("SELECT count(*) FROM run_checkpoints WHERE run_id = '%s'" % rid)
                        not in ("", "0") and train_pids(a), timeout=120), "no checkpoint"
        os.kill(train_pids(a)[0], 9)
        done = wait_status(ctx, a, run["id"], ("failed", "succeeded", "cancelled"), timeout=60)
        eq(done["status"], "failed", "status")
        assert "signal 9" in done["error"], done["error"]
        eq(statuses(events(ctx, run["id"]))[-1], "failed", "final event")
    check("kill -9 of the engine: failed, with the cause", kill9)

    def auto_resume():
        run = create(ctx, a, {"pipeline": pipeline(steps=6, checkpoint_every=1), "base_model": "tiny",
                              "name": "phoenix", "auto_resume": True})
        rid = run["id"]
        assert wait_for(lambda: ctx.pg.psql("SELECT count(*) FROM run_checkpoints WHERE run_id = '%s'" % rid)
                        not in ("", "0") and train_pids(a), timeout=120), "no checkpoint"
        os.kill(train_pids(a)[0], 9)
        assert wait_for(lambda: run_get(ctx, a, rid)["attempt"] >= 2, timeout=60), "not restarted"
        evs = events(ctx, rid)
        sts = [d for _, t, d in evs if t == "status"]
        q = [d for d in sts[1:] if d["status"] == "queued"]
        assert q and "automatic resume" in q[0]["message"] and "signal 9" in q[0]["message"], sts
        if ctx.resume:
            done = wait_status(ctx, a, rid, ("succeeded", "failed"), timeout=180)
            eq(done["status"], "succeeded", "resumed run %r" % (done,))
            dup = ctx.pg.psql("SELECT count(*) FROM (SELECT stage, name, step FROM run_metrics WHERE"
                              " run_id = '%s' GROUP BY 1, 2, 3 HAVING count(*) > 1) d" % rid)
            eq(dup, "0", "no duplicated metric")
            steps = ctx.pg.psql("SELECT string_agg(step::text, ',' ORDER BY step) FROM run_metrics WHERE"
                                " run_id = '%s' AND name = 'reward'" % rid)
            eq(steps, "1,2,3,4,5,6", "every step once")
        else:
            print("     (engine has no --resume yet: resumed attempts fail; checked the re-queue only)")
            wait_status(ctx, a, rid, ("failed", "succeeded"), timeout=120)
    check("kill -9 with auto_resume: re-queued from the last checkpoint", auto_resume)

    def manual_resume():
        st, out, _ = request(a, "POST", "/v1/runs/killed/resume", key=ctx.admin)
        try:
            eq(st, 202, "resume %r" % (out,))
            eq(out["status"] in ("queued", "running"), True, "re-queued")
            assert out["resume_from"], out
            assert wait_for(lambda: run_get(ctx, a, "killed")["attempt"] >= 2, timeout=60)
            st, out, _ = request(a, "POST", "/v1/runs/flow/resume", key=ctx.admin)
            eq(st, 409, "a succeeded run does not resume")
        finally:
            request(a, "POST", "/v1/runs/killed/cancel", key=ctx.admin)
            wait_status(ctx, a, "killed", ("cancelled", "failed", "succeeded"), timeout=60)
    check("resume a failed run: re-queued with --resume <last checkpoint>", manual_resume)

    def two_servers():
        b = Server(ctx.args.server, ctx.pg.url, ctx.data, ctx.args.engine, extra=["--max-runs", "1"])
        ctx.b = b
        ids = [create(ctx, a, {"pipeline": pipeline(steps=1, checkpoint_every=0), "base_model": "tiny",
                               "name": "pair-%d" % i})["id"] for i in range(4)]
        for rid in ids:
            wait_status(ctx, a, rid, ("succeeded", "failed"), timeout=240)
        claimers = set()
        for rid in ids:
            r = run_get(ctx, a, rid)
            eq(r["status"], "succeeded", "status %r" % (r,))
            eq(r["attempt"], 1, "run once")
            sts = [d for _, t, d in events(ctx, rid) if t == "status"]
            eq([d["status"] for d in sts], ["queued", "running", "succeeded"], "one start")
            claimers.add(sts[1]["message"].split(" on ")[1])
        print("     servers that ran the 4 runs: %d" % len(claimers))
    check("two servers on one database never run a run twice", two_servers)

    def server_killed():
        run = create(ctx, a, {"pipeline": pipeline(steps=6, checkpoint_every=1), "base_model": "tiny",
                              "name": "orphan"})
        rid = run["id"]
        owner = None

        def running_somewhere():
            nonlocal owner
            for s in (a, ctx.b):
                if train_pids(s) and ctx.pg.psql("SELECT count(*) FROM run_checkpoints WHERE run_id = '%s'"
                                                 % rid) not in ("", "0"):
                    owner = s
                    return True
            return False
        assert wait_for(running_somewhere, timeout=120), "never ran"
        other = ctx.b if owner is a else a
        owner.stop(sig=9)
        # the other server takes it over once the lease lapses
        r = wait_for(lambda: run_get(ctx, other, rid)["attempt"] >= 2 and run_get(ctx, other, rid), timeout=60)
        assert r, "not taken over: %r" % (run_get(ctx, other, rid),)
        sts = [d for _, t, d in events(ctx, rid) if t == "status"]
        assert any(d["status"] == "queued" and "lease" in d.get("message", "") for d in sts), sts
        evs = events(ctx, rid)
        eq([e[0] for e in evs], list(range(1, len(evs) + 1)), "gapless seq across servers")
        dup = ctx.pg.psql("SELECT count(*) FROM (SELECT stage, name, step FROM run_metrics WHERE"
                          " run_id = '%s' GROUP BY 1, 2, 3 HAVING count(*) > 1) d" % rid)
        eq(dup, "0", "no duplicated metric")
        if owner is a:
            ctx.a = other
        if ctx.resume:
            done = wait_status(ctx, other, rid, ("succeeded", "failed"), timeout=180)
            eq(done["status"], "succeeded", "after takeover %r" % (done,))
    check("a server killed mid-run: another takes the run over from its checkpoint", server_killed)


def main():
    args = script_args()
    base = make_tempdir()
    ctx = Ctx()
    ctx.args = args
    ctx.b = None
    ctx.a = None
    ctx.pg = None
    ctx.resume = engine_supports(args.engine, "--resume")
    ctx.safe_stop = ctx.resume
    try:
        ctx.pg = Postgres(base)
        ctx.data = tiny_training_data(args.engine, base)
        ctx.admin = create_key(args.server, ctx.pg.url, "admin", "admin")
        ctx.read = create_key(args.server, ctx.pg.url, "read", "read")
        ctx.a = Server(args.server, ctx.pg.url, ctx.data, args.engine, extra=["--max-runs", "1"])
        checks(ctx)
    except Exception as e:
        results["failed"] += 1
        print("FAIL harness: %s" % e)
        traceback.print_exc()
    return finish("runs", base, ctx.pg, (ctx.a, ctx.b), ok=(0, -9))


if __name__ == "__main__":
    sys.exit(main())
