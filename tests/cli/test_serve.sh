#!/usr/bin/env bash
# `aha-engine serve` (engine/serve.c, api/engine-protocol.md): drives the
# NDJSON protocol through a pipe. Bad lines (malformed JSON, unknown types,
# wrong field types, oversized lines, unknown protocol versions) each get an
# error event and the engine keeps serving; generate streams token events
# then done; n samples; stop strings; cancel frees KV memory; requests too
# big for the KV memory are refused; several models resident; clean exit
# at end of input.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-build/aha-engine-san}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$ENGINE" datagen arithmetic --n 50 --seed 1 --format text --out "$tmp/d.jsonl" 2>/dev/null
"$ENGINE" pretrain --config tiny --data "$tmp/d.jsonl" --steps 1 --batch 1 --seq-len 8 --out "$tmp/m" >/dev/null 2>&1
# a checkpoint stored in BF16 (dtype auto serves it in bf16)
mkdir "$tmp/b"
cp tests/ref/fixtures/qwen2-tied/config.json "$tmp/b/"
cp tests/ref/fixtures/qwen2-tied/model-bf16.safetensors "$tmp/b/model.safetensors"
/usr/bin/python3 - "$ENGINE" "$tmp/m" "$tmp/b" tests/ref/fixtures/qwen2-tied/model.safetensors <<'PY'
import json, re, select, subprocess, sys, time

engine, model, bf16_model, f32_fixture = sys.argv[1:5]
p = subprocess.Popen([engine, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
passed = failed = 0
buf = b""

def send(obj):
    line = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
    if isinstance(line, str): line = line.encode()
    p.stdin.write(line + b"\n"); p.stdin.flush()

def recv(timeout=60):
    global buf
    end = time.time() + timeout
    while b"\n" not in buf:
        r, _, _ = select.select([p.stdout], [], [], max(0, end - time.time()))
        if not r: raise TimeoutError("no event within %ss" % timeout)
        chunk = p.stdout.read1(65536)
        if not chunk: raise EOFError("engine closed stdout (exit %s)" % p.poll())
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    return json.loads(line)

def until(pred, timeout=60):
    """Events up to and including the first one satisfying pred."""
    evs = []
    while True:
        e = recv(timeout); evs.append(e)
        if pred(e): return evs

def check(name, cond, detail=""):
    global passed, failed
    if cond: passed += 1
    else:
        failed += 1; print("FAIL:", name, detail)

def done_all(rid, n):
    evs, seen = [], 0
    while seen < n:
        e = recv(); evs.append(e)
        if e.get("type") == "done" and e.get("id") == rid: seen += 1
    return evs

def alive():
    send({"type": "stats", "id": "alive"})
    e = until(lambda e: e.get("id") == "alive")[-1]
    return e["type"] == "stats"

ev = recv()
check("ready", ev == {**ev, "type": "ready", "protocol": 1}, ev)
send({"type": "load", "id": "l1", "model": "tiny", "path": model, "kv_memory_mb": 4})
ev = recv()
check("loaded", ev.get("type") == "loaded" and ev.get("id") == "l1" and ev.get("kv_blocks", 0) > 0
      and ev.get("kv_dtype") == "f16" and ev.get("dtype") == "f32" and ev.get("prefix_cache") is True, ev)
blocks_f16 = ev.get("kv_blocks", 0)
send({"type": "hello", "id": "h"})
check("hello", recv() == {"type": "hello", "id": "h", "protocol": 1})

# bad lines: each an error event, engine alive after
bad = [
    ("malformed", '{"type": "generate", "id": ', None, "malformed JSON"),
    ("not an object", '[1, 2]', None, "JSON object"),
    ("unknown type", {"type": "fly", "id": "u"}, "u", "unknown request type"),
    ("type not string", {"type": 3, "id": "t"}, "t", "\"type\""),
    ("id not string", {"type": "stats", "id": 5}, None, "\"id\""),
    ("max_tokens type", {"type": "generate", "id": "g", "prompt": "1", "max_tokens": "x"}, "g", "max_tokens"),
    ("temperature type", {"type": "generate", "id": "g", "prompt": "1", "temperature": "hot"}, "g", "temperature"),
    ("temperature range", {"type": "generate", "id": "g", "prompt": "1", "temperature": -1}, "g", "temperature"),
    ("prompt type", {"type": "generate", "id": "g", "prompt": 5}, "g", "prompt"),
    ("two prompts", {"type": "generate", "id": "g", "prompt": "1", "prompt_ids": [1]}, "g", "exactly one"),
    ("prompt id range", {"type": "generate", "id": "g", "prompt_ids": [1, 100000]}, "g", "prompt_ids[1]"),
    ("stop type", {"type": "generate", "id": "g", "prompt": "1", "stop": [1]}, "g", "stop[0]"),
    ("unknown model", {"type": "generate", "id": "g", "model": "nope", "prompt": "1"}, "g", "not loaded"),
    ("protocol", {"type": "stats", "id": "v", "protocol": 2}, "v", "protocol version"),
    ("no id", {"type": "generate", "prompt": "1"}, None, "\"id\""),
    ("cancel unknown", {"type": "cancel", "id": "zz"}, "zz", "no request"),
    ("load bad path", {"type": "load", "id": "lb", "model": "x", "path": "/nonexistent"}, "lb", "config.json"),
    ("load twice", {"type": "load", "id": "l2", "model": "tiny", "path": model}, "l2", "already loaded"),
    ("load kv_dtype", {"type": "load", "id": "lk", "model": "k", "path": model, "kv_dtype": "bf16"}, "lk", "kv_dtype"),
    ("load dtype", {"type": "load", "id": "ld", "model": "k", "path": model, "dtype": "f16"}, "ld", "field \"dtype\""),
    ("load dtype type", {"type": "load", "id": "ld", "model": "k", "path": model, "dtype": 16}, "ld", "\"dtype\""),
    ("oversized", '{"type":"stats","pad":"' + "x" * (1 << 20) + '"}', None, "exceeds"),
]
for name, line, rid, want in bad:
    send(line)
    ev = recv()
    check(name, ev.get("type") == "error" and want in ev.get("message", "") and ev.get("id") == rid, ev)
check("alive after bad lines", alive())

# generate: streamed tokens then done, text = concatenation
send({"type": "generate", "id": "c1", "prompt": "12+7=", "max_tokens": 6, "seed": 7,
      "ignore_eos": True, "logprobs": 2})
evs = until(lambda e: e.get("type") == "done")
toks = [e for e in evs if e["type"] == "token"]
done = evs[-1]
check("tokens streamed", len(toks) == 6 and all(e["id"] == "c1" and e["index"] == 0 for e in toks), evs)
check("top_logprobs", all(len(e["top_logprobs"]) == 2 for e in toks), toks[:1])
check("done", done["id"] == "c1" and done["finish_reason"] == "length" and
      done["tokens"] == [e["token_id"] for e in toks] and
      done["usage"]["completion_tokens"] == 6 and done["usage"]["prompt_tokens"] == 5 and
      done["text"] == "".join(e["text"] for e in toks) and len(done["logprobs"]) == 6, done)

# n samples with a seed; not streamed; prompt logprobs
send({"type": "generate", "id": "c2", "prompt_ids": [49, 50, 43, 51], "max_tokens": 5, "n": 3,
      "seed": 7, "ignore_eos": True, "stream": False, "prompt_logprobs": 1})
evs = done_all("c2", 3)
dones = sorted((e for e in evs if e["type"] == "done"), key=lambda e: e["index"])
pl = [e for e in evs if e["type"] == "prompt_logprobs"]
check("n=3", [d["index"] for d in dones] == [0, 1, 2] and all(len(d["tokens"]) == 5 for d in dones), evs)
check("stream false", not any(e["type"] == "token" for e in evs), evs)
check("prompt_logprobs", len(pl) == 1 and pl[0]["logprobs"][0] is None and len(pl[0]["logprobs"]) == 4
      and len(pl[0]["top_logprobs"][1]) == 1, pl)

# logit_bias: +100 on token 65 makes it every greedy choice; bad entries
# are refused naming the field
send({"type": "generate", "id": "lb", "prompt": "1+1=", "max_tokens": 4, "temperature": 0,
      "ignore_eos": True, "logit_bias": {"65": 100}})
d = until(lambda e: e.get("type") == "done" and e.get("id") == "lb")[-1]
check("logit_bias", d["tokens"] == [65] * 4, d)
for name, bias, want in [("logit_bias key", {"x": 1}, "key \"x\""),
                         ("logit_bias id", {"100000": 1}, "token id"),
                         ("logit_bias value", {"65": 200}, "[-100, 100]"),
                         ("logit_bias type", [65], "expected an object")]:
    send({"type": "generate", "id": "lbx", "prompt": "1", "logit_bias": bias})
    ev = recv()
    check(name, ev.get("type") == "error" and ev.get("id") == "lbx" and "logit_bias" in ev.get("message", "")
          and want in ev.get("message", ""), ev)

# json_object: the output is one JSON object, ended as soon as it is whole
send({"type": "generate", "id": "js", "messages": [{"role": "user", "content": "JSON"}], "max_tokens": 8,
      "json_object": True, "logit_bias": {"123": 100, "125": 100}})
d = until(lambda e: e.get("type") == "done" and e.get("id") == "js")[-1]
check("json_object forced {}", d["text"] == "{}" and d["finish_reason"] == "stop", d)
send({"type": "generate", "id": "js2", "prompt": "1+1=", "max_tokens": 48, "json_object": True, "seed": 5, "n": 4})
for d in [e for e in done_all("js2", 4) if e.get("type") == "done"]:
    ok = d["text"].startswith("{") and (d["finish_reason"] == "length" or isinstance(json.loads(d["text"]), dict))
    check("json_object sample %d" % d["index"], ok, d)
# json_schema: every sample is exactly an object of the schema
schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 22]}},
          "required": ["ok"]}
send({"type": "generate", "id": "sc", "prompt": "1+1=", "max_tokens": 300, "n": 3, "seed": 2,
      "json_schema": schema})
def parsed(d):
    """The done event's text as JSON, or None."""
    try:
        return json.loads(d["text"])
    except ValueError:
        return None

for d in [e for e in done_all("sc", 3) if e.get("type") == "done"]:
    o = parsed(d)
    check("json_schema sample %d" % d["index"], d["finish_reason"] == "stop" and isinstance(o, dict) and
          list(o)[:1] == ["ok"] and isinstance(o["ok"], bool) and set(o) <= {"ok", "n"} and
          o.get("n", 1) in (1, 22), d)
# string patterns, formats and lengths, number bounds, array sizes
schema = {"type": "object", "additionalProperties": False,
          "required": ["code", "day", "nick", "p", "k", "a"],
          "properties": {"code": {"type": "string", "pattern": "^[a-c]{1,3}(-[0-9]{2})?$"},
                         "day": {"type": "string", "format": "date"},
                         "nick": {"type": "string", "minLength": 2, "maxLength": 5},
                         "p": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 2},
                         "k": {"type": "integer", "exclusiveMinimum": 3, "maximum": 12},
                         "a": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                               "minItems": 2, "maxItems": 3}}}
send({"type": "generate", "id": "sk", "prompt": "1+1=", "max_tokens": 600, "n": 2, "seed": 3,
      "json_schema": schema})
for d in [e for e in done_all("sk", 2) if e.get("type") == "done"]:
    o = parsed(d)
    ok = d["finish_reason"] == "stop" and isinstance(o, dict) and set(o) == set(schema["required"])
    ok = ok and re.search("^[a-c]{1,3}(-[0-9]{2})?$", o["code"], re.ASCII) is not None
    ok = ok and re.search("^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", o["day"]) is not None
    ok = ok and 2 <= len(o["nick"]) <= 5 and -1.5 <= o["p"] < 2 and type(o["k"]) is int and 3 < o["k"] <= 12
    ok = ok and 2 <= len(o["a"]) <= 3 and all(type(x) is int and 0 <= x <= 9 for x in o["a"])
    check("json_schema keywords sample %d" % d["index"], ok, d)
send({"type": "generate", "id": "scx", "prompt": "1",
      "json_schema": {"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}})
ev = recv()
check("json_schema refused", ev.get("type") == "error" and "properties.a" in ev.get("message", "") and
      "multipleOf" in ev.get("message", ""), ev)
send({"type": "generate", "id": "scp", "prompt": "1",
      "json_schema": {"type": "object", "properties": {"b": {"type": "string", "pattern": "(a"}}}})
ev = recv()
check("json_schema bad pattern", ev.get("type") == "error" and
      "properties.b: \"pattern\" at byte 0: a group without its ')'" in ev.get("message", ""), ev)
# tools: the model with the qwen3 template (byte-level tokens, so any text
# encodes); a forced call is an object of its function's parameters
import shutil
shutil.copytree(model, model + "-q3")
open(model + "-q3/chat_template.name", "w").write("qwen3")
send({"type": "load", "id": "lq", "model": "tq", "path": model + "-q3", "kv_memory_mb": 8})
check("qwen3 copy loaded", recv().get("type") == "loaded")
tools = [{"type": "function", "function": {"name": "get_weather", "description": "today's",
          "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "days"],
                         "properties": {"city": {"type": "string", "maxLength": 8},
                                        "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}},
         {"type": "function", "function": {"name": "noop"}}]
msgs = [{"role": "user", "content": "Weather?"}]
send({"type": "generate", "id": "tn", "model": "tq", "messages": msgs, "tools": tools, "seed": 1,
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 600})
send({"type": "generate", "id": "tr", "model": "tq", "messages": msgs, "tools": tools, "seed": 1,
      "tool_choice": "required", "max_tokens": 600})
dones = {}
while len(dones) < 2:
    e = recv()
    if e.get("type") in ("done", "error"): dones[e.get("id")] = e
for rid in ("tn", "tr"):
    d = dones.get(rid, {})
    o = parsed(d) if d.get("type") == "done" else {}
    o = o or {}
    a = o.get("arguments")
    ok = d["finish_reason"] == "stop" and list(o) == ["name", "arguments"] and isinstance(a, dict)
    if rid == "tn":
        ok = ok and o["name"] == "get_weather" and set(a) == {"city", "days"} and len(a["city"]) <= 8
        ok = ok and type(a["days"]) is int and 1 <= a["days"] <= 7
    check("tool_choice %s: one call of the schema" % rid, ok and o["name"] in ("get_weather", "noop"), d)
send({"type": "generate", "id": "ta", "model": "tq", "messages": msgs, "tools": tools, "max_tokens": 4})
check("tools, tool_choice auto: generated", any(e.get("type") == "done" for e in done_all("ta", 1)))
for rid, req, want in [
        ("tb1", {"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         'no tool is named "nope"'),
        ("tb2", {"tools": tools, "tool_choice": "maybe"}, 'field "tool_choice": expected'),
        ("tb3", {"tool_choice": "required"}, '"tool_choice": needs "tools"'),
        ("tb4", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}}}],
            "tool_choice": "required"}, 'properties.arguments.properties.a: keyword "multipleOf"'),
        ("tb5", {"tools": [{"type": "x"}]}, 'field "tools[0]": expected'),
        ("tb6", {"tools": tools, "tool_choice": "required", "json_object": True}, "cannot go with")]:
    send({"type": "generate", "id": rid, "model": "tq", "messages": msgs, **req})
    ev = recv()
    check("tools refused: " + rid, ev.get("type") == "error" and want in ev.get("message", ""), ev)
send({"type": "generate", "id": "tb7", "model": "tiny", "messages": msgs, "tools": tools})
ev = recv()
check("tools need a template with tool calls", ev.get("type") == "error" and
      "the plain chat template has no tool calls" in ev.get("message", ""), ev)
# enable_thinking false (vLLM's chat_template_kwargs): the prompt ends in
# Qwen3's empty reasoning block, as JSON mode's does
pt = {}
for rid, extra in (("et1", {}), ("et0", {"enable_thinking": False}), ("etj", {"json_object": True})):
    send({"type": "generate", "id": rid, "model": "tq", "messages": msgs, "max_tokens": 1, **extra})
    pt[rid] = [e for e in done_all(rid, 1) if e.get("type") == "done"][0]["usage"]["prompt_tokens"]
check("enable_thinking false: the empty reasoning block", pt["et0"] == pt["etj"] > pt["et1"], pt)
send({"type": "generate", "id": "etb", "model": "tq", "messages": msgs, "enable_thinking": "no"})
ev = recv()
check("enable_thinking: a boolean", ev.get("type") == "error" and 'field "enable_thinking"' in ev.get("message", ""), ev)
send({"type": "unload", "id": "uq", "model": "tq"})
check("qwen3 copy unloaded", recv().get("type") == "unloaded")
send({"type": "generate", "id": "jsx", "prompt": "1", "json_object": "yes"})
ev = recv()
check("json_object type", ev.get("type") == "error" and "\"json_object\"" in ev.get("message", ""), ev)

# stop string spanning tokens: cut from the text, finish_reason stop
send({"type": "generate", "id": "f", "prompt": "1+1=", "max_tokens": 24, "temperature": 0, "ignore_eos": True})
evs = until(lambda e: e.get("type") == "done")
pieces = [e["text"] for e in evs if e["type"] == "token"]
full = evs[-1]["text"]
i = next((i for i in range(1, len(pieces) - 1) if pieces[i] and pieces[i + 1]), None)
if i is None:
    check("stop string (no two text pieces to test with)", True)
else:
    stop = pieces[i] + pieces[i + 1]
    send({"type": "generate", "id": "s", "prompt": "1+1=", "max_tokens": 24, "temperature": 0,
          "ignore_eos": True, "stop": [stop, "\u00ff\u00fe"]})
    evs = until(lambda e: e.get("type") == "done")
    d = evs[-1]
    want = full[:full.index(stop)]
    check("stop string", d["finish_reason"] == "stop" and d["text"] == want and
          "".join(e["text"] for e in evs if e["type"] == "token") == want, (stop, full, d))

# refusal: a request larger than the KV memory; engine keeps serving
send({"type": "generate", "id": "big", "prompt": "1", "max_tokens": 100000, "n": 4})
ev = recv()
check("refused", ev.get("type") == "error" and ev.get("id") == "big" and "KV blocks" in ev.get("message", ""), ev)

# cancel mid-generation frees the KV memory
send({"type": "generate", "id": "long", "prompt": "1", "max_tokens": 500, "ignore_eos": True})
until(lambda e: e.get("type") == "token" and e.get("id") == "long")
send({"type": "stats", "id": "st1"})
st = until(lambda e: e.get("id") == "st1")[-1]
check("stats while running", st["models"][0]["active"] == 1 and st["models"][0]["kv_blocks_used"] > 0, st)
send({"type": "cancel", "id": "long"})
d = until(lambda e: e.get("type") == "done" and e.get("id") == "long")[-1]
check("cancelled", d["finish_reason"] == "cancelled", d)
send({"type": "stats", "id": "st2"})
st = until(lambda e: e.get("id") == "st2")[-1]["models"][0]
check("kv freed", st["kv_blocks_used"] == 0 and st["kv_blocks_reserved"] == 0 and st["active"] == 0, st)

# prefix cache (on by default): the same 40-token prompt again reuses its
# first 2 blocks of 16 and gives the same tokens and logprobs
ids = [(7 * i) % 200 + 40 for i in range(40)]
outs = []
for k in range(2):
    send({"type": "generate", "id": "pc%d" % k, "prompt_ids": ids, "max_tokens": 5, "temperature": 0,
          "ignore_eos": True, "logprobs": 1})
    outs.append(until(lambda e: e.get("type") == "done" and e.get("id") == "pc%d" % k)[-1])
check("prefix cache: cached_tokens", outs[0]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0 and
      outs[1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 32, outs)
check("prefix cache: same output", outs[0]["tokens"] == outs[1]["tokens"] and
      outs[0]["logprobs"] == outs[1]["logprobs"], outs)
send({"type": "stats", "id": "st3"})
st = until(lambda e: e.get("id") == "st3")[-1]["models"][0]
check("prefix cache: stats", st["prefix_cache_hits"] >= 32 and st["prefix_cache_queries"] >= 64 and
      st["kv_blocks_cached"] > 0 and st["kv_blocks_used"] == 0, st)
send({"type": "load", "id": "lp", "model": "nocache", "path": model, "kv_memory_mb": 4,
      "prefix_cache": False})
ev = recv()
check("prefix cache off: loaded", ev.get("type") == "loaded" and ev.get("prefix_cache") is False, ev)
for k in range(2):
    send({"type": "generate", "id": "nc%d" % k, "model": "nocache", "prompt_ids": ids, "max_tokens": 5,
          "temperature": 0, "ignore_eos": True})
    d = until(lambda e: e.get("type") == "done" and e.get("id") == "nc%d" % k)[-1]
check("prefix cache off: nothing cached", d["usage"]["prompt_tokens_details"]["cached_tokens"] == 0 and
      d["tokens"] == outs[0]["tokens"], d)
send({"type": "unload", "id": "up", "model": "nocache"})
check("prefix cache off: unloaded", recv().get("type") == "unloaded")
send({"type": "load", "id": "lq", "model": "q", "path": model, "prefix_cache": "yes"})
ev = recv()
check("prefix_cache type", ev.get("type") == "error" and "\"prefix_cache\"" in ev.get("message", ""), ev)

# speculative decoding, by prompt lookup and with a draft model (the
# model itself): the same tokens and logprobs as the model loaded without
# it, drafts counted in stats; bad settings refused
specs = [({"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 3},
          {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_min": 1, "prompt_lookup_max": 3,
           "max_seqs": 4}),
         ({"model": model, "num_speculative_tokens": 4},
          {"method": "draft_model", "model": model, "num_speculative_tokens": 4, "max_seqs": 4})]
for sk, (spec, echo) in enumerate(specs):
    send({"type": "load", "id": "ls", "model": "spec", "path": model, "kv_memory_mb": 4, "speculative": spec})
    ev = recv()
    check("speculative %d: loaded" % sk, ev.get("type") == "loaded" and ev.get("speculative") == echo, ev)
    reqs = [{"prompt": "12+7=12+7=", "max_tokens": 30, "temperature": 0, "ignore_eos": True,
             "logit_bias": {"49": 100}, "logprobs": 2},
            {"prompt": "12+7=12+7=", "max_tokens": 30, "seed": 4, "n": 2, "ignore_eos": True}]
    for k, rq in enumerate(reqs):
        got = {}
        for mdl in ("tiny", "spec"):
            rid = "sp%d%d%s" % (sk, k, mdl)
            send({"type": "generate", "id": rid, "model": mdl, **rq})
            got[mdl] = sorted((e["index"], e["tokens"], e.get("logprobs")) for e in done_all(rid, rq.get("n", 1))
                              if e.get("type") == "done")
        check("speculative %d: same output %d" % (sk, k),
              got["tiny"] == got["spec"] and len(got["spec"]) == rq.get("n", 1), got)
    send({"type": "stats", "id": "st4"})
    st = [m for m in until(lambda e: e.get("id") == "st4")[-1]["models"] if m["model"] == "spec"][0]
    check("speculative %d: stats" % sk, st["spec_draft_tokens"] > 0 and
          0 < st["spec_accepted_tokens"] <= st["spec_draft_tokens"] and st["preemptions"] == 0, st)
    send({"type": "unload", "id": "us", "model": "spec"})
    check("speculative %d: unloaded" % sk, recv().get("type") == "unloaded")
for bad, want in (({"method": "eagle"}, "\"method\""), ({"num_speculative_tokens": 99}, "num_speculative_tokens"),
                  ({"prompt_lookup_min": 4, "prompt_lookup_max": 2}, "prompt_lookup_min"), (3, "\"speculative\""),
                  ({"method": "draft_model"}, "\"model\""), ({"method": "ngram", "model": model}, "\"model\""),
                  ({"model": model + "/nowhere"}, "draft model:"),
                  ({"model": model, "num_speculative_tokens": 0}, "num_speculative_tokens >= 1")):
    send({"type": "load", "id": "lb", "model": "b", "path": model, "speculative": bad})
    ev = recv()
    check("speculative refused: %s" % bad, ev.get("type") == "error" and want in ev.get("message", ""), ev)

# a second resident model, generate on each, unload one
send({"type": "load", "id": "l3", "model": "second", "path": model, "kv_memory_mb": 4, "kv_dtype": "f32",
      "dtype": "bf16"})
ev = recv()
check("second loaded, fp32 cache: half the blocks; bf16 weights",
      ev.get("type") == "loaded" and ev.get("kv_dtype") == "f32" and ev.get("dtype") == "bf16"
      and ev.get("kv_blocks") == blocks_f16 // 2, ev)
send({"type": "generate", "id": "g1", "prompt": "2", "max_tokens": 3})
ev = recv()
check("model required with two", ev.get("type") == "error" and "model" in ev.get("message", ""), ev)
send({"type": "generate", "id": "g2", "model": "second", "prompt": "2", "max_tokens": 3, "ignore_eos": True})
d = until(lambda e: e.get("type") == "done")[-1]
check("generate on second", d["id"] == "g2" and len(d["tokens"]) == 3, d)
send({"type": "unload", "id": "u", "model": "second"})
check("unloaded", recv() == {"type": "unloaded", "id": "u", "model": "second"})

# an int8 cache (q8): about twice the blocks of f16 in the same memory
send({"type": "load", "id": "l4", "model": "q8", "path": model, "kv_memory_mb": 4, "kv_dtype": "q8"})
ev = recv()
check("q8 cache loaded: more than 1.5x the f16 blocks",
      ev.get("type") == "loaded" and ev.get("kv_dtype") == "q8"
      and ev.get("kv_blocks", 0) > blocks_f16 * 3 // 2, ev)
send({"type": "generate", "id": "g4", "model": "q8", "prompt": "2", "max_tokens": 5, "ignore_eos": True})
d = until(lambda e: e.get("type") == "done")[-1]
check("generate on the q8 cache", d["id"] == "g4" and len(d["tokens"]) == 5, d)
send({"type": "unload", "id": "u4", "model": "q8"})
check("q8 unloaded", recv() == {"type": "unloaded", "id": "u4", "model": "q8"})

# dtype auto: bf16 for the BF16 checkpoint (f32 for the others above),
# unless asked otherwise
send({"type": "load", "id": "lb", "model": "b16", "path": bf16_model, "kv_memory_mb": 4})
ev16 = recv()
check("BF16 checkpoint loaded as bf16", ev16.get("type") == "loaded" and ev16.get("dtype") == "bf16", ev16)
send({"type": "load", "id": "lf", "model": "b32", "path": bf16_model, "kv_memory_mb": 4, "dtype": "f32"})
ev32 = recv()
check("BF16 checkpoint loaded as f32 when asked", ev32.get("type") == "loaded" and ev32.get("dtype") == "f32", ev32)
# the weights are held once: in f32 about their fp32 size (not twice, the
# model's copy and the engine's packed one), in bf16 well under it
import os
f32_bytes = os.path.getsize(f32_fixture)
check("weights held once", 0 < ev32.get("weights_mb", 0) * 1e6 < 1.25 * f32_bytes
      and 0 < ev16.get("weights_mb", 0) < 0.7 * ev32.get("weights_mb", 0), (ev16, ev32, f32_bytes))
send({"type": "generate", "id": "gb", "model": "b16", "prompt_ids": [1, 7, 3], "max_tokens": 4,
      "ignore_eos": True})
d = until(lambda e: e.get("type") == "done")[-1]
check("generate in bf16", d["id"] == "gb" and len(d["tokens"]) == 4, d)
# dtype q8: int8 weights, about 9/32 of the f32 model's, and generation
send({"type": "load", "id": "lq", "model": "w8", "path": bf16_model, "kv_memory_mb": 4, "dtype": "q8"})
evq = recv()
check("loaded with q8 weights", evq.get("type") == "loaded" and evq.get("dtype") == "q8"
      and 0 < evq.get("weights_mb", 0) < 0.5 * ev32.get("weights_mb", 0), (evq, ev32))
send({"type": "generate", "id": "gq", "model": "w8", "prompt_ids": [1, 7, 3], "max_tokens": 4,
      "ignore_eos": True})
d = until(lambda e: e.get("type") == "done")[-1]
check("generate in q8", d["id"] == "gq" and len(d["tokens"]) == 4, d)
# dtype q4: 4-bit weights (no more than q8's bytes, at this tiny size rounded alike)
send({"type": "load", "id": "l4w", "model": "w4", "path": bf16_model, "kv_memory_mb": 4, "dtype": "q4"})
ev4 = recv()
check("loaded with q4 weights", ev4.get("type") == "loaded" and ev4.get("dtype") == "q4"
      and 0 < ev4.get("weights_mb", 0) <= evq.get("weights_mb", 0), (ev4, evq))
send({"type": "generate", "id": "g4w", "model": "w4", "prompt_ids": [1, 7, 3], "max_tokens": 4,
      "ignore_eos": True})
d = until(lambda e: e.get("type") == "done")[-1]
check("generate in q4", d["id"] == "g4w" and len(d["tokens"]) == 4, d)
for name in ("b16", "b32", "w8", "w4"):
    send({"type": "unload", "id": "u" + name, "model": name})
    check("unloaded " + name, recv().get("type") == "unloaded")

# mutated requests: valid generate requests with random edits (fields
# deleted or set to awkward values and wrong types, nested values edited,
# bytes damaged); each is refused with an error naming it or runs to its
# done events, and the engine answers stats after every one (the
# sanitizers abort it on any memory error or overflow)
import copy, random
sys.path.insert(0, "tests/integration")
from harness import damage_bytes, mutate_json
rnd = random.Random(14)
full = {"type": "generate", "model": "tiny", "prompt": "1+2=", "max_tokens": 6, "temperature": 0.7,
        "top_p": 0.9, "top_k": 5, "min_p": 0.01, "seed": 3, "stop": ["x", "yz"], "stop_token_ids": [5],
        "n": 2, "logprobs": 2, "prompt_logprobs": 1, "logit_bias": {"17": 3.5},
        "repetition_penalty": 1.1, "presence_penalty": 0.1, "frequency_penalty": 0.1,
        "ignore_eos": True}
variants = [full, {**{k: v for k, v in full.items() if k != "prompt"}, "prompt_ids": [1, 2, 3]},
            {**{k: v for k, v in full.items() if k != "prompt"}, "messages": [{"role": "user", "content": "hi"}]},
            {**full, "json_object": True},
            {**full, "json_schema": {"type": "object", "properties": {"a": {"type": "integer"}},
                                     "required": ["a"], "additionalProperties": False}}]
answered = errors = dones = 0
for it in range(200):
    req = copy.deepcopy(rnd.choice(variants))
    for _ in range(rnd.randint(1, 3)): req = mutate_json(rnd, req)
    if not isinstance(req, dict): req = {}
    req["type"], req["id"] = "generate", "m%d" % it
    line = json.dumps(req).encode()
    if rnd.random() < 0.2: line = damage_bytes(rnd, line)
    send(line)
    while True:
        send({"type": "stats", "id": "ms"})
        evs = until(lambda e: e.get("id") == "ms" and e.get("type") == "stats")
        errors += sum(e["type"] == "error" for e in evs)
        dones += sum(e["type"] == "done" for e in evs)
        st = evs[-1]["models"][0]
        if not st["active"] and not st["waiting"]: break
    answered += 1
check("mutated requests: the engine answered after each of 200", answered == 200 and alive(), answered)
check("mutated requests: some refused, some ran", errors > 20 and dones > 20, (errors, dones))
check("mutated requests: no KV block left behind", st["kv_blocks_used"] == 0 and st["kv_blocks_reserved"] == 0, st)

# end of input: running requests finish, then a clean exit
send({"type": "generate", "id": "last", "prompt": "3", "max_tokens": 4, "ignore_eos": True})
p.stdin.close()
evs = until(lambda e: e.get("type") == "done" and e.get("id") == "last")
check("finishes at EOF", evs[-1]["usage"]["completion_tokens"] == 4, evs[-1])
rc = p.wait(timeout=60)
check("exit 0", rc == 0, rc)
print("serve: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
