#!/usr/bin/env python3
"""tests/integration/fake_engine.py — a scripted stand-in for `aha-engine serve`
speaking the NDJSON protocol of api/engine-protocol.md, so the server's HTTP,
streaming, reasoning-split and supervisor paths are tested without a model.
Not a model: the output is chosen by keywords in the prompt.

Keywords (in the prompt or the last message):
  CRASH      two tokens, then the process exits (the engine dies mid-stream)
  SLOW x     one token every x seconds (default 0.3), 40 tokens
  NOTHINK    an answer without <think> tags
  PREFILL    reasoning without the opening tag (the template prefilled it)
  FAIL       an error event (code context_length_exceeded)
  COUNT      tokens "t0 ", "t1 ", ... until max_tokens
  LATE x     the first token only after x seconds
  NUL        tokens "a", NUL, "b": text breaking the protocol's no-NUL rule
  GARBLE     one token, then a token line cut short (not JSON), then more
             tokens every 0.2 s until cancelled
  TOOLCALL   reasoning, text, a <tool_call> block split across tokens, a
             block that is not a call, text (Qwen's tool calls)
  TOOLFORCED the one {"name", "arguments"} object of a forced call
A request with "enable_thinking": false answers as NOTHINK does.
otherwise    "<think>Let me think</think>\\n\\nThe answer is 4." split so that
             both tags straddle tokens.
Every line received is appended to $FAKE_ENGINE_LOG when set; with
$FAKE_ENGINE_READY_DELAY=x the "ready" line comes only after x seconds (a
slow start-up: a large backend, a loaded host)."""
import json
import os
import re
import select
import sys
import time

DEFAULT = ["<th", "ink>", "Let me", " think", "</th", "ink>", "\n\nThe", " answer", " is 4."]
NOTHINK = ["The", " answer", " is", " 4."]
PREFILL = ["Let me", " think", "</think>", "\n\nOK"]
TOOLCALL = ["<think>weather", " tool</think>", "\n\nChecking.", "\n<tool", "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool", "_call>", "\n<tool_call>\n{bad}\n</tool_call>", " <tool",
            " done."]
TOOLFORCED = ["{\"name\": \"get_", "weather\", \"arguments\": ", "{\"city\": \"Rome\"}}"]
log_path = os.environ.get("FAKE_ENGINE_LOG")
out = sys.stdout


def emit(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def log(line):
    if log_path:
        with open(log_path, "a") as f:
            f.write(line if line.endswith("\n") else line + "\n")


def prompt_text(msg):
    if "messages" in msg:
        for m in msg["messages"]:
            if "reasoning_content" in m:
                return "REASONING_LEAK"
        return msg["messages"][-1].get("content") or ""
    if "prompt" in msg:
        return msg["prompt"]
    return " ".join(str(i) for i in msg.get("prompt_ids", []))


class Gen:
    def __init__(self, msg, index):
        self.id = msg["id"]
        self.index = index
        self.text = prompt_text(msg)
        self.max_tokens = msg.get("max_tokens", 64)
        self.logprobs = msg.get("logprobs")
        self.prompt_logprobs = msg.get("prompt_logprobs")
        self.delay = 0.0
        m = re.search(r"SLOW ?([0-9.]+)?", self.text)
        if m:
            self.delay = float(m.group(1) or 0.3)
            self.tokens = ["s%d " % i for i in range(40)]
        elif "COUNT" in self.text:
            self.tokens = ["t%d " % i for i in range(10000)]
        elif "NOTHINK" in self.text:
            self.tokens = NOTHINK
        elif "PREFILL" in self.text:
            self.tokens = PREFILL
        elif "TOOLFORCED" in self.text:
            self.tokens = TOOLFORCED
        elif "TOOLCALL" in self.text:
            self.tokens = TOOLCALL
        elif "NUL" in self.text:
            self.tokens = ["a", "\0", "b"]
        elif "GARBLE" in self.text:
            self.delay = 0.2
            self.tokens = ["g%d " % i for i in range(100)]
        elif msg.get("enable_thinking") is False:
            self.tokens = NOTHINK
        else:
            self.tokens = DEFAULT
        self.crash = "CRASH" in self.text
        self.fail = "FAIL" in self.text or self.text == "REASONING_LEAK"
        self.pos = 0
        self.next_at = time.monotonic()
        m = re.search(r"LATE ([0-9.]+)", self.text)
        if m:  # a long queue or prefill: the first token comes late
            self.next_at += float(m.group(1))
        self.prompt_tokens = max(1, len(self.text.split()))

    def step(self):
        """Emits at most one event; returns False when finished."""
        if self.fail:
            emit({"type": "error", "id": self.id,
                  "message": "generate: prompt has 999 tokens, more than the context" if self.text != "REASONING_LEAK"
                  else "reasoning_content reached the engine"})
            return False
        if time.monotonic() < self.next_at:
            return True
        if self.crash and self.pos == 2:
            os._exit(3)
        if self.pos >= min(len(self.tokens), self.max_tokens):
            if self.prompt_logprobs is not None and self.pos == 0 and self.index == 0:
                n = len(self.text.split(" "))
                ev = {"type": "prompt_logprobs", "id": self.id, "tokens": list(range(100, 100 + n)),
                      "logprobs": [None] + [-1.0] * (n - 1)}
                if self.prompt_logprobs > 0:
                    ev["top_logprobs"] = [None] + [[{"token_id": 7, "logprob": -0.1}]] * (n - 1)
                emit(ev)
            done = {"type": "done", "id": self.id, "index": self.index,
                    "finish_reason": "length" if self.pos < len(self.tokens) else "stop",
                    "text": "".join(self.tokens[:self.pos]), "tokens": list(range(self.pos)),
                    "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.pos,
                              "total_tokens": self.prompt_tokens + self.pos}}
            emit(done)
            return False
        tok = self.tokens[self.pos]
        if "GARBLE" in self.text and self.pos == 1:
            out.write('{"type":"token","id":"%s","index":%d,"text":"g1\n' % (self.id, self.index))
            out.flush()
            self.pos += 1
            self.next_at = time.monotonic() + self.delay
            return True
        ev = {"type": "token", "id": self.id, "index": self.index, "text": tok, "token_id": self.pos,
              "logprob": -0.5}
        if self.logprobs:
            ev["top_logprobs"] = [{"token_id": k, "logprob": -0.5 - k} for k in range(self.logprobs)]
        emit(ev)
        self.pos += 1
        self.next_at = time.monotonic() + self.delay
        return True


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        sys.stderr.write("fake_engine: usage: fake_engine.py serve\n")
        return 2
    time.sleep(float(os.environ.get("FAKE_ENGINE_READY_DELAY") or 0))
    emit({"type": "ready", "protocol": 1, "backend": "fake"})
    gens = {}
    loaded = {}
    buf = b""
    fd = sys.stdin.fileno()
    while True:
        timeout = 0 if any(g.delay == 0 for g in gens.values()) else (0.05 if gens else None)
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                log(line.decode())
                msg = json.loads(line)
                t = msg.get("type")
                if t == "generate" and msg.get("model") not in loaded:
                    emit({"type": "error", "id": msg["id"],
                          "message": 'generate: model "%s" is not loaded' % msg.get("model")})
                elif t == "generate":
                    for i in range(msg.get("n", 1)):
                        gens[(msg["id"], i)] = Gen(msg, i)
                elif t == "cancel":
                    keys = [k for k in gens if k[0] == msg["id"]]
                    for k in keys:
                        g = gens.pop(k)
                        emit({"type": "done", "id": g.id, "index": g.index, "finish_reason": "cancelled",
                              "text": "", "tokens": [], "usage": {"prompt_tokens": 1,
                              "completion_tokens": g.pos, "total_tokens": 1 + g.pos}})
                    if not keys:
                        emit({"type": "error", "id": msg["id"], "message": "cancel: no request in flight"})
                elif t == "load":
                    with open(os.path.join(msg["path"], "config.json")) as f:
                        cfg = json.load(f)
                    if cfg.get("fail_load"):
                        emit({"type": "error", "id": msg["id"],
                              "message": "load: model.safetensors: tensor \"lm_head.weight\" is missing"})
                    else:
                        loaded[msg["model"]] = msg
                        emit({"type": "loaded", "id": msg["id"], "model": msg["model"],
                              "max_position_embeddings": 128})
                elif t == "unload":
                    loaded.pop(msg.get("model"), None)
                    emit({"type": "unloaded", "id": msg.get("id"), "model": msg.get("model")})
                elif t == "stats":
                    emit({"type": "stats", "id": msg.get("id"), "running": len(gens)})
                else:
                    emit({"type": "error", "id": msg.get("id"), "message": "unknown type %r" % t})
        for key in list(gens):
            g = gens.get(key)
            if g and not g.step():
                if g.fail:  # one error answers the whole request
                    for k in [k for k in gens if k[0] == g.id]:
                        del gens[k]
                else:
                    del gens[key]


if __name__ == "__main__":
    sys.exit(main())
