"""Reference fixtures for aha's whole-model tests (forward logits, loss, and
the gradient of every parameter), from a plain-torch re-implementation of
Hugging Face transformers' LlamaForCausalLM and Qwen2ForCausalLM (eager
attention path). Not a training tool; run with /usr/bin/python3 (`make ref`).

The math follows transformers' modeling_llama.py / modeling_qwen2.py and
modeling_rope_utils.py (_compute_default_rope_parameters,
_compute_llama3_parameters), but runs in float64 so the reference is more
accurate than any fp32 implementation under test. Like transformers, inv_freq
is computed in fp32 (then widened); everything after that is float64.

Writes tests/ref/fixtures/<name>/{config.json, model.safetensors,
model-bf16.safetensors, ref.ref} for each fixture in FIXTURES.
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import write_ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures")
DT = torch.float64

FIXTURES = [
    dict(name="qwen2-tied", arch="qwen2", vocab=96, hidden=64, layers=2,
         heads=4, kv_heads=2, head_dim=None, inter=112, tie=True,
         rope_theta=1000000.0, eps=1e-6, T=24, attention_bias=False,
         rope_scaling=None, max_pos=128, seed=1),
    dict(name="llama-gqa", arch="llama", vocab=80, hidden=48, layers=2,
         heads=8, kv_heads=2, head_dim=16, inter=100, tie=False,
         rope_theta=10000.0, eps=1e-5, T=20, attention_bias=False,
         rope_scaling=None, max_pos=128, seed=2),
    dict(name="llama3-scaled", arch="llama", vocab=64, hidden=32, layers=2,
         heads=4, kv_heads=1, head_dim=None, inter=64, tie=False,
         rope_theta=500000.0, eps=1e-5, T=32, attention_bias=True,
         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 16},
         max_pos=128, seed=3),
]


# ---------------------------------------------------------------- config --

def head_dim_of(fx):
    return fx["head_dim"] or fx["hidden"] // fx["heads"]


def hf_config(fx):
    """config.json as transformers (4.4x) writes it for these models."""
    common = {
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": fx["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": fx["inter"],
        "max_position_embeddings": fx["max_pos"],
        "num_attention_heads": fx["heads"],
        "num_hidden_layers": fx["layers"],
        "num_key_value_heads": fx["kv_heads"],
        "rms_norm_eps": fx["eps"],
        "rope_scaling": fx["rope_scaling"],
        "rope_theta": fx["rope_theta"],
        "tie_word_embeddings": fx["tie"],
        "torch_dtype": "float32",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "vocab_size": fx["vocab"],
    }
    if fx["arch"] == "qwen2":
        common.update({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "max_window_layers": fx["layers"],
            "sliding_window": None,
            "use_sliding_window": False,
        })
    else:
        common.update({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": fx["attention_bias"],
            "head_dim": head_dim_of(fx),
            "mlp_bias": False,
            "pretraining_tp": 1,
        })
    return dict(sorted(common.items()))


# ---------------------------------------------------------------- params --

def param_shapes(fx):
    """Ordered {hf_name: shape}, as model.named_parameters() lists them."""
    H, D, NH, NKV, I, V = (fx["hidden"], head_dim_of(fx), fx["heads"],
                           fx["kv_heads"], fx["inter"], fx["vocab"])
    qkv_bias = fx["arch"] == "qwen2" or fx["attention_bias"]
    o_bias = fx["arch"] == "llama" and fx["attention_bias"]
    s = {"model.embed_tokens.weight": (V, H)}
    for l in range(fx["layers"]):
        p = "model.layers.%d." % l
        s[p + "self_attn.q_proj.weight"] = (NH * D, H)
        if qkv_bias:
            s[p + "self_attn.q_proj.bias"] = (NH * D,)
        s[p + "self_attn.k_proj.weight"] = (NKV * D, H)
        if qkv_bias:
            s[p + "self_attn.k_proj.bias"] = (NKV * D,)
        s[p + "self_attn.v_proj.weight"] = (NKV * D, H)
        if qkv_bias:
            s[p + "self_attn.v_proj.bias"] = (NKV * D,)
        s[p + "self_attn.o_proj.weight"] = (H, NH * D)
        if o_bias:
            s[p + "self_attn.o_proj.bias"] = (H,)
        s[p + "mlp.gate_proj.weight"] = (I, H)
        s[p + "mlp.up_proj.weight"] = (I, H)
        s[p + "mlp.down_proj.weight"] = (H, I)
        s[p + "input_layernorm.weight"] = (H,)
        s[p + "post_attention_layernorm.weight"] = (H,)
    s["model.norm.weight"] = (H,)
    if not fx["tie"]:
        s["lm_head.weight"] = (V, H)
    return s


def init_params(fx):
    """Deterministic fp32 weights: N(0, 0.2) everywhere, norms 1 + 0.1*N."""
    g = torch.Generator().manual_seed(fx["seed"])
    out = {}
    for name, shape in param_shapes(fx).items():
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if "norm" in name:
            out[name] = 1.0 + 0.1 * r
        elif name.endswith("bias"):
            out[name] = 0.2 * r
        else:
            out[name] = 0.2 * r
    return out


def bf16_round(t):
    """fp32 -> bf16 (round to nearest even) -> fp32."""
    return t.to(torch.bfloat16).to(torch.float32)


# ------------------------------------------------------------------ RoPE --

def rope_inv_freq(fx):
    """(D/2) fp32, as transformers' rotary embedding computes it."""
    dim = head_dim_of(fx)
    base = fx["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = fx["rope_scaling"]
    if rs is None:
        return inv_freq
    assert rs["rope_type"] == "llama3"
    # transformers modeling_rope_utils._compute_llama3_parameters
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def rope_cos_sin(fx, T):
    """cos, sin: (T, D); emb = cat(freqs, freqs), freqs = pos * inv_freq."""
    inv_freq = rope_inv_freq(fx).to(DT)
    pos = torch.arange(T, dtype=DT)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


# --------------------------------------------------------------- forward --

def rms_norm(x, w, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(variance + eps))


def linear(x, P, name):
    y = x @ P[name + ".weight"].t()
    b = P.get(name + ".bias")
    return y if b is None else y + b


def repeat_kv(x, n_rep):
    """(NKV, T, D) -> (NKV*n_rep, T, D): query head h uses kv head h // n_rep."""
    if n_rep == 1:
        return x
    nkv, T, D = x.shape
    return x[:, None, :, :].expand(nkv, n_rep, T, D).reshape(nkv * n_rep, T, D)


def forward(fx, P, tokens):
    """P: {hf_name: float64 tensor}; tokens: (T,) int64. Returns logits (T,V)."""
    T = tokens.shape[0]
    NH, NKV, D, eps = fx["heads"], fx["kv_heads"], head_dim_of(fx), fx["eps"]
    cos, sin = rope_cos_sin(fx, T)
    mask = torch.full((T, T), float("-inf"), dtype=DT).triu(1)
    x = P["model.embed_tokens.weight"][tokens]
    for l in range(fx["layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = linear(h, P, p + "self_attn.q_proj").view(T, NH, D).transpose(0, 1)
        k = linear(h, P, p + "self_attn.k_proj").view(T, NKV, D).transpose(0, 1)
        v = linear(h, P, p + "self_attn.v_proj").view(T, NKV, D).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, NH // NKV)
        v = repeat_kv(v, NH // NKV)
        att = (q @ k.transpose(1, 2)) * (D ** -0.5) + mask
        att = torch.softmax(att, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, NH * D)
        x = x + linear(o, P, p + "self_attn.o_proj")
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        m = torch.nn.functional.silu(linear(h, P, p + "mlp.gate_proj")) * linear(h, P, p + "mlp.up_proj")
        x = x + linear(m, P, p + "mlp.down_proj")
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if fx["tie"] else P["lm_head.weight"]
    return x @ head.t()


def next_token_loss(logits, tokens):
    """Mean cross-entropy of logits[0..T-2] predicting tokens[1..T-1]."""
    return torch.nn.functional.cross_entropy(logits[:-1], tokens[1:])


# ----------------------------------------------------------- safetensors --

def write_safetensors(path, tensors, dtype):
    """tensors: ordered {name: fp32 tensor}; dtype "F32" or "BF16"."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if dtype == "F32":
            b = t.to(torch.float32).numpy().tobytes()
        else:
            b = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Minimal reader used to check the writer round-trips."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b0, b1 = e["data_offsets"]
        raw = bytearray(data[base + b0: base + b1])
        if e["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        else:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).float()
        out[name] = t.reshape(e["shape"])
    return out


# ---------------------------------------------------------------- checks --

def check_gradients(fx, P64, tokens):
    """gradcheck the full loss w.r.t. a few small parameters (float64)."""
    names = ["model.norm.weight", "model.layers.0.input_layernorm.weight",
             "model.layers.1.post_attention_layernorm.weight"]
    names += [n for n in P64 if n.endswith("bias")][:2]
    for name in names:
        def f(w, name=name):
            Q = dict(P64)
            Q[name] = w
            return next_token_loss(forward(fx, Q, tokens), tokens)
        w = P64[name].detach().clone().requires_grad_(True)
        ok = torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, rtol=1e-5)
        assert ok, "%s: gradcheck failed for %s" % (fx["name"], name)
    # One element of every other parameter by central differences.
    Pg = {n: t.detach().clone().requires_grad_(True) for n, t in P64.items()}
    loss = next_token_loss(forward(fx, Pg, tokens), tokens)
    grads = torch.autograd.grad(loss, list(Pg.values()))
    g = torch.Generator().manual_seed(0)
    for (name, t), gr in zip(P64.items(), grads):
        i = int(torch.randint(t.numel(), (1,), generator=g))
        h = 1e-6
        vals = []
        for s in (1, -1):
            Q = dict(P64)
            w = t.detach().clone().view(-1)
            w[i] += s * h
            Q[name] = w.view(t.shape)
            vals.append(float(next_token_loss(forward(fx, Q, tokens), tokens)))
        num = (vals[0] - vals[1]) / (2 * h)
        ana = float(gr.reshape(-1)[i])
        assert abs(num - ana) <= 1e-7 + 1e-5 * abs(ana), \
            "%s: %s[%d]: numeric %g vs autograd %g" % (fx["name"], name, i, num, ana)


def check_repeat_kv():
    x = torch.arange(2 * 3 * 4, dtype=DT).view(2, 3, 4)
    r = repeat_kv(x, 3)
    for h in range(6):
        assert torch.equal(r[h], x[h // 3])


# ------------------------------------------------------------------ main --

def build(fx):
    d = os.path.join(OUT_DIR, fx["name"])
    os.makedirs(d, exist_ok=True)
    P32 = init_params(fx)
    Pbf = {n: bf16_round(t) for n, t in P32.items()}
    g = torch.Generator().manual_seed(1000 + fx["seed"])
    tokens = torch.randint(fx["vocab"], (fx["T"],), generator=g)

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(fx), f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), P32, "F32")
    write_safetensors(os.path.join(d, "model-bf16.safetensors"), P32, "BF16")
    back = read_safetensors(os.path.join(d, "model.safetensors"))
    assert list(back) == list(P32) and all(torch.equal(back[n], P32[n]) for n in P32)
    back = read_safetensors(os.path.join(d, "model-bf16.safetensors"))
    assert all(torch.equal(back[n], Pbf[n]) for n in P32)

    P64 = {n: t.to(DT).requires_grad_(True) for n, t in P32.items()}
    logits = forward(fx, P64, tokens)
    loss = next_token_loss(logits, tokens)
    assert torch.isfinite(loss), fx["name"]
    grads = torch.autograd.grad(loss, list(P64.values()))
    with torch.no_grad():
        logits_bf16 = forward(fx, {n: t.to(DT) for n, t in Pbf.items()}, tokens)

    check_gradients(fx, {n: t.detach() for n, t in P64.items()}, tokens)

    ref = {"tokens": tokens.to(torch.int32),
           "logits": logits.detach(),
           "logits_bf16": logits_bf16,
           "loss": loss.detach().reshape(1)}
    for name, gr in zip(P64, grads):
        assert torch.isfinite(gr).all() and gr.abs().max() > 0, name
        ref["grad." + name] = gr
    write_ref(os.path.join(d, "ref.ref"), ref)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print("%-14s loss %.6f  |logits-logits_bf16|max %.3g  %d params  %d bytes"
          % (fx["name"], float(loss), float((logits - logits_bf16).abs().max()),
             sum(t.numel() for t in P32.values()), size))


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    check_repeat_kv()
    for fx in FIXTURES:
        build(fx)


if __name__ == "__main__":
    main()
