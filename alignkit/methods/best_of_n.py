"""Best-of-N sampling: draw N completions from the SFT policy and keep the one a reward scores highest.

There is no training; the "policy" is a sampling procedure around the frozen SFT model. Its KL from the
reference is known in closed form for continuous rewards, log N - (N-1)/N (Stiennon et al. 2020; it is an
upper bound in general, Beirami et al. 2024), and :meth:`BestOfNPolicy.sequence_kl` also *measures* it
from samples, so best-of-N lands on the same reward-vs-KL plot as the trained methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignkit.artifacts import RewardSettings, reward_needs
from alignkit.config import option
from alignkit.eval.kl_knob import KLKnob
from alignkit.models.policy import KLEstimatingPolicy, Policy, Rollout
from alignkit.registry import register_method
from alignkit.runlog import write_json
from alignkit.runtime import Runtime
from alignkit.stages.workspace import Workspace

META_FILE = "alignkit_best_of_n.json"


@dataclass
class BestOfNConfig(RewardSettings):
    """Best-of-N sampling from the SFT policy (no training), ranked by ``reward``: the learned proxy reward
    model, or the gold reward (an oracle upper bound)."""

    n: int = option(4, "completions sampled per prompt; the highest-reward one is kept", ge=1)
    kl_reference_samples: int = option(16, "extra reference samples per prompt for the measured KL", ge=1)


def analytic_kl(n: int) -> float:
    """KL(best-of-n || reference) = log n - (n-1)/n for a continuous reward; an upper bound otherwise."""
    return math.log(n) - (n - 1) / n


def log_ratio_estimate(reward: float, reference_rewards: np.ndarray, n: int) -> float:
    """Estimate of log pi_bon(y) / pi_ref(y) for a completion y with reward ``reward``, given rewards of
    independent reference samples for the same prompt.

    Best-of-n gives the set of completions with reward r the mass F(r)^n - F(r-)^n, shared in proportion
    to pi_ref, so pi_bon(y) / pi_ref(y) = (F(r)^n - F(r-)^n) / (F(r) - F(r-)), with F the reward's CDF
    under pi_ref. For a continuous reward that is n F(r)^(n-1), i.e. log n + (n-1) log F(r). F is estimated
    from the m reference rewards with y itself counted as one more draw, which keeps F(r) >= 1/(m+1)
    (never log 0) and handles ties (discrete rewards) exactly; without ties it is log n + (n-1) log F with
    F within a rank of (rank + 0.5)/(m+1). n = 1 gives exactly 0.
    """
    m = len(reference_rewards)
    below = float(np.sum(reference_rewards < reward))
    tied = float(np.sum(reference_rewards == reward))
    low, high = below / (m + 1), (below + tied + 1) / (m + 1)  # F(r-) and F(r)
    return math.log((high ** n - low ** n) / (high - low))


class BestOfNPolicy(KLEstimatingPolicy):
    """The SFT model sampled best-of-n: ``sample`` draws n completions per prompt and keeps the best.

    ``token_logprobs`` is inherited and scores with the SFT model, i.e. gives pi_ref, not pi_bon (whose
    log-probs are intractable); use :meth:`sequence_kl` for KL(pi_bon || pi_ref).
    """

    def __init__(self, base: Policy, reward, n: int, kl_reference_samples: int = 16):
        super().__init__(base.model, base.tokenizer, base.device, base.max_length)
        self.base = base
        self.reward = reward  # reward(rollout) -> np.ndarray of scores, one per row
        self.n = n
        self.kl_reference_samples = kl_reference_samples
        self.sampling: dict = {}

    def summarize_kl(self, row: dict) -> None:
        """The reported KL is the analytic log n - (n-1)/n; the sampled estimate, biased low with few
        reference samples, stays as a diagnostic."""
        analytic = analytic_kl(self.n)
        row.update(kl_sampled_estimate=row["kl_mean"], kl_sampled_estimate_sem=row["kl_sem"],
                       kl_mean=analytic, kl_sem=0.0, kl_ci_low=analytic, kl_ci_high=analytic,
                       kl_kind="analytic",
                       best_of_n=self.n)

    def sample(self, prompts: list[str], **sampling) -> Rollout:
        """n samples per prompt from the SFT policy; the highest-reward one per prompt (first on ties)."""
        self.sampling = {k: v for k, v in sampling.items() if k != "budget"}
        n = self.n
        candidates = self.base.sample([p for p in prompts for _ in range(n)], **sampling)
        scores = self.reward(candidates).reshape(len(prompts), n)
        rows = [i * n + int(j) for i, j in enumerate(scores.argmax(axis=1))]
        return candidates.select(rows)

    def sequence_kl(self, reference, rollout: Rollout, runtime: Runtime) -> np.ndarray:
        """A measured estimate of KL(pi_bon || pi_ref) per sample: log pi_bon(y)/pi_ref(y) estimated by
        :func:`log_ratio_estimate` from ``kl_reference_samples`` fresh reference samples per prompt, drawn
        with the same sampling settings as the rollout. Its mean over pi_bon's samples estimates the KL;
        with few reference samples it errs low (about 15% at n=4, m=16 for a continuous reward). The
        analytic log n - (n-1)/n (``kl_analytic`` in the summary) is an upper bound, exact for
        continuous rewards."""
        m, prompts = self.kl_reference_samples, rollout.prompts
        sampling = {**(self.sampling or {"max_new_tokens": int(rollout.batch.completion_lengths.max())}),
                    "runtime": runtime}
        chosen = self.reward(rollout)
        refs = reference.as_policy().sample([p for p in prompts for _ in range(m)], **sampling)
        ref_scores = self.reward(refs).reshape(len(prompts), m)
        return np.array([log_ratio_estimate(r, row, self.n) for r, row in zip(chosen, ref_scores)])

    def save(self, folder: str | Path) -> None:
        """The SFT model and tokenizer, plus a note that it is sampled best-of-n."""
        super().save(folder)
        write_json(Path(folder) / META_FILE, {"best_of_n": self.n})


def reward_function(ws: Workspace, cfg: BestOfNConfig):
    """``rollout -> scores``: what ``cfg`` ranks by (:meth:`~alignkit.stages.workspace.Workspace.reward_for`),
    the
    reward model scoring text as it was trained (EOS where the sampler stopped), or the gold reward."""
    proxy = ws.reward_for(cfg)
    if proxy is None:
        gold = ws.gold
        return lambda rollout: np.asarray(gold(rollout.prompts, rollout.completions), dtype=np.float64)
    return lambda rollout: np.asarray(proxy(rollout.prompts, rollout.completions, rollout.ended),
                                      dtype=np.float64)


@register_method("best_of_n", config=BestOfNConfig, trains=False, needs=reward_needs,
                 kl_knob=lambda cfg: KLKnob("n", rises=True, integer=True))
def best_of_n(ws: Workspace, cfg: BestOfNConfig):
    """Best-of-N sampling from the SFT policy, ranked by the reward model or the gold reward (no training)."""
    return BestOfNPolicy(ws.sft, reward_function(ws, cfg), cfg.n, cfg.kl_reference_samples)
