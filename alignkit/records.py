"""Finished run directories as records, and the tables a comparison is built from: one row per run and
temperature, trajectories, head-to-head win rates and the points of the reward-vs-KL frontier. Everything
here reads what runs wrote; nothing is trained or sampled. ``alignkit compare`` and ``alignkit report`` share
it, and the same refusal of runs that do not share their shared sections."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignkit.config import first_difference
from alignkit.errors import AlignkitError
from alignkit.eval.frontier import FrontierPoint, describe_matched_kl, matched_kl_difference
from alignkit.eval.stats import head_to_head
from alignkit.runlog import read_jsonl

N_BOOT = 2000
HEAD_TO_HEAD_METHOD = ("paired bootstrap over the shared evaluation prompts ({n_boot} resamples of the prompts, "
                       "the same resample for every pair; percentile 95% interval); the judge scores each "
                       "entry's completion for the same prompt, ties count one half")


# sections every entry must share; reward_model only among the entries that use a reward model
SHARED = ("seed", "model", "task", "gold_reward", "gold_reward_options", "preferences", "eval")


@dataclass
class RunRecord:
    """A finished run as the report sees it."""

    run_dir: Path
    manifest: dict
    summary: dict
    trajectory: list[dict] = field(default_factory=list)

    @property
    def info(self) -> dict:
        return self.manifest.get("compare_entry") or {}

    @property
    def label(self) -> str:
        return self.info.get("label") or self.run_dir.name

    @property
    def group(self) -> str:
        return self.info.get("group") or self.label

    @property
    def sweep(self) -> dict:
        return self.info.get("sweep") or {}

    @property
    def cost(self) -> dict:
        """Wall time and peak memory: measured, so kept in the manifest, not in the deterministic summary."""
        return self.manifest.get("cost") or {}

    @property
    def is_policy(self) -> bool:
        return "by_temperature" in self.summary

    def samples(self) -> list[dict]:
        return read_jsonl(self.run_dir / "eval" / "samples.jsonl")


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories, expanding a comparison folder into its runs (in its recorded order)."""
    found = []
    for path in map(Path, paths):
        if (path / "manifest.json").is_file():
            found.append(path)
        elif (path / "compare.json").is_file():
            index = json.loads((path / "compare.json").read_text())
            found.extend(path / "runs" / e["run"] for e in index["entries"])
        elif (path / "runs").is_dir():
            found.extend(sorted(p for p in (path / "runs").iterdir() if (p / "manifest.json").is_file()))
        else:
            raise AlignkitError(f"{path}: not a run directory (no manifest.json) nor a comparison folder")
    return found


def load_runs(paths: list[Path]) -> list[RunRecord]:
    runs = []
    for run_dir in find_run_dirs(paths):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        summary_path = run_dir / "eval" / "summary.json"
        if manifest.get("status") != "done" or not summary_path.is_file():
            raise AlignkitError(f"{run_dir}: the run is not finished (status {manifest.get('status')!r})")
        runs.append(RunRecord(run_dir, manifest, json.loads(summary_path.read_text()),
                              read_jsonl(run_dir / "eval" / "trajectory.jsonl")))
    if not runs:
        raise AlignkitError("report: no finished runs found")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise AlignkitError(f"report: two runs share a label: {sorted({x for x in labels if labels.count(x) > 1})}")
    return runs


def check_runs_share(runs: list[RunRecord]) -> None:
    """The same refusal as ``alignkit compare``: runs that disagree on a shared section are not comparable."""
    check_shared([(r.label, r.manifest["recipe"], "reward_model" in r.manifest.get("artifact_keys", {}))
                  for r in runs])


# -------------------------------------------------------------------------------------------------
# tables


def converged(run: RunRecord) -> str:
    """``no`` when the last checkpoint's gold reward still rose by more than its own 95% half-width since
    the previous one (training had not levelled off); ``yes`` otherwise; ``unknown`` without two points;
    ``no training`` for a method that does not train (Best-of-N)."""
    if not (run.summary.get("budget") or {}).get("steps"):
        return "no training"
    trajectory = run.trajectory
    points = sorted((p for p in trajectory if p.get("gold_reward_mean") is not None), key=lambda p: p["step"])
    if len(points) < 2:
        return "unknown"
    last, previous = points[-1], points[-2]
    half = (last["gold_reward_ci_high"] - last["gold_reward_ci_low"]) / 2
    return "no" if last["gold_reward_mean"] - previous["gold_reward_mean"] > half else "yes"


def comparison_rows(runs: list[RunRecord]) -> list[dict]:
    """One row per run x temperature with every number the evaluator and the run recorded."""
    rows = []
    for run in runs:
        if not run.is_policy:
            continue
        s, budget, cost = run.summary, run.summary.get("budget", {}), run.cost
        base = {"label": run.label, "group": run.group, "method": s["method"],
                "sweep": ";".join(f"{k}={v}" for k, v in run.sweep.items()),
                "sweep_value": next(iter(run.sweep.values()), None) if len(run.sweep) == 1 else None,
                "train_seed": run.manifest.get("train_seed"), "converged": converged(run)}
        for row in s["by_temperature"]:
            rows.append({**base, **{k: row.get(k) for k in ROW_KEYS},
                         **{f"train_{k}" if not k.startswith("train") else k: v for k, v in budget.items()},
                         "train_wall_s": cost.get("train_wall_s"), "eval_wall_s": cost.get("eval_wall_s"),
                         "peak_rss_mb": (cost.get("peak_memory") or {}).get("cpu_max_rss_mb"),
                         "run": run.run_dir.name})
    return rows


ROW_KEYS = ("temperature", "top_p", "n_samples", "gold_reward_mean", "gold_reward_ci_low", "gold_reward_ci_high",
            "reference_gold_reward_mean", "proxy_reward_mean", "proxy_reward_ci_low", "proxy_reward_ci_high",
            "reference_proxy_reward_mean", "kl_kind", "kl_mean", "kl_ci_low", "kl_ci_high", "kl_sampled_estimate",
            "win_rate_vs_reference", "win_rate_ci_low", "win_rate_ci_high", "distinct_1", "distinct_2",
            "self_bleu", "mean_completion_tokens", "eos_fraction", "eval_generated_sequences",
            "eval_generated_tokens")


def trajectory_rows(runs: list[RunRecord]) -> list[dict]:
    return [{"label": r.label, "group": r.group, **p} for r in runs for p in r.trajectory]


def winrate_matrix(runs: list[RunRecord]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Head-to-head win rates between every two policies on the same prompts (None if they differ, or if
    a pairwise judge decided: it compared each policy with the reference only, and gave no scores)."""
    policies = [r for r in runs if r.is_policy]
    samples = [r.samples() for r in policies]
    if len(policies) < 2 or any([s["prompt"] for s in x] != [s["prompt"] for s in samples[0]] for x in samples):
        return None
    if any("judge_score" not in s for x in samples for s in x):  # a pairwise judge only compared with the reference
        return None
    scores = np.array([[s["judge_score"] for s in x] for x in samples], dtype=np.float64)
    wins, low, high = head_to_head(scores, n_boot=N_BOOT, seed=0)
    return [r.label for r in policies], wins, low, high, scores.shape[1]


# -------------------------------------------------------------------------------------------------
# frontier maths over runs


def frontier_points(runs: list[RunRecord]) -> dict[str, list[FrontierPoint]]:
    """Per group, every point on the reward-vs-KL plane at the primary temperature: final evaluations and
    the trajectory checkpoints evaluated on the same prompts (as the DPO paper draws its frontier over all
    evaluations); checkpoints on a subset of the prompts are another basis and stay out."""
    points: dict[str, list[FrontierPoint]] = {}
    for run in runs:
        if not run.is_policy:
            continue
        s = run.summary
        rows = [(s, run.label)] + [(p, f"{run.label}@step{p['step']}") for p in run.trajectory
                                   if p["n_samples"] == s["n_samples"]]
        for row, name in rows:
            if row.get("kl_mean") is None or not math.isfinite(row["kl_mean"]):
                continue
            sem = (row["gold_reward_ci_high"] - row["gold_reward_mean"]) / 1.96
            points.setdefault(run.group, []).append(FrontierPoint(row["kl_mean"], row["gold_reward_mean"], sem,
                                                                  label=name))
    return points


def matched_kl_sentences(points: dict[str, list[FrontierPoint]]) -> list[dict]:
    out = []
    for a, b in itertools.combinations(sorted(points), 2):
        result = matched_kl_difference(points[a], points[b])
        out.append({"a": a, "b": b, "result": result, "sentence": describe_matched_kl(a, b, result)})
    return out


def check_shared(resolved: list[tuple[str, dict, bool]]) -> None:
    """Refuse, in one line naming the key and both values, entries that disagree on a shared section.
    ``resolved``: (label, the resolved recipe as plain data, whether the entry uses the reward model)."""
    first_label, first, _ = resolved[0]
    for label, recipe, _ in resolved[1:]:
        _refuse_difference(first_label, _shared_sections(first), label, _shared_sections(recipe))
    rm_users = [(label, recipe["methods"]["reward_model"]) for label, recipe, uses in resolved if uses]
    for label, settings in rm_users[1:]:
        _refuse_difference(rm_users[0][0], {"reward_model": rm_users[0][1]}, label, {"reward_model": settings})


def _shared_sections(recipe: dict) -> dict:
    """A resolved recipe's shared sections (a run recorded before ``gold_reward_options`` existed has none)."""
    return {k: recipe.get(k, {}) if k == "gold_reward_options" else recipe[k] for k in SHARED}


def _refuse_difference(label_a: str, a: dict, label_b: str, b: dict) -> None:
    found = first_difference(a, b)
    if found:
        path, value_a, value_b = found
        raise AlignkitError(f"compare: entries {label_a!r} and {label_b!r} disagree on shared key {path}: "
                            f"{json.dumps(value_a)} vs {json.dumps(value_b)} (every entry must share the task, "
                            f"reference, judge, pairs and evaluation; set it once with --set {path}=...)")
