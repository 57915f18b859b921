"""PyTorch baseline for aha's training-step benchmark (`aha-engine bench train`):
the same Qwen2-style model and sizes, fp32 on the CPU, AdamW, one JSON line on
stdout. Not a reference for correctness (tests/ref/ holds those).

    /usr/bin/python3 bench/torch_train.py --config tiny|small [--threads N]
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "tiny": dict(vocab=512, hidden=256, layers=6, heads=8, kv_heads=4,
                 inter=688, seq=256, batch=8),
    "small": dict(vocab=4096, hidden=512, layers=8, heads=8, kv_heads=4,
                  inter=1376, seq=512, batch=8),
}
ROPE_THETA = 1000000.0
EPS = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, NH, NKV = c["hidden"], c["heads"], c["kv_heads"]
        self.NH, self.NKV, self.D = NH, NKV, H // NH
        self.input_layernorm = RMSNorm(H)
        self.q_proj = nn.Linear(H, NH * self.D, bias=True)
        self.k_proj = nn.Linear(H, NKV * self.D, bias=True)
        self.v_proj = nn.Linear(H, NKV * self.D, bias=True)
        self.o_proj = nn.Linear(NH * self.D, H, bias=False)
        self.post_attention_layernorm = RMSNorm(H)
        self.gate_proj = nn.Linear(H, c["inter"], bias=False)
        self.up_proj = nn.Linear(H, c["inter"], bias=False)
        self.down_proj = nn.Linear(c["inter"], H, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.NH, self.D).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.NKV, self.D).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.NKV, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.NH // self.NKV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.D)) + mask
        att = torch.softmax(att, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, self.NH * self.D)
        x = x + self.o_proj(o)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"])
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        D, T = c["hidden"] // c["heads"], c["seq"]
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.arange(T).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))

    def forward(self, idx, targets):
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        logits = self.norm(x) @ self.embed_tokens.weight.t()  # tied lm_head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def train_flops(c):
    """FLOPs of one training step, counted as aha counts them.

    Matmuls: 6 * P * tokens, P = matmul weights incl. the (tied) lm_head:
      per layer H*(NH*D) + 2*H*(NKV*D) + (NH*D)*H + 3*H*I, plus V*H.
      (2 flops per multiply-add forward, 4 backward.)
    Attention: QK^T and AV are each 2*T*T*D per head forward; causal halves
      them, and backward doubles twice: 3 * 2 * 2*B*T*T*NH*D / 2 per layer
      = 6 * L * B * T * T * NH * D.
    """
    H, NH, NKV, I, V, L = (c["hidden"], c["heads"], c["kv_heads"], c["inter"],
                           c["vocab"], c["layers"])
    D = H // NH
    P = L * (H * NH * D + 2 * H * NKV * D + NH * D * H + 3 * H * I) + V * H
    tokens = c["batch"] * c["seq"]
    return 6 * P * tokens + 6 * L * c["batch"] * c["seq"] * c["seq"] * NH * D


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = CONFIGS[args.config]
    model = Model(c)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(c["vocab"], (c["batch"], c["seq"] + 1), generator=g)
    idx, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(idx, targets)
        loss.backward()
        opt.step()
        return float(loss)

    warm = []
    for _ in range(2):
        t0 = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t0)
    # Fewer timed steps when one is slow: 2 above 10 s, 1 above 60 s.
    if warm[-1] > 60.0:
        steps = 1
    elif warm[-1] > 10.0:
        steps = min(args.steps, 2)
    else:
        steps = args.steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    tokens = c["batch"] * c["seq"]
    print(json.dumps({"bench": "train", "impl": "pytorch", "config": args.config,
                      "threads": args.threads,
                      "tokens_per_s": round(tokens / dt, 1),
                      "step_ms": round(dt * 1e3, 1),
                      "gflops": round(train_flops(c) / dt / 1e9, 2)}))


if __name__ == "__main__":
    main()
