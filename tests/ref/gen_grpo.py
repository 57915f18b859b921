"""PyTorch reference for the GRPO loss (engine/grpo_loss.c, tests/unit/test_grpo_loss.c).

Writes tests/ref/fixtures/grpo.ref: for each case, the float32 inputs the C
test feeds (logp, old, ref, adv, mask), a config vector, and the loss, its
gradient d loss / d logp (autograd, float64) and the metrics, computed with
TRL's GRPOTrainer._compute_loss formulas; plus advantage cases (TRL's
group-relative normalisation). Deterministic: torch.manual_seed(7). Run with
/usr/bin/python3 (needs torch); `make ref` runs it.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import write_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "grpo.ref")
R = {}
LOSS_TYPES = {"grpo": 0, "bnpo": 1, "dapo": 2, "dr_grpo": 3}
LEVELS = {"token": 0, "sequence": 1}
IS_MODES = {"token_truncate": 1, "token_mask": 2, "sequence_truncate": 3, "sequence_mask": 4}


def trl_is_ratio(old, samp, mask, mode, cap):
    """TRL's vllm importance sampling ratio (GRPOTrainer._generate_and_score_
    completions): (B,T) for token modes, (B,1) for sequence modes."""
    diff = (old - samp) * mask
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, max=cap)
    return ratio.masked_fill(ratio > cap, 0.0)


def trl_loss(logp, old, ref, adv, mask, loss_type, level, eps_low, eps_high, beta,
             max_len, dapo_tokens, is_ratio=None):
    """TRL GRPOTrainer._compute_loss (single process, no accumulation)."""
    log_ratio = logp - old
    if level == "token":
        log_w = log_ratio
    else:  # GSPO
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    if is_ratio is not None:
        per_token_loss = per_token_loss * is_ratio
    if beta != 0.0:
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token_loss = per_token_loss + beta * kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_len)
    else:  # dapo: global-batch token count
        loss = (per_token_loss * mask).sum() / dapo_tokens
    tokens = mask.sum().clamp(min=1.0)

    def masked_mean(x):
        return x.mean() if x.shape[1] == 1 else (x * mask).sum() / tokens

    is_low = (coef_1 < 1 - eps_low) & (adv.unsqueeze(1) < 0)
    is_high = (coef_1 > 1 + eps_high) & (adv.unsqueeze(1) > 0)
    metrics = [
        masked_mean(kl).item() if beta != 0.0 else 0.0,
        masked_mean(is_low.double()).item(),
        masked_mean(is_high.double()).item(),
        masked_mean((is_low | is_high).double()).item(),
    ]
    return loss, metrics


def gen_case(name, loss_type, level="token", beta=0.0, mu_gt_1=True, B=5, T=7,
             max_len=9, dapo_tokens=0.0, zero_adv_rows=(), is_mode=None, is_cap=1.3):
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).double().float()
    logp = (-torch.rand(B, T, dtype=torch.float64) * 3).float()
    # mu > 1: the old policy differs, with log-ratios up to +-0.5 so that
    # both clip sides are active (eps 0.2 / 0.28)
    old = (logp.double() + (torch.rand(B, T, dtype=torch.float64) - 0.5)).float() \
        if mu_gt_1 else logp.clone()
    ref = (logp.double() + 0.3 * torch.randn(B, T, dtype=torch.float64)).float()
    adv = torch.randn(B, dtype=torch.float64).float()
    adv[1] = abs(adv[1]) + 0.5  # both signs present
    adv[2] = -abs(adv[2]) - 0.5
    for r in zero_adv_rows:
        adv[r] = 0.0
    eps_low, eps_high = 0.2, 0.28
    if loss_type == "dapo" and dapo_tokens <= 0:
        dapo_tokens = float(mask.sum().item())
    is_ratio = None
    if is_mode:
        # the sampler's log-probs: the trainer's old ones (the current ones
        # when mu = 1) off by up to +-0.5 a token, so that the cap bites
        base = old if mu_gt_1 else logp
        samp = (base.double() + (torch.rand(B, T, dtype=torch.float64) - 0.5)).float()
        is_ratio = trl_is_ratio(base.double(), samp.double(), mask.double(), is_mode, is_cap)
        R.update({name + ".samp": samp, name + ".is": torch.tensor([IS_MODES[is_mode], is_cap]),
                  name + ".isw": (is_ratio * mask.double()).expand(B, T)})
    lp = logp.double().requires_grad_(True)
    loss, metrics = trl_loss(lp, old.double(), ref.double(), adv.double(), mask.double(),
                             loss_type, level, eps_low, eps_high, beta, max_len, dapo_tokens,
                             is_ratio)
    loss.backward()
    cfg = [LOSS_TYPES[loss_type], LEVELS[level], eps_low, eps_high, beta, max_len,
           dapo_tokens, 1.0 if mu_gt_1 else 0.0]
    R.update({
        name + ".cfg": torch.tensor(cfg, dtype=torch.float64),
        name + ".logp": logp, name + ".old": old, name + ".ref": ref,
        name + ".adv": adv, name + ".mask": mask,
        name + ".loss": loss.detach().reshape(1),
        name + ".dlogp": lp.grad,
        name + ".metrics": torch.tensor(metrics, dtype=torch.float64),
    })
    return name


def trl_advantages(rewards, G, scale):
    """TRL: group mean; unbiased std of the group or of the batch; eps 1e-4."""
    r = rewards.double()
    mean = r.view(-1, G).mean(dim=1).repeat_interleave(G)
    if scale == "batch":
        std = r.std().expand_as(r)
    else:
        std = r.view(-1, G).std(dim=1).repeat_interleave(G)
    a = r - mean
    if scale != "none":
        a = a / (std + 1e-4)
    return a


def gen_adv(name, scale):
    G = 4
    rewards = torch.tensor([[1.0, 0.0, 0.5, 1.0],      # mixed
                            [1.0, 1.0, 1.0, 1.0],      # all equal
                            [0.1, 0.9, 0.25, 0.0],     # mixed
                            [0.0, 0.0, 0.0, 0.0]])     # all equal (zero)
    adv = trl_advantages(rewards.flatten(), G, scale)
    R.update({name + ".rewards": rewards.flatten(), name + ".adv": adv,
              name + ".cfg": torch.tensor([G, {"group": 0, "batch": 1, "none": 2}[scale]])})


def main():
    torch.manual_seed(7)
    cases = []
    for lt in ("grpo", "bnpo", "dapo", "dr_grpo"):
        for beta in (0.0, 0.04):
            cases.append(gen_case("%s_b%d" % (lt, 1 if beta else 0), lt, beta=beta))
            cases.append(gen_case("%s_b%d_seq" % (lt, 1 if beta else 0), lt, "sequence",
                                  beta=beta))
    cases.append(gen_case("grpo_mu1", "grpo", beta=0.04, mu_gt_1=False))
    cases.append(gen_case("bnpo_mu1_seq", "bnpo", "sequence", mu_gt_1=False))
    cases.append(gen_case("dapo_global", "dapo", beta=0.04, dapo_tokens=60.0))
    cases.append(gen_case("grpo_zero_adv", "grpo", zero_adv_rows=(0, 3, 4)))
    # last, so that the draws of the cases above are unchanged
    for mode in IS_MODES:
        cases.append(gen_case("is_" + mode, "grpo", beta=0.04, is_mode=mode))
    cases.append(gen_case("is_dapo_mu1_seq", "dapo", "sequence", mu_gt_1=False, is_mode="token_truncate"))
    R["cases"] = torch.tensor([len(cases)], dtype=torch.int32)
    for i, c in enumerate(cases):
        R["case%d" % i] = torch.tensor(list(c.encode()), dtype=torch.int32)
    for s in ("group", "batch", "none"):
        gen_adv("adv_" + s, s)
    write_ref(OUT, R)
    print("wrote %s (%d tensors, %d loss cases)" % (OUT, len(R), len(cases)))


if __name__ == "__main__":
    main()
