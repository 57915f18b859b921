"""PyTorch reference tensors for the backend ops (tests/unit/test_kernels.c).

Writes tests/ref/fixtures/ops.ref. Inputs are drawn in float32 (what the C
test feeds the op); outputs and gradients are computed in float64 from those
exact values with the Hugging Face formulas (autograd for the gradients) and
stored as float32. Deterministic: torch.manual_seed(1234). Run with
/usr/bin/python3 (needs torch); `make ref` runs it.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import write_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ops.ref")
R = {}


def randn(*shape, scale=1.0):
    """float32 sample (the exact values stored for the C side)."""
    return (torch.randn(*shape, dtype=torch.float64) * scale).float()


def leaf(t):
    """float64 copy of a float32 input that autograd tracks."""
    return t.double().requires_grad_(True)


def gen_matmul():
    N, C, OC = 5, 7, 6
    inp, w, b, dout = randn(N, C), randn(OC, C), randn(OC), randn(N, OC)
    R.update({"mm.inp": inp, "mm.w": w, "mm.b": b, "mm.dout": dout})
    x, W, B = leaf(inp), leaf(w), leaf(b)
    out = x @ W.T + B  # nn.Linear
    out.backward(dout.double())
    R.update({"mm.out_bias": out, "mm.out": (inp.double() @ w.double().T),
              "mm.dinp": x.grad, "mm.dw": W.grad, "mm.db": B.grad})


def gen_gemm():
    M, N, K = 4, 5, 3
    alpha, beta = 0.75, 0.5
    A, B, C0 = randn(M, K), randn(K, N), randn(M, N)
    R.update({"gemm.a": A, "gemm.b": B, "gemm.c0": C0,
              "gemm.alpha_beta": torch.tensor([alpha, beta])})
    ab = A.double() @ B.double()
    R["gemm.out"] = alpha * ab + beta * C0.double()
    R["gemm.out_beta0"] = alpha * ab


def gen_embedding():
    V, C = 10, 8
    tokens = torch.tensor([3, 7, 3, 0, 9, 3, 7], dtype=torch.int32)
    wte, dout = randn(V, C), randn(len(tokens), C)
    W = leaf(wte)
    out = torch.nn.functional.embedding(tokens.long(), W)
    out.backward(dout.double())
    R.update({"emb.tokens": tokens, "emb.wte": wte, "emb.dout": dout,
              "emb.out": out, "emb.dwte": W.grad})


def gen_rmsnorm():
    N, C, eps = 4, 16, 1e-5
    inp, w, dout = randn(N, C, scale=2.0), 1.0 + randn(C, scale=0.2), randn(N, C)
    x, W = leaf(inp), leaf(w)
    # transformers LlamaRMSNorm.forward
    variance = x.pow(2).mean(-1, keepdim=True)
    rstd = torch.rsqrt(variance + eps)
    out = W * (x * rstd)
    out.backward(dout.double())
    R.update({"rms.inp": inp, "rms.w": w, "rms.dout": dout,
              "rms.eps": torch.tensor([eps]), "rms.out": out,
              "rms.rstd": rstd.squeeze(-1), "rms.dinp": x.grad, "rms.dw": W.grad})


def rotate_half(x):
    """transformers.models.llama.modeling_llama.rotate_half"""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(pos, inv_freq):
    """LlamaRotaryEmbedding: the angle pos * inv_freq is an fp32 product;
    cos/sin of that fp32 angle are taken here in float64."""
    freqs = (pos.float()[:, None] * inv_freq[None, :]).double()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def gen_rope():
    H, D, base = 3, 8, 10000.0
    # two sequences of 3 tokens, at position offsets 5 and 2045 (a KV cache)
    pos = torch.tensor([5, 6, 7, 2045, 2046, 2047], dtype=torch.int32)
    N = len(pos)
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    x, dout = randn(N, H, D), randn(N, H, D)
    cos, sin = rope_cos_sin(pos, inv_freq)
    X = leaf(x)
    out = X * cos[:, None, :] + rotate_half(X) * sin[:, None, :]
    out.backward(dout.double())
    R.update({"rope.pos": pos, "rope.inv_freq": inv_freq, "rope.x": x,
              "rope.dout": dout, "rope.out": out, "rope.dx": X.grad})


def gen_attention(tag, B, T, NH, NKV, D, starts=None):
    """q, k, v fused in one (B,T,(NH+2NKV)*D) buffer as the model's qkv
    projection lays them out; eager attention with repeat_kv, causal mask.
    starts: per row, the first token of each packed document (the first is
    0); then the mask is also block-diagonal, as transformers builds it from
    position_ids for padding-free packing, and TAG.seg (B,T) i32 holds each
    token's document start, the C kernel's seg argument."""
    W = (NH + 2 * NKV) * D
    qkv, dout = randn(B, T, W), randn(B, T, NH, D)
    X = leaf(qkv)
    q = X[..., : NH * D].view(B, T, NH, D).transpose(1, 2)
    k = X[..., NH * D: (NH + NKV) * D].view(B, T, NKV, D).transpose(1, 2)
    v = X[..., (NH + NKV) * D:].view(B, T, NKV, D).transpose(1, 2)
    G = NH // NKV
    k = k[:, :, None].expand(B, NKV, G, T, D).reshape(B, NH, T, D)  # repeat_kv
    v = v[:, :, None].expand(B, NKV, G, T, D).reshape(B, NH, T, D)
    scores = q @ k.transpose(2, 3) / math.sqrt(D)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    mask = mask.expand(B, 1, T, T)
    if starts is not None:
        seg = torch.zeros(B, T, dtype=torch.int32)
        for b, row in enumerate(starts):
            for s in row:
                seg[b, s:] = s
        j = torch.arange(T)
        mask = mask | (j[None, None, None, :] < seg[:, None, :, None])  # key before the document
        R[tag + ".seg"] = seg
    scores = scores.masked_fill(mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    out = (att @ v).transpose(1, 2).contiguous()  # (B,T,NH,D)
    out.backward(dout.double())
    R.update({tag + ".dims": torch.tensor([B, T, NH, NKV, D], dtype=torch.int32),
              tag + ".qkv": qkv, tag + ".dout": dout, tag + ".out": out,
              tag + ".att": att, tag + ".dqkv": X.grad})


def gen_swiglu():
    N, I = 3, 12
    gate, up, dout = randn(N, I, scale=3.0), randn(N, I), randn(N, I)
    # the exp tails: sigmoid saturating and exp(-g) overflowing in fp32
    gate[0, :4] = torch.tensor([30.0, -30.0, 90.0, -90.0])
    G, U = leaf(gate), leaf(up)
    out = torch.nn.functional.silu(G) * U  # LlamaMLP: act_fn(gate_proj(x)) * up_proj(x)
    out.backward(dout.double())
    R.update({"swiglu.gate": gate, "swiglu.up": up, "swiglu.dout": dout,
              "swiglu.out": out, "swiglu.dgate": G.grad, "swiglu.dup": U.grad})


def gen_vector():
    n = 37
    x, y = randn(n), randn(n)
    alpha, s = 0.625, -1.5
    xd, yd = x.double(), y.double()
    R.update({"vec.x": x, "vec.y": y, "vec.alpha_s": torch.tensor([alpha, s]),
              "vec.add": xd + yd, "vec.axpy": yd + alpha * xd, "vec.scale": xd * s,
              "vec.sumsq": (xd * xd).sum().reshape(1)})


def gen_logprob(tag, N, V, targets, offset_row):
    logits, dlp = randn(N, V, scale=5.0), randn(N)
    logits[offset_row] += 100.0  # stability: large logits
    t = torch.tensor(targets, dtype=torch.int32)
    L = leaf(logits)
    logp = torch.log_softmax(L, dim=-1)
    lse = torch.logsumexp(L, dim=-1)
    valid = t >= 0
    lp = torch.where(valid, logp.gather(1, t.clamp(min=0).long()[:, None])[:, 0],
                     torch.zeros(N, dtype=torch.float64))
    lp.backward(dlp.double())
    R.update({tag + ".logits": logits, tag + ".targets": t, tag + ".dlogprob": dlp,
              tag + ".logprob": lp, tag + ".lse": lse, tag + ".dlogits": L.grad})


def gen_adamw():
    n, steps = 40, 5
    # hyper-parameters rounded to fp32 first: the C op receives floats
    lr, b1, b2, eps, wd = (float(torch.tensor(v, dtype=torch.float32))
                           for v in (1e-2, 0.9, 0.95, 1e-8, 0.1))
    p0, grads = randn(n), randn(steps, n)
    P = p0.double().clone().requires_grad_(True)
    opt = torch.optim.AdamW([P], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for s in range(steps):
        P.grad = grads[s].double().clone()
        opt.step()
    st = opt.state[P]
    R.update({"adamw.p0": p0, "adamw.grads": grads,
              "adamw.hp": torch.tensor([lr, b1, b2, eps, wd], dtype=torch.float64),
              "adamw.p": P.detach(), "adamw.m": st["exp_avg"], "adamw.v": st["exp_avg_sq"]})


def gen_bf16():
    """bfloat16 (dtype bf16 of the generation engine): torch's rounding
    (.bfloat16(), nearest even), and matmul_rows_forward's W_BF16 product:
    inputs and weights rounded, then summed here in float64 (the C side's
    fp32 sums agree to rounding)."""
    ties = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-100 * (1 + 2**-8), 1 + 2**-8 + 2**-20,
            -(1 + 3 * 2**-8)]
    edge = torch.tensor(ties + [3.3e38, 3.4e38, -3.4e38, 1e-40, -1e-40, 0.0, -0.0,
                                float("inf"), float("-inf"), 1.5 * 2**-126], dtype=torch.float32)
    x = torch.cat([edge, randn(64, scale=100.0)])
    R["bf16.x"] = x
    R["bf16.rounded"] = x.bfloat16().float()
    N, C, OC = 14, 37, 40
    inp, w, b = randn(N, C), randn(OC, C), randn(OC)
    # ties where the C side rounds 16 inputs at a time (k < 32) and one by one
    inp[0, 0:6] = torch.tensor(ties, dtype=torch.float32)
    inp[1, 32:37] = torch.tensor(ties[:5], dtype=torch.float32)
    R.update({"mmbf.inp": inp, "mmbf.w": w, "mmbf.b": b})
    R["mmbf.out"] = inp.bfloat16().double() @ w.bfloat16().double().T + b.double()


def gen_q8():
    """KV_Q8, the generation engine's int8 KV cache: each vector (a kv
    head's key or value at one position) as round(x / scale) with scale =
    max|x| / 127, x clamped to +-65504 first; torch.round rounds half to
    even. Rows: random, huge (saturated), zero, and exact ties (scale a
    power of two, so x / scale is exactly k + 0.5)."""
    D = 64
    x = randn(6, D, scale=3.0)
    x[1] *= 1e5                                  # past binary16's range
    x[2] = 0.0
    x[3, 0] = 127 * 2**-4                        # scale 2^-4
    x[3, 1:8] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]) * 2**-4
    x[3, 8:] = x[3, 8:].clamp(-7.0, 7.0)
    x[4, :8] = torch.tensor([float("inf"), -1.0, 2.0, 3.0, -4.0, 5.0, 6.0, 7.0])
    xc = x.clamp(-65504.0, 65504.0)
    scale = xc.abs().amax(dim=1) / 127.0
    q = torch.where(scale[:, None] > 0, torch.round(xc / scale[:, None]), torch.zeros_like(xc))
    R["q8.x"] = x
    R["q8.q"] = q.clamp(-127, 127)
    R["q8.scale"] = scale


def q8_blocks(x):
    """dtype q8 (W_Q8) of the rows of x: blocks of 32 along the row (zeros
    past its end), each as round(x * (127 / max|x|)) within +-127, with the
    scale max|x| / 127, all in float32; torch.round rounds half to even."""
    rows, C = x.shape
    nb = (C + 31) // 32
    xp = torch.zeros(rows, nb * 32, dtype=torch.float32)
    xp[:, :C] = x
    xb = xp.view(rows, nb, 32)
    amax = xb.abs().amax(dim=2)
    scale = amax / 127.0
    inv = 127.0 / amax
    q = torch.where(scale[..., None] > 0, torch.round(xb * inv[..., None]), torch.zeros_like(xb))
    return q.clamp(-127, 127), scale


def gen_q8w():
    """matmul_rows_forward with dtype q8: inputs and weights quantized by
    blocks of 32 (q8_blocks), multiplied as blocks_matmul does. C = 100:
    three whole blocks and one of 4. Row 0's first block holds exact ties
    (scale 2^-4); row 1's second block is zeros."""
    N, C, OC = 7, 100, 40
    inp, w, b = randn(N, C), randn(OC, C), randn(OC)
    inp[0, 0:32] = inp[0, 0:32].clamp(-7.0, 7.0)
    inp[0, 0] = 127 * 2**-4
    inp[0, 1:8] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]) * 2**-4
    inp[1, 32:64] = 0.0
    blocks_matmul("q8w", inp, w, b, q8_blocks)


def blocks_matmul(name, inp, w, b, wblocks):
    """R[name.*]: inp, w, b and the output of the int8 inputs (q8_blocks)
    by the weights as wblocks gives them: each block's integer products
    summed exactly and scaled by the product of the two scales (rounded to
    float32, as the C side multiplies them), the blocks summed in float64."""
    qx, sx = q8_blocks(inp)
    qw, sw = wblocks(w)
    acc = torch.einsum("nbk,obk->nob", qx.double(), qw.double())
    s = (sx[:, None, :] * sw[None, :, :]).double()      # float32 products
    R.update({name + ".inp": inp, name + ".w": w, name + ".b": b})
    R[name + ".out"] = (acc * s).sum(dim=2) + b.double()


def q4_blocks(w):
    """dtype q4 (W_Q4) of the rows of w, llama.cpp's q4_0: blocks of 32
    along the row (zeros past its end), each with d = m / -8 for m its
    first value of largest magnitude, and steps q = min(15, floor(w *
    (1 / d) + 8.5)) standing for (q - 8) d, all in float32 (q = 8 where d
    is 0). Returns (q - 8, d)."""
    rows, C = w.shape
    nb = (C + 31) // 32
    wp = torch.zeros(rows, nb * 32, dtype=torch.float32)
    wp[:, :C] = w
    wb = wp.view(rows, nb, 32)
    m = wb.gather(2, wb.abs().argmax(dim=2, keepdim=True)).squeeze(2)   # argmax: the first
    d = m / -8.0
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.floor(wb * inv[..., None] + 8.5).clamp(max=15.0)
    return q - 8, d


def gen_q4w():
    """matmul_rows_forward with dtype q4: the weights as q4_blocks, the
    inputs as q8_blocks, multiplied as blocks_matmul does. C = 100:
    three whole blocks and one of 4. Weight row 0's first block holds
    exact ties (d = 2^-3) and a value past the top step; row 1's second
    block is zeros; row 2's first has its two largest magnitudes equal,
    the positive one first."""
    N, C, OC = 5, 100, 36
    inp, w, b = randn(N, C), randn(OC, C), randn(OC)
    w[0, 0:32] = w[0, 0:32].clamp(-0.9, 0.9)
    w[0, 0] = -8 * 2**-3                                   # m = -1: d = 2^-3
    w[0, 1:9] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -6.5, 7.5, 6.5]) * 2**-3
    w[1, 32:64] = 0.0
    w[2, 0:32] = w[2, 0:32].clamp(-1.0, 1.0)
    w[2, 3], w[2, 17] = 2.0, -2.0
    blocks_matmul("q4w", inp, w, b, q4_blocks)


def main():
    torch.manual_seed(1234)
    gen_matmul()
    gen_gemm()
    gen_embedding()
    gen_rmsnorm()
    gen_rope()
    gen_attention("att_gqa4", B=2, T=5, NH=4, NKV=1, D=8)
    gen_attention("att_mha", B=2, T=6, NH=2, NKV=2, D=4)
    gen_attention("att_long", B=1, T=70, NH=4, NKV=2, D=8)  # > one 64-row block
    gen_swiglu()
    gen_vector()
    gen_logprob("lp", 6, 37, [3, -1, 0, 36, 10, 5], offset_row=2)
    gen_logprob("lp_wide", 2, 5000, [4999, 17], offset_row=1)  # > one 2048 chunk
    gen_adamw()
    # last, so that the random draws of the tensors above are unchanged;
    # documents of 4, 5 and 3 tokens, then 5, 1 (a lone token), 4 and 2
    gen_attention("att_seg", B=2, T=12, NH=4, NKV=2, D=8, starts=[[0, 4, 9], [0, 5, 6, 10]])
    gen_bf16()
    gen_q8()
    gen_q8w()
    gen_q4w()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_ref(OUT, R)
    print("wrote %s: %d tensors, %d bytes" % (OUT, len(R), os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
