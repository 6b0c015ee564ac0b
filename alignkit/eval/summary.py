"""A run's evaluation summary (``eval/summary.json``) as one type, and the names of the numbers in a row of
results, so the file's layout is written down here once and every reader and writer goes through it.

The file is flat: the method and name, then the primary results (a policy's row at the primary temperature,
or the numbers another artifact reports about itself, e.g. a reward model's accuracy), then the judge,
every temperature's row (``by_temperature``: policies only), the training budget and the training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from alignkit.runlog import write_json

# the keys of a row of results that code reads by name: a temperature's row, a trajectory point, a table row
TEMPERATURE = "temperature"
N_SAMPLES = "n_samples"
GOLD_MEAN = "gold_reward_mean"
GOLD_STD = "gold_reward_std"
GOLD_CI_LOW = "gold_reward_ci_low"
GOLD_CI_HIGH = "gold_reward_ci_high"
REFERENCE_GOLD_MEAN = "reference_gold_reward_mean"
KL_KIND = "kl_kind"
KL_MEAN = "kl_mean"
WIN_RATE = "win_rate_vs_reference"

SUMMARY_FILE = Path("eval") / "summary.json"  # relative to the run folder


@dataclass
class EvalSummary:
    """What a run's final evaluation found. A field that is None is absent from the file; ``results`` holds
    every other key, in the file's order, so a summary read and written again is the same bytes."""

    method: Optional[str] = None
    name: Optional[str] = None
    results: dict[str, Any] = field(default_factory=dict)  # the primary results, at the top level of the file
    judge: Optional[str] = None
    judge_kind: Optional[str] = None  # "score" or "pairwise"
    judge_agreement: Optional[dict] = None
    gold_agreement: Optional[dict] = None
    self_judged: Optional[bool] = None
    by_temperature: Optional[list[dict]] = None  # a policy's row at every temperature, the primary first
    budget: Optional[dict] = None  # what training consumed (alignkit.context.Budget.as_dict)
    training_data: Optional[dict] = None

    @property
    def is_policy(self) -> bool:
        return self.by_temperature is not None

    @property
    def gold_reward_mean(self) -> Optional[float]:
        return self.results.get(GOLD_MEAN)

    @property
    def reference_gold_reward_mean(self) -> Optional[float]:
        return self.results.get(REFERENCE_GOLD_MEAN)

    @property
    def kl_mean(self) -> Optional[float]:
        return self.results.get(KL_MEAN)

    @property
    def kl_kind(self) -> Optional[str]:
        return self.results.get(KL_KIND)

    @property
    def win_rate_vs_reference(self) -> Optional[float]:
        return self.results.get(WIN_RATE)

    @property
    def n_samples(self) -> Optional[int]:
        return self.results.get(N_SAMPLES)

    @property
    def steps(self) -> Optional[int]:
        """Optimiser steps trained (PPO: iterations), from the budget."""
        return (self.budget or {}).get("steps")

    def to_dict(self) -> dict[str, Any]:
        """The summary as the file holds it: method, name, the results, then the other fields in order."""
        named = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "results"]
        head = [(k, v) for k, v in named[:2] if v is not None]
        tail = [(k, v) for k, v in named[2:] if v is not None]
        return {**dict(head), **self.results, **dict(tail)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalSummary":
        """A summary from the file's data (validated by :func:`alignkit.runfolder.check_summary`)."""
        names = {f.name for f in fields(cls)} - {"results"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   results={k: v for k, v in data.items() if k not in names})

    def write(self, run_dir: Path) -> None:
        """``eval/summary.json`` in ``run_dir``, atomically (reading
        it: :class:`alignkit.runfolder.RunFolder`)."""
        write_json(Path(run_dir) / SUMMARY_FILE, self.to_dict())
