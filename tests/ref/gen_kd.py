"""PyTorch reference for the distillation divergence (engine/kd_loss.c,
tests/unit/test_kd_loss.c).

Writes tests/ref/fixtures/kd.ref: for each case, the float32 inputs the C
test feeds (student logits zs and teacher logits zt, both (n,V), and the row
weights scale (n)), a config vector [beta, tau], and the divergence of every
row and the gradient d sum_i(scale_i * loss_i) / d zs (autograd, float64),
computed with TRL's GKDTrainer.generalized_jsd_loss formula (reduction
"none", summed over the vocabulary). Deterministic: torch.manual_seed(11).
Run with /usr/bin/python3 (needs torch).

Cases with -inf logits (masked vocabulary entries) cannot use TRL's formula
verbatim: F.kl_div(input, target, log_target=True) is exp(target) * (target -
input), which is 0 * (-inf - -inf) = NaN where both are -inf (and the
logsumexp of two -infs has a NaN gradient). Those cases use the same formula
with the zero-probability convention instead: a term whose target
probability is 0 contributes 0 (and no gradient). On finite inputs the two
agree, which the script checks before writing.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import write_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "kd.ref")
R = {}
NEG_INF = float("-inf")


def f32(x):
    """x as the C code sees it: the float32 nearest, as a Python float."""
    return float(torch.tensor(x, dtype=torch.float32).item())


def trl_gjsd(zs, zt, beta, tau):
    """TRL GKDTrainer.generalized_jsd_loss, reduction "none", per row (sum over V)."""
    student_log_probs = F.log_softmax(zs / tau, dim=-1)
    teacher_log_probs = F.log_softmax(zt / tau, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log1p(-beta), teacher_log_probs + torch.log(beta)]),
            dim=0,
        )
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    return jsd.sum(-1)


def kl_zero_convention(lq, lp):
    """F.kl_div(lq, lp, reduction="none", log_target=True) = p (lp - lq), with
    0 where p = 0 (lp = -inf), its gradient there 0 too (no NaN)."""
    ok = torch.isfinite(lp)
    lp_safe = torch.where(ok, lp, torch.zeros_like(lp))
    lq_safe = torch.where(ok, lq, torch.zeros_like(lq))
    return torch.where(ok, lp_safe.exp() * (lp_safe - lq_safe), torch.zeros_like(lp))


def gjsd_zero_convention(zs, zt, beta, tau):
    """trl_gjsd with the zero-probability convention (for -inf logits)."""
    sl = F.log_softmax(zs / tau, dim=-1)
    tl = F.log_softmax(zt / tau, dim=-1)
    if beta == 0:
        jsd = kl_zero_convention(sl, tl)
    elif beta == 1:
        jsd = kl_zero_convention(tl, sl)
    else:
        b = torch.tensor(beta, dtype=sl.dtype)
        a, c = sl + torch.log1p(-b), tl + torch.log(b)
        both = torch.isinf(a) & torch.isinf(c)
        zero = torch.zeros_like(a)
        lse = torch.logsumexp(torch.stack([torch.where(both, zero, a), torch.where(both, zero, c)]), dim=0)
        mixture = torch.where(both, torch.full_like(a, NEG_INF), lse)
        jsd = b * kl_zero_convention(mixture, tl) + (1 - b) * kl_zero_convention(mixture, sl)
    return jsd.sum(-1)


def reference(zs32, zt32, scale32, beta, tau, fn):
    zs = zs32.double().requires_grad_(True)
    loss = fn(zs, zt32.double(), beta, tau)
    (scale32.double() * loss).sum().backward()
    return loss.detach(), zs.grad


def logits(n, V, spread=2.0):
    """Student logits and a teacher near them (the usual distillation
    regime), the last row's teacher independent of the student."""
    zs = torch.randn(n, V, dtype=torch.float64) * spread
    zt = zs + 0.7 * torch.randn(n, V, dtype=torch.float64)
    zt[-1] = torch.randn(V, dtype=torch.float64) * spread
    return zs, zt


def add_case(cases, name, zs, zt, beta, tau, masked=False):
    n = zs.shape[0]
    zs32, zt32 = zs.float(), zt.float()
    scale32 = (0.5 + 1.5 * torch.rand(n, dtype=torch.float64)).float()
    b, t = f32(beta), f32(tau)
    if masked:
        loss, dzs = reference(zs32, zt32, scale32, b, t, gjsd_zero_convention)
    else:
        loss, dzs = reference(zs32, zt32, scale32, b, t, trl_gjsd)
        # the zero-probability form is the same function on finite inputs
        loss2, dzs2 = reference(zs32, zt32, scale32, b, t, gjsd_zero_convention)
        assert torch.allclose(loss, loss2, rtol=1e-12, atol=1e-14), name
        assert torch.allclose(dzs, dzs2, rtol=1e-12, atol=1e-14), name
    assert torch.isfinite(loss).all() and torch.isfinite(dzs).all(), name
    assert (loss > -1e-12).all(), name
    if 0 < beta < 1:  # gjsd <= H(beta): m >= beta t and m >= (1-beta) s
        assert (loss <= -b * math.log(b) - (1 - b) * math.log1p(-b) + 1e-12).all(), name
    R.update({
        name + ".cfg": torch.tensor([b, t], dtype=torch.float64),
        name + ".zs": zs32, name + ".zt": zt32, name + ".scale": scale32,
        name + ".loss": loss, name + ".dzs": dzs,
    })
    cases.append(name)


def beta_name(beta):
    return {0.0: "fkl", 1.0: "rkl", 0.5: "jsd", 0.1: "gjsd01"}[beta]


def main():
    torch.manual_seed(11)
    cases = []
    betas = (0.0, 1.0, 0.5, 0.1)
    # V 37, 4 rows; row 1's teacher nearly one-hot (+30), row 2's student too
    for beta in betas:
        for tau in (1.0, 0.9, 2.0):
            zs, zt = logits(4, 37)
            zt[1, 5] = 30.0
            zs[2, 11] = 25.0
            add_case(cases, "%s_t%g" % (beta_name(beta), tau), zs, zt, beta, tau)
    # masked vocabulary: columns -inf in both models; for the mixtures also
    # columns -inf in one of them only (beta = 0 allows the teacher's alone,
    # beta = 1 the student's alone; else the divergence is infinite), and a
    # row whose teacher is exactly one-hot (all but one logit -inf)
    for beta in betas:
        for tau in (1.0, 0.9):
            zs, zt = logits(3, 37)
            zs[:, [0, 7, 36]] = NEG_INF
            zt[:, [0, 7, 36]] = NEG_INF
            if beta < 1:
                zt[:, [3, 20]] = NEG_INF
            if beta > 0:
                zs[:, [4, 21]] = NEG_INF
            if beta < 1:
                zt[2, :] = NEG_INF
                zt[2, 9] = 1.5
            add_case(cases, "%s_t%g_masked" % (beta_name(beta), tau), zs, zt, beta, tau,
                     masked=True)
    # a real vocabulary's size
    for beta, tau in ((0.5, 1.0), (0.0, 0.9)):
        zs, zt = logits(2, 4096, spread=3.0)
        zt[0, 100] = 30.0
        add_case(cases, "%s_t%g_v4096" % (beta_name(beta), tau), zs, zt, beta, tau)
    R["cases"] = torch.tensor([len(cases)], dtype=torch.int32)
    for i, c in enumerate(cases):
        R["case%d" % i] = torch.tensor(list(c.encode()), dtype=torch.int32)
    write_ref(OUT, R)
    print("wrote %s (%d tensors, %d cases)" % (OUT, len(R), len(cases)))


if __name__ == "__main__":
    main()
