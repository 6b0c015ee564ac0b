"""The one evaluator every method goes through: sample held-out prompts, score with the gold reward,
measure KL(pi || pi_ref) on the policy's own samples, and compare against the reference's samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from alignkit.config import option
from alignkit.rl.ops import full_kl_from_logits
from alignkit.eval.stats import mean_and_sem, wilson_interval, win_rate

RewardFn = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class EvalConfig:
    """How policies are evaluated: the same prompts, sampling settings and judge for every method."""

    n_prompts: int = option(256, "held-out prompts to sample", ge=1)
    temperature: float = option(1.0, "sampling temperature (KL is exact only at 1.0 with top_p 1.0)", ge=0)
    top_p: float = option(1.0, "nucleus sampling mass", gt=0, le=1)
    max_new_tokens: int = option(32, "completion length", ge=1)
    batch_size: int = option(64, "prompts per generate call", ge=1)


def sequence_kl(policy, reference, rollout) -> np.ndarray:
    """Per-sample sequence KL(pi || pi_ref): the exact per-token KL of the next-token distributions summed
    over the sampled completion. Its mean is an unbiased estimate of the sequence KL when the samples come
    from pi itself (temperature 1, top_p 1), and unlike sum(log pi - log pi_ref) it is never negative."""
    with torch.no_grad():
        _, logits = policy.token_logprobs(rollout.batch, return_logits=True)
        _, ref_logits = reference.token_logprobs(rollout.batch, return_logits=True)
        mask = rollout.batch.target_mask.to(logits.device)
        kl = (full_kl_from_logits(logits, ref_logits) * mask).sum(-1)
    return kl.double().cpu().numpy()


def evaluate_policy(policy, reference, prompts: list[str], gold: RewardFn, cfg: EvalConfig, *, seed: int,
                    method: str, kl_fn=sequence_kl) -> tuple[dict, list[dict]]:
    """Summary metrics and per-prompt samples of ``policy`` against the reference policy's samples."""
    sampling = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                    batch_size=cfg.batch_size)
    torch.manual_seed(seed)
    rollout = policy.sample(prompts, **sampling, progress=f"sampling {method}")
    torch.manual_seed(seed + 1)
    baseline = reference.as_policy().sample(prompts, **sampling, progress="sampling reference")
    scores = np.asarray(gold(prompts, rollout.completions), float)
    baseline_scores = np.asarray(gold(prompts, baseline.completions), float)
    kl = kl_fn(policy, reference, rollout)
    rate = win_rate(scores, baseline_scores)
    low, high = wilson_interval(rate, len(prompts))
    kl_mean, kl_sem = mean_and_sem(kl)
    summary = {
        "method": method,
        "gold_reward_mean": float(scores.mean()),
        "gold_reward_std": float(scores.std()),
        "reference_gold_reward_mean": float(baseline_scores.mean()),
        "kl_mean": kl_mean,
        "kl_sem": kl_sem,
        "win_rate_vs_reference": rate,
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "n_samples": len(prompts),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
    }
    samples = [
        {"prompt": p, "completion": c, "gold_reward": s, "kl": k, "reference_completion": rc,
         "reference_gold_reward": rs}
        for p, c, s, k, rc, rs in zip(prompts, rollout.completions, scores, kl, baseline.completions,
                                      baseline_scores)
    ]
    return summary, samples
