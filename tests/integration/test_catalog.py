#!/usr/bin/env python3
"""tests/integration/test_catalog.py — the training catalog over HTTP
against a real PostgreSQL: dataset uploads (raw, multipart, chunked, one
past the size limit), their row checks per purpose, listing, rows and
deletion; reward specs and their scoring dry run; pipeline definitions (the
DAG, catalog references, parameter types from `aha-engine train --check`);
API-key scopes. After every refused upload the data directory must hold no
partial file. Prints `catalog: N passed, M failed` last.

usage: test_catalog.py [--server build/aha-server-san] [--engine build/aha-engine]"""
import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ROOT, Postgres, Server, check, create_key, eq, finish, make_tempdir,  # noqa: E402
                     request, results, script_args)

FAKE = os.path.join(ROOT, "tests", "integration", "fake_engine.py")
MAX_UPLOAD = 8192


def err_of(body, status, st, code=None):
    assert st == status, "expected %d, got %d: %r" % (status, st, body)
    assert isinstance(body, dict) and "error" in body, "not an OpenAI error: %r" % (body,)
    e = body["error"]
    for k in ("message", "type", "param", "code"):
        assert k in e, "error lacks %r: %r" % (k, e)
    if code is not None:
        eq(e["code"], code, "error code (%s)" % e["message"])
    return e


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def multipart(fields, boundary="aha-test-boundary-7f3c"):
    """fields: list of (name, value bytes, filename or None), in order."""
    out = b""
    for name, value, filename in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        out += b"Content-Disposition: " + disp.encode() + b"\r\n"
        if filename:
            out += b"Content-Type: application/jsonl\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, "multipart/form-data; boundary=" + boundary


def upload(srv, key, data, purpose="sft", name=None, ctype="application/jsonl"):
    q = "/v1/datasets"
    args = []
    if purpose is not None:
        args.append("purpose=" + purpose)
    if name is not None:
        args.append("name=" + name)
    if args:
        q += "?" + "&".join(args)
    return request(srv, "POST", q, raw=data, key=key, headers={"Content-Type": ctype})


def upload_chunked(srv, key, data, piece, purpose="sft"):
    """Sends the body with Transfer-Encoding: chunked in `piece`-byte chunks."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    chunks = (data[i:i + piece] for i in range(0, len(data), piece))
    c.request("POST", "/v1/datasets?purpose=" + purpose, body=chunks, encode_chunked=True,
              headers={"Authorization": "Bearer " + key, "Content-Type": "application/x-ndjson"})
    r = c.getresponse()
    body = json.loads(r.read().decode())
    c.close()
    return r.status, body


SFT_ROWS = [{"prompt": "2+2?", "completion": "4"},
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]},
            {"prompt": "3+3?", "completion": "6", "source": "arith"}]
RL_ROWS = [{"prompt": "What is %d + %d?" % (i, i), "answer": str(2 * i)} for i in range(5)]
REWARD = {"name": "r1-math", "components": [
    {"type": "accuracy", "weight": 1.0, "extract": "answer_tag", "reference": "answer"},
    {"type": "format", "weight": 0.5, "template": "think_answer"}]}


def run_checks(srv, pg, data, keys, real_check):
    admin, read = keys["admin"], keys["read"]
    ds_dir = os.path.join(data, "datasets")

    def clean():
        left = [f for f in os.listdir(ds_dir) if not (f.endswith(".jsonl") and len(f) == 70)] \
            if os.path.isdir(ds_dir) else []
        eq(left, [], "partial files left in datasets/")

    ids = {}

    # ---- datasets: uploads ----

    def raw_upload():
        body = jsonl(SFT_ROWS)
        st, ds, _ = upload(srv, admin, body, "sft", "arith-sft")
        eq(st, 201, "status %r" % (ds,))
        sha = hashlib.sha256(body).hexdigest()
        eq(ds["object"], "dataset", "object")
        assert ds["id"].startswith("ds-"), ds["id"]
        eq((ds["name"], ds["purpose"], ds["sha256"], ds["rows"], ds["bytes"]),
           ("arith-sft", "sft", sha, 3, len(body)), "fields")
        f = ds["fields"]
        eq(f["prompt"]["count"], 2, "prompt count")
        eq(f["prompt"]["types"], {"string": 2}, "prompt types")
        eq(f["prompt"]["mean_length"], 4.0, "prompt mean length")
        eq(f["messages"]["mean_items"], 3.0, "messages mean items")
        eq(f["source"]["count"], 1, "extra field kept")
        assert isinstance(ds["created_at"], int)
        with open(os.path.join(ds_dir, sha + ".jsonl"), "rb") as fh:
            eq(fh.read(), body, "stored bytes")
        ids["sft"] = ds["id"]
        clean()
    check("raw JSONL upload: 201, sha256, rows, field statistics, file by checksum", raw_upload)

    def reupload():
        st, ds, _ = upload(srv, admin, jsonl(SFT_ROWS), "sft", "another-name")
        eq(st, 200, "status")
        eq(ds["id"], ids.get("sft"), "same dataset")
        eq(ds["name"], "arith-sft", "first name kept")
        eq(pg.psql("SELECT count(*) FROM datasets WHERE purpose = 'sft'"), "1", "rows in db")
        # the same bytes for another purpose are another dataset sharing the file
        st, ds2, _ = upload(srv, admin, jsonl(SFT_ROWS), "eval")
        eq(st, 201, "the same bytes as eval rows %r" % (ds2,))
        assert ds2["id"] != ids.get("sft")
        eq(ds2["sha256"], hashlib.sha256(jsonl(SFT_ROWS)).hexdigest(), "one file")
        clean()
    check("re-upload of the same bytes returns the same dataset (200)", reupload)

    def multipart_upload():
        body = jsonl(RL_ROWS)
        # purpose after the file part: the rows are checked once the body is in
        form, ctype = multipart([("file", body, "arith-rl.jsonl"), ("purpose", b"rl", None)])
        st, ds, _ = request(srv, "POST", "/v1/datasets", raw=form, key=admin,
                            headers={"Content-Type": ctype})
        eq(st, 201, "status %r" % (ds,))
        eq((ds["name"], ds["purpose"], ds["rows"], ds["sha256"]),
           ("arith-rl.jsonl", "rl", 5, hashlib.sha256(body).hexdigest()), "dataset")
        ids["rl"] = ds["id"]
        form, ctype = multipart([("purpose", b"eval", None), ("name", b"arith-test", None),
                                 ("file", body, "x.jsonl")])
        st, ds, _ = request(srv, "POST", "/v1/datasets", raw=form, key=admin,
                            headers={"Content-Type": ctype})
        eq(st, 201, "eval status %r" % (ds,))
        eq((ds["name"], ds["purpose"]), ("arith-test", "eval"), "eval dataset")
        ids["eval"] = ds["id"]
        clean()
    check("multipart upload (file, purpose, name in any order)", multipart_upload)

    def multipart_errors():
        body = jsonl(RL_ROWS[:1])
        for fields, code, param in [
                ([("file", body, "a.jsonl")], "missing_required_parameter", "purpose"),
                ([("purpose", b"rl", None)], "missing_required_parameter", "file"),
                ([("file", body, "a.jsonl"), ("purpose", b"dpo", None)], "invalid_value", "purpose"),
                ([("file", body, "a.jsonl"), ("purpose", b"rl", None), ("color", b"red", None)],
                 "invalid_multipart", None),
                ([("file", body, "a.jsonl"), ("file", body, "b.jsonl"), ("purpose", b"rl", None)],
                 "invalid_multipart", None)]:
            form, ctype = multipart(fields)
            st, b, _ = request(srv, "POST", "/v1/datasets", raw=form, key=admin,
                               headers={"Content-Type": ctype})
            e = err_of(b, 400, st, code)
            eq(e["param"], param, "param for %r" % (fields,))
        clean()
    check("multipart: missing or bad purpose, missing file, unknown field -> 400", multipart_errors)

    def request_errors():
        st, b, _ = upload(srv, admin, jsonl(SFT_ROWS), None)
        eq(err_of(b, 400, st, "missing_required_parameter")["param"], "purpose", "param")
        st, b, _ = upload(srv, admin, jsonl(SFT_ROWS), "dpo")
        assert "dpo" in err_of(b, 400, st, "invalid_value")["message"]
        st, b, _ = upload(srv, admin, jsonl(SFT_ROWS), "sft", ctype="text/csv")
        err_of(b, 415, st, "unsupported_media_type")
        st, b, _ = upload(srv, admin, b"", "sft")
        eq(err_of(b, 400, st, "empty_file")["message"], "the file is empty", "message")
        st, b, _ = upload(srv, admin, b"\n  \n\n", "sft")
        err_of(b, 400, st, "empty_file")
        clean()
    check("upload request errors: purpose, Content-Type (415), empty file", request_errors)

    def row_errors(purpose, lines, expect):
        body = "".join(l + "\n" for l in lines).encode()
        st, b, _ = upload(srv, admin, body, purpose)
        e = err_of(b, 400, st, "invalid_dataset")
        eq(e["param"], "file", "param")
        got = [(x["line"], x.get("field")) for x in e["errors"]]
        eq(got, expect, "%s errors (%s)" % (purpose, e["message"]))
        assert ("line %d" % expect[0][0]) in e["message"], e["message"]
        eq(e["more_errors"], 0, "more")
        clean()

    check("pretrain rows: text missing / not a string / bad JSON, with line numbers",
          lambda: row_errors("pretrain", ['{"text": "ok"}', '{"txt": "a"}', '', '{"text": 3}',
                                          '{"text": "broken', '[1, 2]', '{"text": "fine"}'],
                             [(2, "text"), (4, "text"), (5, None), (6, None)]))
    check("sft rows: prompt/completion, messages roles, an assistant turn",
          lambda: row_errors("sft", [
              '{"prompt": "a", "completion": "b"}',
              '{"prompt": "a"}',
              '{"messages": [{"role": "user", "content": "hi"}]}',
              '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
              '{"messages": []}',
              '{"completion": "b"}',
              '{"prompt": 1, "completion": "b"}',
              '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'],
              [(2, "completion"), (3, "messages"), (4, "messages"), (5, "messages"), (6, "prompt"),
               (7, "prompt")]))
    for purpose in ("rl", "eval"):
        check("%s rows: prompt or messages required, answer a string or number" % purpose,
              lambda purpose=purpose: row_errors(purpose, [
                  '{"prompt": "1+1?", "answer": "2"}',
                  '{"question": "1+1?", "answer": "2"}',
                  '{"prompt": ["x"]}',
                  '{"messages": [{"role": "user", "content": "1+1?"}], "answer": 2}',
                  '{"prompt": "q", "answer": {"x": 1}}',
                  '{"messages": "hi"}',
                  '{"prompt": "q", "numbers": [1, 2], "target": 3}'],
                  [(2, "prompt"), (3, "prompt"), (5, "answer"), (6, "messages")]))

    def many_errors():
        body = jsonl([{"nope": i} for i in range(30)])
        st, b, _ = upload(srv, admin, body, "pretrain")
        e = err_of(b, 400, st, "invalid_dataset")
        eq(len(e["errors"]), 20, "listed")
        eq(e["more_errors"], 10, "counted")
        eq(e["errors"][19]["line"], 20, "last listed line")
        assert "30 invalid rows" in e["message"] and "and 27 more" in e["message"], e["message"]
        clean()
    check("more than 20 bad rows: 20 listed, the rest counted", many_errors)

    def chunked():
        rows = [{"prompt": "q%d " % i + "x" * (i * 7 % 50), "answer": str(i)} for i in range(40)]
        body = jsonl(rows)
        st, ds = upload_chunked(srv, admin, body, 7, "rl")
        eq(st, 201, "status %r" % (ds,))
        eq((ds["rows"], ds["sha256"]), (40, hashlib.sha256(body).hexdigest()), "rows, sha")
        # a bad line split across chunks is still reported at its line
        bad = jsonl(rows[:9]) + b'{"answer": "no prompt here"}\n' + jsonl(rows[9:12])
        st, b = upload_chunked(srv, admin, bad, 5, "rl")
        e = err_of(b, 400, st, "invalid_dataset")
        eq([(x["line"], x["field"]) for x in e["errors"]], [(10, "prompt")], "line")
        clean()
    check("chunked upload in 7-byte pieces: lines split across chunks", chunked)

    def too_large():
        row = b'{"text": "' + b"a" * 100 + b'"}\n'
        body = row * (MAX_UPLOAD // len(row))
        body += b'{"text": "' + b"b" * (MAX_UPLOAD - len(body) - 13) + b'"}\n'
        eq(len(body), MAX_UPLOAD, "at the limit")
        st, ds, _ = upload(srv, admin, body, "pretrain")
        eq(st, 201, "exactly the limit %r" % (ds,))
        over = body + b"\n"  # one byte past (a blank line)
        st, b, _ = upload(srv, admin, over, "pretrain")
        err_of(b, 413, st, "file_too_large")
        clean()
        st, b = upload_chunked(srv, admin, over, 1000, "pretrain")  # no Content-Length
        err_of(b, 413, st, "file_too_large")
        clean()
        form, ctype = multipart([("purpose", b"pretrain", None), ("file", over, "big.jsonl")])
        st, b, _ = request(srv, "POST", "/v1/datasets", raw=form, key=admin, headers={"Content-Type": ctype})
        err_of(b, 413, st, "file_too_large")
        clean()
        eq(pg.psql("SELECT count(*) FROM datasets WHERE bytes > %d" % MAX_UPLOAD), "0", "no row")
    check("upload limit: exactly --max-upload stored, one byte past 413, no file left", too_large)

    def aborted():
        import socket
        sock = socket.create_connection((srv.host, srv.port))
        sock.sendall(("POST /v1/datasets?purpose=rl HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/jsonl\r\nContent-Length: 4000\r\n\r\n" % admin).encode()
                     + jsonl(RL_ROWS))
        time.sleep(0.3)
        parts = [f for f in os.listdir(ds_dir) if f.endswith(".part")]
        eq(len(parts), 1, "the upload in progress has its temporary file")
        sock.close()
        deadline = time.time() + 10
        while time.time() < deadline and any(f.endswith(".part") for f in os.listdir(ds_dir)):
            time.sleep(0.1)
        clean()
    check("a client that goes away mid-upload leaves no file", aborted)

    # ---- datasets: catalog ----

    def list_get():
        st, lst, _ = request(srv, "GET", "/v1/datasets", key=read)
        eq(st, 200, "list")
        eq(lst["object"], "list", "object")
        assert len(lst["data"]) >= 4, lst
        eq(lst["data"][0]["id"], lst["first_id"], "first_id")
        st, page, _ = request(srv, "GET", "/v1/datasets?limit=1", key=read)
        eq((len(page["data"]), page["has_more"]), (1, True), "page 1")
        st, page2, _ = request(srv, "GET", "/v1/datasets?limit=1&after=" + page["last_id"], key=read)
        eq(page2["data"][0]["id"], lst["data"][1]["id"], "page 2")
        st, rl, _ = request(srv, "GET", "/v1/datasets?purpose=rl", key=read)
        assert rl["data"] and all(d["purpose"] == "rl" for d in rl["data"]), rl
        st, b, _ = request(srv, "GET", "/v1/datasets?purpose=dpo", key=read)
        err_of(b, 400, st, "invalid_value")
        st, b, _ = request(srv, "GET", "/v1/datasets?limit=0", key=read)
        err_of(b, 400, st, "invalid_value")
        st, ds, _ = request(srv, "GET", "/v1/datasets/" + ids["sft"], key=read)
        eq((st, ds["id"], ds["rows"]), (200, ids["sft"], 3), "get")
        st, b, _ = request(srv, "GET", "/v1/datasets/ds-nope", key=read)
        err_of(b, 404, st, "dataset_not_found")
    check("list (limit, after, purpose), get, unknown id 404", list_get)

    def rows():
        st, r, _ = request(srv, "GET", "/v1/datasets/%s/rows" % ids["rl"], key=read)
        eq(st, 200, "rows")
        eq(r["data"], RL_ROWS, "all rows")
        eq((r["total"], r["has_more"]), (5, False), "total")
        st, r, _ = request(srv, "GET", "/v1/datasets/%s/rows?offset=1&limit=2" % ids["rl"], key=read)
        eq(r["data"], RL_ROWS[1:3], "offset 1 limit 2")
        eq(r["has_more"], True, "more")
        st, r, _ = request(srv, "GET", "/v1/datasets/%s/rows?offset=10" % ids["rl"], key=read)
        eq(r["data"], [], "past the end")
        st, b, _ = request(srv, "GET", "/v1/datasets/%s/rows?limit=101" % ids["rl"], key=read)
        err_of(b, 400, st, "invalid_value")
        st, b, _ = request(srv, "GET", "/v1/datasets/ds-nope/rows", key=read)
        err_of(b, 404, st, "dataset_not_found")
    check("rows with offset and limit", rows)

    def delete():
        body = jsonl([{"text": "delete me"}])
        st, ds, _ = upload(srv, admin, body, "pretrain")
        eq(st, 201, "upload")
        path = os.path.join(ds_dir, ds["sha256"] + ".jsonl")
        pg.psql("INSERT INTO runs (id, name, pipeline_id, spec, dataset_ids, status) VALUES "
                "('run-t1', 'r1', 'pl-x', '{}', ARRAY['%s'], 'running')" % ds["id"])
        st, b, _ = request(srv, "DELETE", "/v1/datasets/" + ds["id"], key=admin)
        err_of(b, 409, st, "dataset_in_use")
        assert os.path.exists(path)
        pg.psql("UPDATE runs SET status = 'succeeded' WHERE id = 'run-t1'")
        st, b, _ = request(srv, "DELETE", "/v1/datasets/" + ds["id"], key=admin)
        eq((st, b), (200, {"id": ds["id"], "object": "dataset", "deleted": True}), "deleted")
        assert not os.path.exists(path), "file still there"
        st, b, _ = request(srv, "DELETE", "/v1/datasets/" + ds["id"], key=admin)
        err_of(b, 404, st, "dataset_not_found")
        # bytes shared by two datasets (two purposes) stay until the last goes
        st, a, _ = upload(srv, admin, jsonl(RL_ROWS), "rl")
        eq((st, a["id"]), (200, ids["rl"]), "rl again")
        request(srv, "DELETE", "/v1/datasets/" + ids["eval"], key=admin)
        assert os.path.exists(os.path.join(ds_dir, a["sha256"] + ".jsonl")), "shared file removed"
    check("delete: 409 while a running run reads it, then row and file go", delete)

    # ---- rewards ----

    def reward_create():
        st, rw, _ = request(srv, "POST", "/v1/rewards", REWARD, key=admin)
        eq(st, 201, "status %r" % (rw,))
        assert rw["id"].startswith("rw-")
        eq((rw["object"], rw["name"], rw["components"], rw["spec"]),
           ("reward", "r1-math", ["accuracy", "format"], REWARD), "reward")
        ids["reward"] = rw["id"]
        st, got, _ = request(srv, "GET", "/v1/rewards/" + rw["id"], key=read)
        eq((st, got), (200, rw), "get")
        st, lst, _ = request(srv, "GET", "/v1/rewards", key=read)
        eq(lst["data"][0]["id"], rw["id"], "listed")
        st, b, _ = request(srv, "GET", "/v1/rewards/rw-nope", key=read)
        err_of(b, 404, st, "reward_not_found")
    check("reward spec: create, get, list", reward_create)

    def reward_bad():
        bad = {"components": [{"type": "accuracy"}, {"type": "format", "weight": "high"}]}
        st, b, _ = request(srv, "POST", "/v1/rewards", bad, key=admin)
        e = err_of(b, 400, st, "invalid_reward_spec")
        assert "components[1].weight" in e["message"], e["message"]
        eq(e["param"], "components[1].weight", "param")
        st, b, _ = request(srv, "POST", "/v1/rewards", {"components": [{"type": "telepathy"}]}, key=admin)
        assert "components[0]" in err_of(b, 400, st, "invalid_reward_spec")["message"]
        st, b, _ = request(srv, "POST", "/v1/rewards", raw=b"[1,", key=admin)
        err_of(b, 400, st, "invalid_json")
    check("bad reward spec: 400 naming the JSON path", reward_bad)

    def reward_score():
        items = [{"prompt": "2+2?", "completion": "<think>\neasy\n</think>\n<answer>\n4\n</answer>",
                  "answer": "4"},
                 {"prompt": "2+3?", "completion": "<answer>6</answer>", "answer": "5"}]
        st, r, _ = request(srv, "POST", "/v1/rewards/%s/score" % ids["reward"], {"items": items}, key=admin)
        eq(st, 200, "status %r" % (r,))
        eq((r["object"], r["reward_id"], r["components"]), ("reward.score", ids["reward"],
                                                             ["accuracy", "format"]), "shape")
        eq(r["results"][0]["rewards"], {"accuracy": 1.0, "format": 1.0}, "item 0")
        eq(r["results"][0]["total"], 1.5, "total 0")
        eq(r["results"][1]["rewards"]["accuracy"], 0.0, "item 1 accuracy")
        eq(r["results"][1]["excluded"], False, "excluded")
        st, b, _ = request(srv, "POST", "/v1/rewards/%s/score" % ids["reward"],
                           {"items": [{"completion": "<answer>4</answer>"}]}, key=admin)
        assert "answer" in err_of(b, 400, st, "invalid_value")["message"]
        st, b, _ = request(srv, "POST", "/v1/rewards/%s/score" % ids["reward"],
                           {"items": [items[0]] * 65}, key=admin)
        err_of(b, 400, st, "invalid_value")
        st, b, _ = request(srv, "POST", "/v1/rewards/%s/score" % ids["reward"],
                           {"items": [{"prompt": "x"}]}, key=admin)
        assert "items[0].completion" in err_of(b, 400, st, "invalid_value")["message"]
        st, b, _ = request(srv, "POST", "/v1/rewards/rw-nope/score", {"items": items}, key=admin)
        err_of(b, 404, st, "reward_not_found")
    check("reward score dry run: totals, per component, bounded items", reward_score)

    # ---- pipelines ----

    def pipeline(name, stages, base="tiny"):
        spec = {"name": name, "stages": stages}
        if base:
            spec["base_model"] = base
        return spec

    def rl_stage(**kw):
        s = {"name": "rl", "kind": "grpo", "model": "$base", "dataset": ids.get("rl"),
             "reward": ids.get("reward"), "params": {"steps": 2, "learning_rate": 1e-5}}
        s.update(kw)
        return s

    def pipeline_create():
        spec = pipeline("r1-zero", [rl_stage(), {"name": "eval", "kind": "eval", "model": "rl",
                                                 "dataset": ids["rl"], "reward": REWARD}])
        st, pl, _ = request(srv, "POST", "/v1/pipelines", spec, key=admin)
        eq(st, 201, "status %r" % (pl,))
        assert pl["id"].startswith("pl-")
        eq((pl["object"], pl["name"], pl["spec"]), ("pipeline", "r1-zero", spec), "pipeline")
        eq(pl["stages"], [{"name": "rl", "kind": "grpo"}, {"name": "eval", "kind": "eval"}], "stages")
        ids["pipeline"] = pl["id"]
        for ref in (pl["id"], "r1-zero"):
            st, got, _ = request(srv, "GET", "/v1/pipelines/" + ref, key=read)
            eq((st, got["id"]), (200, pl["id"]), "get by " + ref)
        st, lst, _ = request(srv, "GET", "/v1/pipelines", key=read)
        eq(lst["data"][0]["id"], pl["id"], "listed")
        st, b, _ = request(srv, "POST", "/v1/pipelines", spec, key=admin)
        eq(err_of(b, 409, st, "pipeline_exists")["param"], "name", "param")
        st, b, _ = request(srv, "GET", "/v1/pipelines/nope", key=read)
        err_of(b, 404, st, "pipeline_not_found")
    check("pipeline: create, get by id and by name, list, duplicate name 409", pipeline_create)

    def pipeline_bad(spec, needle):
        st, b, _ = request(srv, "POST", "/v1/pipelines", spec, key=admin)
        e = err_of(b, 400, st, "invalid_pipeline")
        assert needle in e["message"], "%r not in %r" % (needle, e["message"])

    check("pipeline: a cycle between stages is refused", lambda: pipeline_bad(
        pipeline("cyc", [{"name": "a", "kind": "sft", "model": "b", "dataset": ids["sft"]},
                         {"name": "b", "kind": "sft", "model": "a", "dataset": ids["sft"]}]),
        'the stages "a" "b" reference each other in a cycle'))
    check("pipeline: a self-reference is a cycle", lambda: pipeline_bad(
        pipeline("self", [{"name": "a", "kind": "sft", "model": "a", "dataset": ids["sft"]}]), "cycle"))
    check("pipeline: an unknown stage/model reference", lambda: pipeline_bad(
        pipeline("ref", [rl_stage(model="warmup")]), 'model "warmup" is neither'))
    check("pipeline: a model from a stage that makes none", lambda: pipeline_bad(
        pipeline("ev", [{"name": "e", "kind": "eval", "model": "$base", "dataset": ids["rl"], "reward": REWARD},
                        rl_stage(model="e")]), "produces no model"))
    check("pipeline: an unknown dataset id", lambda: pipeline_bad(
        pipeline("ds", [rl_stage(dataset="ds-000000000000000000000000")], ), 'dataset "ds-000000000000000000000000"'))
    check("pipeline: an unknown reward id", lambda: pipeline_bad(
        pipeline("rw", [rl_stage(reward="rw-nope")]), 'reward "rw-nope" is not a stored reward'))
    check("pipeline: a bad inline reward names its path", lambda: pipeline_bad(
        pipeline("rw2", [rl_stage(reward={"components": [{"type": "format", "weight": "x"}]})]),
        'stage "rl": field "reward": reward spec: components[0].weight'))
    check("pipeline: an unknown base model", lambda: pipeline_bad(
        pipeline("bm", [rl_stage()], base="no-such-model"), 'base_model "no-such-model"'))
    check("pipeline: duplicate stage names", lambda: pipeline_bad(
        pipeline("dup", [rl_stage(), rl_stage()]), "duplicate stage name"))

    def not_object():
        st, b, _ = request(srv, "POST", "/v1/pipelines", [1], key=admin)
        err_of(b, 400, st, "invalid_json")
    check("pipeline: the body must be an object", not_object)

    check("pipeline: parameter types are checked by aha-engine train --check", lambda: pipeline_bad(
        pipeline("types", [rl_stage(params={"learning_rate": "fast"})]),
        'stage "rl": params.learning_rate: expected a number'))
    check("pipeline: unknown kinds are checked by the engine", lambda: pipeline_bad(
        pipeline("kinds", [rl_stage(kind="telekinesis")]), "telekinesis"))

    def engine_broken():
        st, b, _ = request(srv, "POST", "/v1/pipelines", pipeline("stub-broken", [rl_stage()]), key=admin)
        e = err_of(b, 502, st, "engine_check_failed")
        assert "exit status 2: train: something broke" in e["message"], e["message"]
        st, b, _ = request(srv, "GET", "/v1/pipelines/stub-broken", key=admin)
        eq(st, 404, "not stored")
    if not real_check:
        check("pipeline: an engine that cannot check -> 502 with its last stderr line", engine_broken)

    # ---- scopes ----

    def scopes():
        for path, body in (("/v1/rewards", REWARD), ("/v1/pipelines", {"name": "x"})):
            st, b, _ = request(srv, "POST", path, body, key=read)
            err_of(b, 403, st, "insufficient_scope")
            st, b, _ = request(srv, "POST", path, body)
            err_of(b, 401, st, "missing_api_key")
        st, b, _ = upload(srv, read, jsonl(SFT_ROWS), "sft")
        err_of(b, 403, st, "insufficient_scope")
        st, b, _ = upload(srv, None, jsonl(SFT_ROWS), "sft")
        err_of(b, 401, st, "missing_api_key")
        st, b, _ = request(srv, "DELETE", "/v1/datasets/" + ids["sft"], key=read)
        err_of(b, 403, st, "insufficient_scope")
        st, b, _ = request(srv, "POST", "/v1/rewards/%s/score" % ids["reward"], {"items": []}, key=read)
        err_of(b, 403, st, "insufficient_scope")
        for path in ("/v1/datasets", "/v1/rewards", "/v1/pipelines"):
            st, _, _ = request(srv, "GET", path, key=read)
            eq(st, 200, "read " + path)
            st, b, _ = request(srv, "GET", path)
            err_of(b, 401, st, "missing_api_key")
        clean()
    check("scopes: a read key lists and gets but cannot POST or DELETE", scopes)

    def methods():
        st, b, _ = request(srv, "PUT", "/v1/datasets", key=admin, raw=b"")
        err_of(b, 405, st, "method_not_allowed")
        st, b, _ = request(srv, "DELETE", "/v1/pipelines/" + ids["pipeline"], key=admin)
        err_of(b, 405, st, "method_not_allowed")
        st, b, _ = request(srv, "GET", "/v1/datasets/%s/columns" % ids["sft"], key=admin)
        err_of(b, 404, st, "not_found")
    check("other methods and sub-paths: 405 / 404", methods)


# Stands in for `aha-engine train --check --spec -` (same contract: one
# line {"ok":...} on stdout, exit 0/1) until the engine has it.
CHECK_STUB = r"""
import json, sys
assert sys.argv[1:] == ["train", "--check", "--spec", "-"], sys.argv
spec = json.load(sys.stdin)
if spec["name"] == "stub-broken":  # an engine that cannot answer
    sys.stderr.write("aha-engine: backend banner\ntrain: something broke\n")
    sys.exit(2)
for s in spec["stages"]:
    if s["kind"] not in ("pretrain", "sft", "grpo", "eval"):
        print(json.dumps({"ok": False, "error": 'stage "%s": unknown kind "%s"' % (s["name"], s["kind"])}))
        sys.exit(1)
    lr = s.get("params", {}).get("learning_rate", 0)
    if not isinstance(lr, (int, float)):
        print(json.dumps({"ok": False, "error": 'stage "%s": params.learning_rate: expected a number' % s["name"]}))
        sys.exit(1)
print(json.dumps({"ok": True}))
"""


def catalog_api(server, pg, base, data, engine):
    """Links tests/integration/test_catalog_api.c with the sanitized
    server's objects (all but main.o) and runs it on this database."""
    sobj = os.path.join(os.path.dirname(server), "san")
    objs = [os.path.join(d, f) for d in (os.path.join(sobj, "server"), os.path.join(sobj, "engine"))
            for f in sorted(os.listdir(d)) if f.endswith(".o") and f != "main.o"
            and (d.endswith("server") or f.startswith("rewards") or f == "errmsg.o")]
    exe = os.path.join(base, "test_catalog_api")
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", "-I" + os.path.join(ROOT, "server"),
                    "-I" + os.path.join(ROOT, "engine"), os.path.join(ROOT, "tests/integration/test_catalog_api.c")]
                   + objs + ["-o", exe, "-lmicrohttpd", "-ljansson", "-lpq", "-lcrypto", "-lpcre2-8",
                             "-lutf8proc", "-lcurl", "-lpthread", "-lm"], check=True)
    good, bad = os.path.join(base, "good.jsonl"), os.path.join(base, "bad.jsonl")
    with open(good, "wb") as f:
        f.write(jsonl([{"prompt": "imported %d" % i, "answer": str(i)} for i in range(3)]))
    with open(bad, "wb") as f:
        f.write(jsonl([{"prompt": "ok"}, {"answer": "no prompt"}]))
    r = subprocess.run([exe, pg.url, data, engine, good, bad], capture_output=True, text=True,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    assert r.returncode == 0, r.stdout + r.stderr
    left = [f for f in os.listdir(os.path.join(data, "datasets")) if f.endswith(".part")]
    eq(left, [], "partial files after imports")


def engine_has_check(engine):
    try:
        r = subprocess.run([engine, "train", "--check", "--spec", "-"], input="{}",
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    try:
        return "ok" in json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False


def main():
    args = script_args()
    base = make_tempdir()
    pg = None
    srv = None
    try:
        pg = Postgres(base)
        data = os.path.join(base, "data")
        os.makedirs(os.path.join(data, "models", "tiny"))
        with open(os.path.join(data, "models", "tiny", "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 128}, f)
        # The scripted fake engine serves; `train` goes to the real engine
        # (or, until it has `train --check`, to a stub that accepts).
        real_check = engine_has_check(args.engine)
        if not real_check:
            print("note: %s has no `train --check` yet; a stub answers it" % args.engine)
            with open(os.path.join(base, "check_stub.py"), "w") as f:
                f.write(CHECK_STUB)
        wrapper = os.path.join(base, "engine.sh")
        with open(wrapper, "w") as f:
            train = 'exec "%s" "$@"' % args.engine if real_check else \
                'exec /usr/bin/python3 "%s" "$@"' % os.path.join(base, "check_stub.py")
            f.write('#!/bin/sh\nif [ "$1" = train ]; then %s; fi\nexec "%s" "$@"\n' % (train, FAKE))
        os.chmod(wrapper, 0o755)
        keys = {s: create_key(args.server, pg.url, s + "-key", s) for s in ("admin", "read")}
        srv = Server(args.server, pg.url, data, wrapper, extra=["--max-upload", str(MAX_UPLOAD)])
        run_checks(srv, pg, data, keys, real_check)
        check("C interface for runs: import, lookups, idempotent templates",
              lambda: catalog_api(args.server, pg, base, data, wrapper))
    except Exception as e:
        results["failed"] += 1
        print("FAIL harness: %s" % e)
        traceback.print_exc()
    finally:
        if srv:
            code = srv.stop()
            log = srv.log_text()
            check("server exits cleanly on SIGTERM", lambda: eq(code, 0, "exit code"))
            check("no sanitizer reports in the server log",
                  lambda: eq([l for l in log.splitlines() if "Sanitizer" in l or "runtime error" in l],
                             [], "sanitizer lines"))
    return finish("catalog", base, pg, [])


if __name__ == "__main__":
    sys.exit(main())
