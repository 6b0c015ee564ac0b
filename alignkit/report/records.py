"""Finished run directories as records, and the tables a comparison is built from: one row per run and
temperature, trajectories, head-to-head win rates and the points of the reward-vs-KL frontier. Everything
here reads what runs wrote; nothing is trained or sampled. ``alignkit compare`` and ``alignkit report`` share
it, and the same refusal of runs that do not share their shared sections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignkit.config import first_difference
from alignkit.errors import AlignkitError
from alignkit.eval.evaluator import PER_PROMPT_KEYS
from alignkit.eval.stats import head_to_head
from alignkit.eval.summary import (
    GOLD_CI_HIGH,
    GOLD_CI_LOW,
    GOLD_MEAN,
    KL_KIND,
    KL_MEAN,
    N_SAMPLES,
    REFERENCE_GOLD_MEAN,
    TEMPERATURE,
    WIN_RATE,
    EvalSummary,
)
from alignkit.runfolder import ComparisonEntry, RunFolderError, read_json, read_run
from alignkit.runformat import older_default
from alignkit.runlog import read_jsonl

N_BOOT = 2000
HEAD_TO_HEAD_METHOD = ("paired bootstrap over the shared evaluation prompts ({n_boot} resamples of the "
                       "prompts, the same resample for every pair; percentile 95% interval); the judge "
                       "scores each entry's completion for the same prompt, ties count one half")


# sections every entry must share; reward_model only among the entries that use a reward model
SHARED = ("seed", "model", "task", "gold_reward", "gold_reward_options", "preferences", "eval")


@dataclass
class RunRecord:
    """A finished run as the report sees it."""

    run_dir: Path
    manifest: dict
    summary: EvalSummary
    trajectory: list[dict] = field(default_factory=list)

    @property
    def entry(self) -> ComparisonEntry | None:
        """Its place in a comparison (the manifest's ``compare_entry``), None for a run of its own."""
        return ComparisonEntry.from_manifest(self.manifest)

    @property
    def label(self) -> str:
        return self.entry.label if self.entry else self.run_dir.name

    @property
    def group(self) -> str:
        return (self.entry.group if self.entry else "") or self.label

    @property
    def sweep(self) -> dict:
        return self.entry.sweep if self.entry else {}

    @property
    def cost(self) -> dict:
        """Wall time and peak memory: measured, so kept in the manifest, not in the deterministic summary."""
        return self.manifest.get("cost") or {}

    @property
    def is_policy(self) -> bool:
        return self.summary.is_policy

    def samples(self) -> list[dict]:
        return read_jsonl(self.run_dir / "eval" / "samples.jsonl")


REPORT_HINT = "rerun that run (alignkit run or compare, with --overwrite) to train it again"


def find_run_dirs(paths: list[Path]) -> list[tuple[Path, bool]]:
    """Run directories, expanding a comparison folder into its runs (in its recorded order), each with
    whether it came from a comparison folder (one broken run there does not stop the others' report)."""
    found = []
    for path in map(Path, paths):
        if (path / "manifest.json").is_file():
            found.append((path, False))
        elif (path / "compare.json").is_file():
            index = read_json(path / "compare.json",
                              "rebuild it with alignkit compare (or report) into a new --out")
            entries = index.get("entries") if isinstance(index, dict) else None
            if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("run"), str)
                                                        and e["run"] and Path(e["run"]).name == e["run"]
                                                        for e in entries):
                raise RunFolderError(f"{path / 'compare.json'}: entries: expected a list of runs; rebuild it "
                                     "with alignkit compare into a new --out")
            if not (path / "runs").is_dir():
                raise RunFolderError(f"{path}: a report folder (alignkit report's output holds no runs), not "
                                     "a run or comparison folder; point report at the run or comparison "
                                     "folders it was built from")
            found.extend((path / "runs" / e["run"], True) for e in entries)
        elif (path / "runs").is_dir():
            found.extend(
                (p, True) for p in sorted((path / "runs").iterdir()) if (p / "manifest.json").is_file()
            )
        else:
            raise AlignkitError(f"{path}: not a run directory (no manifest.json) nor a comparison folder")
    return found


def read_record(run_dir: Path) -> RunRecord:
    """A finished run, every file it holds validated: one line naming the file otherwise."""
    folder = read_run(run_dir, REPORT_HINT)
    folder.require_finished("report")
    return RunRecord(run_dir, folder.manifest, folder.summary(REPORT_HINT), folder.trajectory(REPORT_HINT))


def load_runs(paths: list[Path]) -> tuple[list[RunRecord], list[str]]:
    """The finished runs at ``paths`` and one line for each run of a comparison folder that could not be
    read (a run named directly that cannot be read stops the report)."""
    runs, broken = [], []
    for run_dir, in_comparison in find_run_dirs(paths):
        try:
            runs.append(read_record(run_dir))
        except RunFolderError as exc:
            if not in_comparison:
                raise
            broken.append(str(exc))
    if not runs:
        raise AlignkitError(broken[0] if broken else "report: no finished runs found")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise AlignkitError("report: two runs share a label: "
                            f"{sorted({x for x in labels if labels.count(x) > 1})}")
    return runs, broken


def check_runs_share(runs: list[RunRecord]) -> None:
    """The same refusal as ``alignkit compare``: runs that disagree on a shared section are not comparable."""
    check_shared([(r.label, r.manifest["recipe"], "reward_model" in r.manifest.get("artifact_keys", {}))
                  for r in runs])


# -------------------------------------------------------------------------------------------------
# tables


def comparison_rows(runs: list[RunRecord], convergence: dict[str, dict]) -> list[dict]:
    """One row per run x temperature with every number the evaluator and the run recorded, and each run's
    convergence test (``convergence``: by run label)."""
    rows = []
    for run in runs:
        if not run.is_policy:
            continue
        s, budget, cost = run.summary, run.summary.budget or {}, run.cost
        base = {"label": run.label, "group": run.group, "method": s.method,
                "sweep": ";".join(f"{k}={v}" for k, v in run.sweep.items()),
                "sweep_value": next(iter(run.sweep.values()), None) if len(run.sweep) == 1 else None,
                "train_seed": run.manifest.get("train_seed"),
                **{f"convergence{'_' + k if k != 'label' else ''}": v for k,
                   v in convergence[run.label].items()
                   if k != "window_steps"}}
        for row in s.by_temperature:
            rows.append({**base, **{k: row.get(k) for k in ROW_KEYS},
                         **{f"train_{k}" if not k.startswith("train") else k: v for k, v in budget.items()},
                         "train_wall_s": cost.get("train_wall_s"), "eval_wall_s": cost.get("eval_wall_s"),
                         "peak_rss_mb": (cost.get("peak_memory") or {}).get("cpu_max_rss_mb"),
                         "run": run.run_dir.name})
    return rows


LENGTH_CONTROL_KEYS = ("lc_win_rate", "lc_win_rate_ci_low", "lc_win_rate_ci_high", "lc_length_slope",
                       "mean_length_difference_chars", "judge_position_bias")
ROW_KEYS = (TEMPERATURE, "top_p", N_SAMPLES, GOLD_MEAN, GOLD_CI_LOW, GOLD_CI_HIGH,
            REFERENCE_GOLD_MEAN, "proxy_reward_mean", "proxy_reward_ci_low", "proxy_reward_ci_high",
            "reference_proxy_reward_mean", KL_KIND, KL_MEAN, "kl_ci_low", "kl_ci_high", "kl_sampled_estimate",
            WIN_RATE, "win_rate_ci_low", "win_rate_ci_high", "distinct_1", "distinct_2",
            "self_bleu", "mean_completion_tokens", "eos_fraction", "eval_generated_sequences",
            "eval_generated_tokens", *LENGTH_CONTROL_KEYS)


def trajectory_rows(runs: list[RunRecord]) -> list[dict]:
    """Every checkpoint's summary (its per-prompt values stay in the run folder)."""
    return [{"label": r.label, "group": r.group, **{k: v for k, v in p.items() if k not in PER_PROMPT_KEYS}}
            for r in runs for p in r.trajectory]


def winrate_matrix(runs: list[RunRecord]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Head-to-head win rates between every two policies on the same prompts (None if they differ, or if
    a pairwise judge decided: it compared each policy with the reference only, and gave no scores)."""
    policies = [r for r in runs if r.is_policy]
    samples = [r.samples() for r in policies]
    if len(policies) < 2 or any(
        [s["prompt"] for s in x] != [s["prompt"] for s in samples[0]] for x in samples
    ):
        return None
    # a pairwise judge only compared with the reference
    if any("judge_score" not in s for x in samples for s in x):
        return None
    scores = np.array([[s["judge_score"] for s in x] for x in samples], dtype=np.float64)
    wins, low, high = head_to_head(scores, n_boot=N_BOOT, seed=0)
    return [r.label for r in policies], wins, low, high, scores.shape[1]




def check_shared(resolved: list[tuple[str, dict, bool]]) -> None:
    """Refuse, in one line naming the key and both values, entries that disagree on a shared section.
    ``resolved``: (label, the resolved recipe as plain data, whether the entry uses the reward model)."""
    first_label, first, _ = resolved[0]
    for label, recipe, _ in resolved[1:]:
        _refuse_difference(first_label, _shared_sections(first), label, _shared_sections(recipe))
    # a setting added since, at the value runs recorded before it have, is no difference
    rm_users = [(label, {k: v for k, v in recipe["methods"]["reward_model"].items()
                         if not older_default(k, v, "reward_model")})
                for label, recipe, uses in resolved if uses]
    for label, settings in rm_users[1:]:
        _refuse_difference(rm_users[0][0], {"reward_model": rm_users[0][1]}, label,
                           {"reward_model": settings})


def _shared_sections(recipe: dict) -> dict:
    """A resolved recipe's shared sections (a run recorded before ``gold_reward_options`` existed
    has none)."""
    return {k: recipe.get(k, {}) if k == "gold_reward_options" else recipe[k] for k in SHARED}


def _refuse_difference(label_a: str, a: dict, label_b: str, b: dict) -> None:
    found = first_difference(a, b)
    if found:
        path, value_a, value_b = found
        raise AlignkitError(f"compare: entries {label_a!r} and {label_b!r} disagree on shared key {path}: "
                            f"{json.dumps(value_a)} vs {json.dumps(value_b)} (every entry must share the "
                            "task, "
                            f"reference, judge, pairs and evaluation; set it once with --set {path}=...)")
