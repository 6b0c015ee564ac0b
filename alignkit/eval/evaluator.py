"""The one evaluator every method goes through: sample the held-out prompts at each temperature, score the
samples with the gold reward (and the reward model, where the run has one), measure the KL to the reference
between the distributions actually sampled, and compare against the reference policy's samples.

Every number in a summary describes what was sampled: the temperature and top-p, which KL was measured
(``kl_kind``), how many samples, and what the evaluation itself generated.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from alignkit.config import option
from alignkit.context import Budget
from alignkit.eval.diversity import diversity as diversity_of
from alignkit.eval.judges import is_pairwise
from alignkit.eval.kl import sequence_kl
from alignkit.eval.length_control import char_lengths, length_controlled
from alignkit.eval.stats import mean_interval, wilson_interval, win_rate
from alignkit.eval.summary import (
    GOLD_CI_HIGH,
    GOLD_CI_LOW,
    GOLD_MEAN,
    GOLD_STD,
    KL_KIND,
    KL_MEAN,
    N_SAMPLES,
    REFERENCE_GOLD_MEAN,
    TEMPERATURE,
    WIN_RATE,
)
from alignkit.models.policy import KLEstimatingPolicy
from alignkit.registry import REWARDS
from alignkit.runtime import Runtime

RewardFn = Callable[..., np.ndarray]


@dataclass
class EvalConfig:
    """How policies are evaluated: the same prompts, sampling settings and judge for every method."""

    n_prompts: int = option(256, "held-out prompts to sample", ge=1)
    prompts: str = option("", "a separate evaluation prompt set: a .txt file (one prompt per line), or a "
                              "file, save_to_disk folder or hf:ID of prompts or of pairs whose prompts are "
                              "used (default: the task's held-out prompts)")
    temperature: float = option(1.0, "primary sampling temperature (summary, frontier); 0 = greedy (no KL)",
                                ge=0)
    temperatures: list[float] = option([], "further temperatures for win rate vs temperature, e.g. [0, 0.5, "
                                           "1.5]")
    top_p: float = option(1.0, "nucleus sampling mass (KL is then taken between the truncated distributions)",
                          gt=0, le=1)
    max_new_tokens: int = option(32, "completion length", ge=1)
    batch_size: int = option(64, "prompts per generate call", ge=1)
    judge: str = option("gold", "what decides win rates: gold (the recipe's gold_reward) or a registered "
                                "reward/judge, e.g. heldout-reward-model, llm-judge, endpoint-judge, "
                                "reward-model or your own (see `alignkit list`)")
    judge_options: dict[str, Any] = option({}, "settings of a judge that takes them, e.g. llm-judge's "
                                               "{model: PATH} or "
                                     "endpoint-judge's {base_url: URL, model: NAME, api_key_env: VAR}")
    judge_fraction: float = option(0.1, "heldout-reward-model only: prompt groups of the preference pairs "
                                        "carved out, before the train/held-out split, to train the judge on "
                                        "(no method sees them)", gt=0, lt=1)
    agreement_pairs: int = option(512, "held-out preference pairs the judge's agreement with them is "
                                       "measured on (the first N; 0: all)", ge=0)
    allow_self_judging: bool = option(False, "let the reward model judge a method that optimised it (refused "
                                             "otherwise); the report then says so in its caveats")
    every_steps: int = option(0, "also evaluate checkpoints every N optimiser steps (PPO: iterations) on "
                                 "trajectory_prompts prompts, tracing the run on the reward-vs-KL plane (0: "
                                 "off)",
                              ge=0)
    trajectory_prompts: int = option(256, "evaluation prompts (the first N) for trajectory points; fewer is "
                                          "cheaper but puts checkpoints on another basis than final results",
                                          ge=1)
    diversity: bool = option(True, "report distinct-1/2 and self-BLEU of the samples")

    def check(self):
        if any(t is not None and t < 0 for t in self.temperatures):
            yield "temperatures", "every temperature must be >= 0"
        if self.judge != "gold" and self.judge not in REWARDS:
            known = ["gold", *REWARDS.names()]
            close = difflib.get_close_matches(self.judge, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            yield "judge", f"unknown judge {self.judge!r}{hint} (known: {', '.join(known)})"

    def all_temperatures(self) -> list[float]:
        """The primary temperature first, then the others, without repeats."""
        return list(dict.fromkeys([float(self.temperature), *map(float, self.temperatures)]))


@dataclass
class ReferenceSamples:
    """The reference policy's samples on the evaluation prompts, with their gold scores."""

    prompts: list[str]
    completions: list[str]
    ended: list[bool]
    gold: np.ndarray

    def head(self, n: int) -> "ReferenceSamples":
        return ReferenceSamples(self.prompts[:n], self.completions[:n], self.ended[:n], self.gold[:n])

    def records(self) -> list[dict]:
        return [{"prompt": p, "completion": c, "ended": e, "gold_reward": float(g)}
                for p, c, e, g in zip(self.prompts, self.completions, self.ended, self.gold)]

    @classmethod
    def from_records(cls, rows: list[dict]) -> "ReferenceSamples":
        return cls([r["prompt"] for r in rows], [r["completion"] for r in rows],
                   [bool(r["ended"]) for r in rows],
                   np.array([r["gold_reward"] for r in rows], dtype=np.float64))


def kl_kind(temperature: float, top_p: float) -> str:
    """Which KL a temperature measures: ``exact`` KL(pi || pi_ref) at T = 1 and top_p = 1; between the
    tempered/truncated policy and the reference processed the same way otherwise; none for greedy."""
    if temperature == 0:
        return "none (greedy)"
    return "exact" if temperature == 1 and top_p == 1 else "sampled-distribution"


def score_texts(reward: RewardFn, prompts: list[str], completions: list[str],
                ended: list[bool]) -> np.ndarray:
    """Call a reward or judge, passing where each completion stopped with EOS if it takes ``ended``."""
    try:
        takes_ended = "ended" in inspect.signature(reward).parameters
    except (TypeError, ValueError):
        takes_ended = False
    scores = reward(prompts, completions, ended=ended) if takes_ended else reward(prompts, completions)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _policy_kl(policy, reference, rollout, temperature: float, top_p: float,
               runtime: Runtime) -> Optional[np.ndarray]:
    if temperature == 0:
        return None
    if isinstance(policy, KLEstimatingPolicy):  # log-probs intractable (Best-of-N): it estimates its own KL
        return policy.sequence_kl(reference, rollout, runtime)
    return sequence_kl(policy, reference, rollout, runtime, temperature=temperature, top_p=top_p)


def evaluate_at(policy, reference, samples: ReferenceSamples, gold: RewardFn, cfg: EvalConfig, *,
                temperature: float, seed: int, runtime: Runtime, judge: RewardFn | None = None,
                proxy: RewardFn | None = None, diversity: bool | None = None) -> tuple[dict, list[dict]]:
    """One row of results for ``policy`` sampled at ``temperature`` on the reference samples' prompts."""
    prompts, cost = samples.prompts, Budget()
    torch.manual_seed(seed)
    rollout = policy.sample(prompts, max_new_tokens=cfg.max_new_tokens, temperature=temperature,
                            top_p=cfg.top_p,
                            batch_size=cfg.batch_size, progress=f"sampling policy (T={temperature:g})",
                            budget=cost,
                            runtime=runtime)
    scores = score_texts(gold, prompts, rollout.completions, rollout.ended)
    judged, judged_reference, preferences = scores, samples.gold, None
    if is_pairwise(judge):  # asked directly: the policy's completion against the reference's, both orders
        before = dict(judge.stats)
        preferences = judge.compare(prompts, rollout.completions, samples.completions)
        pairwise = {f"judge_{k}": judge.stats[k] - before[k] for k in ("unparseable", "order_disagreements")}
    elif judge is not None and judge is not gold:
        judged = score_texts(judge, prompts, rollout.completions, rollout.ended)
        judged_reference = score_texts(judge, prompts, samples.completions, samples.ended)
    kl = _policy_kl(policy, reference, rollout, temperature, cfg.top_p, runtime)
    rate = win_rate(judged, judged_reference) if preferences is None else float(np.mean(preferences))
    gold_mean, gold_low, gold_high = mean_interval(scores)
    row = {
        TEMPERATURE: temperature, "top_p": cfg.top_p, N_SAMPLES: len(prompts),
        GOLD_MEAN: gold_mean, GOLD_STD: float(scores.std()), GOLD_CI_LOW: gold_low, GOLD_CI_HIGH: gold_high,
        REFERENCE_GOLD_MEAN: float(samples.gold.mean()),
        KL_KIND: kl_kind(temperature, cfg.top_p),
        WIN_RATE: rate, **dict(zip(("win_rate_ci_low", "win_rate_ci_high"),
                                                  wilson_interval(rate, len(prompts)))),
        "mean_completion_tokens": float(rollout.batch.completion_lengths.float().mean()),
        "eos_fraction": float(np.mean(rollout.ended)),
        "eval_generated_sequences": cost.generated_sequences, "eval_generated_tokens": cost.generated_tokens,
    }
    if kl is None:
        row.update({KL_MEAN: None, "kl_sem": None, "kl_ci_low": None, "kl_ci_high": None})
    else:
        kl_mean, kl_low, kl_high = mean_interval(kl)
        row.update({KL_MEAN: kl_mean}, kl_sem=(kl_high - kl_mean) / 1.96 if len(kl) > 1 else None,
                   kl_ci_low=kl_low, kl_ci_high=kl_high)
        if isinstance(policy, KLEstimatingPolicy):
            policy.summarize_kl(row)
    proxy_scores = None
    if proxy is not None:
        proxy_scores = score_texts(proxy, prompts, rollout.completions, rollout.ended)
        mean, low, high = mean_interval(proxy_scores)
        row.update(proxy_reward_mean=mean, proxy_reward_ci_low=low, proxy_reward_ci_high=high,
                   reference_proxy_reward_mean=float(score_texts(proxy, prompts, samples.completions,
                                                                 samples.ended).mean()))
    verdicts = preferences if preferences is not None else \
        (judged > judged_reference) + 0.5 * (judged == judged_reference)
    row.update(length_controlled(verdicts, char_lengths(rollout.completions),
                                 char_lengths(samples.completions)))
    # the share of prompts whose verdict flipped with the order of the two replies
    if preferences is not None:
        row.update(pairwise, judge_ties=int(np.sum(preferences == 0.5)),
                   judge_position_bias=pairwise["judge_order_disagreements"] / len(prompts))
    if cfg.diversity if diversity is None else diversity:
        row.update(diversity_of(rollout.completions))
    rows = [{"prompt": p, "completion": c, "ended": e, "gold_reward": float(s),
             "kl": None if kl is None else float(k), "judge_score": float(j),
             "reference_completion": rc, "reference_gold_reward": float(rs),
             "reference_judge_score": float(rj)}
            for p, c, e, s, k, j, rc, rs, rj in zip(prompts, rollout.completions, rollout.ended, scores,
                                                     kl if kl is not None else [None] * len(prompts), judged,
                                                     samples.completions, samples.gold, judged_reference)]
    if proxy_scores is not None:
        for r, value in zip(rows, proxy_scores):
            r["proxy_reward"] = float(value)
    if preferences is not None:  # a pairwise judge gives no score per completion: its verdict per prompt
        for r, value in zip(rows, preferences):
            del r["judge_score"], r["reference_judge_score"]
            r["judge_preference"] = float(value)
    return row, rows


def trajectory_point(policy, reference, samples: ReferenceSamples, gold: RewardFn, cfg: EvalConfig, *,
                     seed: int, step: int, runtime: Runtime) -> dict:
    """A checkpoint's point on the reward-vs-KL plane, at the primary temperature on the
    trajectory prompts."""
    row, rows = evaluate_at(policy, reference, samples, gold, cfg, temperature=cfg.temperature, seed=seed,
                            runtime=runtime, diversity=False)
    return {"step": step, **{k: row[k] for k in TRAJECTORY_KEYS}, **per_prompt(rows)}


def per_prompt(rows: list[dict]) -> dict:
    """Each prompt's gold reward and KL at a checkpoint, so a comparison can resample the checkpoint as it
    resamples final evaluations (:mod:`alignkit.eval.matched_kl`)."""
    return {"gold_per_prompt": [r["gold_reward"] for r in rows], "kl_per_prompt": [r["kl"] for r in rows]}


PER_PROMPT_KEYS = ("gold_per_prompt", "kl_per_prompt")
TRAJECTORY_KEYS = (TEMPERATURE, N_SAMPLES, GOLD_MEAN, GOLD_CI_LOW, GOLD_CI_HIGH, KL_KIND, KL_MEAN,
                   "kl_ci_low", "kl_ci_high", WIN_RATE, "win_rate_ci_low", "win_rate_ci_high")
