#!/usr/bin/env bash
# GRPO learns: from a fixed seed, a tiny base pretrained briefly on
# arithmetic text raises its mean reward by a clear margin within 16 GRPO
# steps. The reward is mostly DAPO's soft overlong punishment (the base
# writes ~45-token solutions, the budget is 40, so shorter answers score
# better): a dense signal that a tiny model can follow in a test's time,
# unlike accuracy. Then the eval stage reports on the trained model. The
# margin, not an exact value, is asserted. The rollouts sample with bf16
# weights (dtype bf16, as TRL's or verl's bf16 vLLM rollouts beside an
# fp32 policy: the loss recomputes every logprob in fp32), the eval with
# int8 ones (dtype q8); the fp32 rollouts are the other GRPO tests'
# default. Measured from this seed:
# mean reward -0.811 -> -0.001 (fp32 rollouts: -0.811 -> -0.002). Uses the
# optimised engine: this is a learning test, the sanitizer builds cover the
# same code in the other tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE_FAST:-build/aha-engine}
tmp=$(mktemp -d); trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT; echo "tmp: $tmp"
fail=0
mkdir -p "$tmp/data"
"$ENGINE" datagen arithmetic --n 3000 --seed 1 --format text --out "$tmp/data/text.jsonl"
"$ENGINE" datagen arithmetic --n 64 --seed 9 --out "$tmp/data/rl.jsonl"
cat > "$tmp/spec.json" <<'JSON'
{"name": "zero", "stages": [
  {"name": "base", "kind": "pretrain", "dataset": "text.jsonl",
   "params": {"config": "tiny", "steps": 60, "batch_size": 8, "seq_len": 96,
              "learning_rate": 0.003, "warmup_steps": 5, "log_every": 10, "seed": 1}},
  {"name": "rl", "kind": "grpo", "model": "base", "dataset": "rl.jsonl",
   "reward": {"name": "zero", "components": [
      {"type": "overlong", "weight": 1.0, "max_completion_len": 40, "soft_punish_cache": 32},
      {"type": "format", "weight": 0.2, "mode": "lenient"},
      {"type": "accuracy", "weight": 0.2}]},
   "params": {"steps": 16, "prompts_per_step": 4, "group_size": 8, "max_completion_length": 40,
              "learning_rate": 0.0003, "temperature": 1.0, "loss_type": "dr_grpo",
              "epsilon": 0.2, "epsilon_high": 0.28, "scale_rewards": "group",
              "prompt_template": "User: {prompt}\nAssistant:", "log_completions": 1, "seed": 2,
              "dtype": "bf16"}},
  {"name": "ev", "kind": "eval", "model": "rl", "dataset": "rl.jsonl",
   "reward": {"components": [{"type": "accuracy", "weight": 1.0}]},
   "params": {"prompt_template": "User: {prompt}\nAssistant:", "max_completion_length": 48,
              "num_samples": 2, "log_completions": 0, "kv_dtype": "f32", "dtype": "q8"}}]}
JSON
"$ENGINE" train --spec "$tmp/spec.json" --data-dir "$tmp/data" > "$tmp/events" 2>"$tmp/err" \
  || { cat "$tmp/err"; tail -3 "$tmp/events"; echo "grpo: 0 passed, 1 failed"; exit 1; }
/usr/bin/python3 - "$tmp/events" <<'PY' || fail=1
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
rl = [e["values"] for e in ev if e["type"] == "metric" and e["stage"] == "rl"]
first = sum(v["reward"] for v in rl[:4]) / 4
last = sum(v["reward"] for v in rl[-4:]) / 4
print(f"grpo reward: first 4 steps {first:.3f}, last 4 steps {last:.3f}")
need = ["reward_std", "rewards/format/mean", "rewards/accuracy/mean", "frac_reward_zero_std", "kl",
        "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
        "completions/mean_length", "completions/min_length", "completions/max_length",
        "completions/clipped_ratio", "loss", "grad_norm", "learning_rate", "num_tokens", "step_time",
        "time/generate", "time/score", "time/train", "tokens_per_second",
        "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
        "sampling/importance_sampling_ratio/max", "sampling/sampling_logp_difference/mean",
        "sampling/importance_sampling_masked"]
missing = [k for k in need if k not in rl[0]]
samples = [e for e in ev if e["type"] == "sample" and e["stage"] == "rl"]
evals = [e["values"] for e in ev if e["type"] == "metric" and e["stage"] == "ev"]
ok = True
if missing: print("missing metrics:", missing); ok = False
if len(rl) != 16: print("expected 16 metric events, got", len(rl)); ok = False
if not samples or not {"prompt", "completion", "rewards", "advantage"} <= set(samples[0]): print("bad sample events"); ok = False
if not evals or not {"pass@1", "pass@1_sampled", "maj@2", "format_rate", "mean_length"} <= set(evals[0]): print("bad eval metrics", evals); ok = False
# the sampled pass finds the greedy pass's prompts in the prefix cache
if not evals or not evals[0].get("prompt_tokens_cached", 0) >= 64 * 16: print("eval: prefix cache unused", evals); ok = False
if "prompt_tokens_cached" not in rl[0]: print("grpo: no prompt_tokens_cached"); ok = False
if not last > first + 0.1: print("reward did not rise by 0.1"); ok = False
# bf16 rollouts: the sampler's log-probs differ from the fp32 trainer's a
# little, so the default correction (TRL's sequence_mask, cap 3) weighs
# each sequence by a ratio near 1 and masks none of them here
r = [v["sampling/importance_sampling_ratio/mean"] for v in rl]
d = [v["sampling/sampling_logp_difference/mean"] for v in rl]
print(f"importance weights: mean {min(r):.4f}..{max(r):.4f}, |logp difference| {min(d):.2e}..{max(d):.2e}")
if not all(0 < x < 1e-1 for x in d) or not all(0.5 < x < 1.5 for x in r): print("odd importance weights"); ok = False
sys.exit(0 if ok else 1)
PY
[ $fail = 0 ] && echo "grpo: 1 passed, 0 failed" || { echo "grpo: 0 passed, 1 failed"; exit 1; }
