"""From finished run directories to a comparison: ``comparison.csv``, ``trajectories.csv``, ``winrates.csv``,
``frontier.png``, ``temperature.png``, ``report.md`` and ``compare.json``.

``alignkit compare`` and ``alignkit report`` share this one path, so a comparison rebuilt from its run
directories is identical to the one its runs were trained for. Everything here reads what the runs wrote;
nothing is trained or sampled.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.eval.frontier import FrontierPoint, describe_matched_kl, matched_kl_difference
from alignkit.eval.stats import head_to_head
from alignkit.runlog import claim_comparison_dir, read_jsonl, write_json, write_text

N_BOOT = 2000
HEAD_TO_HEAD_METHOD = ("paired bootstrap over the shared evaluation prompts ({n_boot} resamples of the prompts, "
                       "the same resample for every pair; percentile 95% interval); the judge scores each "
                       "entry's completion for the same prompt, ties count one half")


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
    from alignkit.compare import check_shared

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
    """Head-to-head win rates between every two policies on the same prompts (None if they differ)."""
    policies = [r for r in runs if r.is_policy]
    samples = [r.samples() for r in policies]
    if len(policies) < 2 or any([s["prompt"] for s in x] != [s["prompt"] for s in samples[0]] for x in samples):
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


# -------------------------------------------------------------------------------------------------
# the report


def build_report(paths: list[Path], out: Path, *, name: str = "comparison", argv: list[str] | None = None,
                 states: dict[str, str] | None = None) -> dict:
    """Write every comparison output into ``out`` from the finished runs at ``paths``; returns the index.
    ``states`` records what the comparison did with each run (train, evaluate, current)."""
    import pandas as pd

    from alignkit.eval.plots import plot_frontier, plot_temperature

    runs = load_runs(paths)
    check_runs_share(runs)
    out = claim_comparison_dir(out)
    rows = comparison_rows(runs)
    if not rows:
        raise AlignkitError("report: none of these runs trained a policy (reward-model runs have no samples)")
    frame = pd.DataFrame(rows)
    write_text(out / "comparison.csv", frame.to_csv(index=False, float_format="%.6g"))
    write_text(out / "trajectories.csv", pd.DataFrame(trajectory_rows(runs)).to_csv(index=False, float_format="%.6g"))
    matrix = winrate_matrix(runs)
    if matrix:
        labels, wins, low, high, n = matrix
        pairs = [{"row": labels[i], "column": labels[j], "win_rate": wins[i, j], "ci_low": low[i, j],
                  "ci_high": high[i, j], "n_prompts": n}
                 for i in range(len(labels)) for j in range(len(labels)) if i != j]
        write_text(out / "winrates.csv", pd.DataFrame(pairs).to_csv(index=False, float_format="%.6g"))
    points = frontier_points(runs)
    sentences = matched_kl_sentences(points)
    plot_frontier(runs, out / "frontier.png")
    plot_temperature(frame, out / "temperature.png")
    index = _index(runs, frame, matrix, sentences, name, argv)
    for entry in index["entries"]:
        entry["state"] = (states or {}).get(entry["label"], "current")
    write_text(out / "report.md", render_markdown(runs, frame, matrix, index))
    write_json(out / "compare.json", index)
    return index


def _index(runs, frame, matrix, sentences, name, argv) -> dict:
    first = runs[0].manifest
    return {
        "name": name, "argv": argv or [],
        "entries": [{"label": r.label, "group": r.group, "method": r.summary.get("method"), "sweep": r.sweep,
                     "train_seed": r.manifest.get("train_seed"), "run": r.run_dir.name,
                     "converged": converged(r), "budget": r.summary.get("budget")} for r in runs],
        "shared": shared_facts(runs),
        "outputs": ["comparison.csv", "trajectories.csv", *(["winrates.csv"] if matrix else []), "frontier.png",
                    "temperature.png", "report.md"],
        "matched_kl": sentences,
        "head_to_head": {"method": HEAD_TO_HEAD_METHOD.format(n_boot=N_BOOT), "n_prompts": matrix[4] if matrix else 0,
                         "judge": first["recipe"]["eval"]["judge"]},
        "primary_temperature": first["recipe"]["eval"]["temperature"],
    }


def shared_facts(runs: list[RunRecord]) -> dict:
    """What every entry shared, with the numbers that bound a conclusion (judge and reward-model accuracy)."""
    recipe = runs[0].manifest["recipe"]
    facts = {"model": recipe["model"]["name_or_path"], "task": recipe["task"]["dataset"],
             "gold_reward": recipe["gold_reward"], "seed": recipe["seed"], "eval": recipe["eval"],
             "preferences": recipe["preferences"]}
    for run in runs:
        gold = run.manifest.get("gold_reward_meta") or {}
        if gold.get("heldout_accuracy") is not None:
            facts["gold_heldout_accuracy"] = gold["heldout_accuracy"]
        if run.summary.get("training_data"):
            facts["pairs"] = run.summary["training_data"]
        rm = run.manifest.get("reward_model")
        if rm:
            facts["reward_model"] = {k: rm.get(k) for k in ("heldout_pairwise_accuracy", "n_heldout_pairs",
                                                            "n_train_pairs", "train_pairwise_accuracy", "budget")}
    return facts


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(runs: list[RunRecord], frame, matrix, index: dict) -> str:
    """The report a person reads: what was compared and shared, the numbers, both plots, computed
    sentences, and the caveats that bound the conclusion."""
    shared, temperature = index["shared"], index["primary_temperature"]
    primary = frame[frame["temperature"] == temperature]
    lines = [f"# Comparison: {index['name']}", ""]
    if index["argv"]:
        lines += [f"Command: `alignkit {' '.join(index['argv'][1:])}`", ""]
    lines += ["## What was compared", "",
              "| entry | method | sweep | train seed | optimiser steps | train sequences | train tokens | "
              "sampled in training (seq / tokens) | train wall s | converged |", "|---" * 10 + "|"]
    for r in runs:
        b, c = r.summary.get("budget", {}), r.cost
        lines.append(f"| {r.label} | {r.summary.get('method')} | {_fmt(';'.join(f'{k}={v}' for k, v in r.sweep.items()) or None)} "
                     f"| {r.manifest.get('train_seed')} | {b.get('steps', '–')} | {b.get('train_sequences', '–')} | "
                     f"{b.get('train_tokens', '–')} | {b.get('generated_sequences', 0)} / {b.get('generated_tokens', 0)} "
                     f"| {_fmt(c.get('train_wall_s'), 1)} | {converged(r)} |")
    lines += ["", "## What every entry shared", ""] + _shared_lines(shared) + [""]
    lines += [f"## Results at temperature {temperature:g}", "",
              "| entry | gold reward [95% CI] | proxy (RM) | KL [95% CI] | KL kind | win rate vs reference [95% CI] "
              "| distinct-2 | self-BLEU |", "|---" * 8 + "|"]
    for _, row in primary.iterrows():
        lines.append(f"| {row['label']} | {_fmt(row['gold_reward_mean'])} [{_fmt(row['gold_reward_ci_low'])}, "
                     f"{_fmt(row['gold_reward_ci_high'])}] | {_fmt(row.get('proxy_reward_mean'))} | "
                     f"{_fmt(row['kl_mean'], 2)} [{_fmt(row['kl_ci_low'], 2)}, {_fmt(row['kl_ci_high'], 2)}] | "
                     f"{row['kl_kind']} | {_fmt(row['win_rate_vs_reference'])} [{_fmt(row['win_rate_ci_low'])}, "
                     f"{_fmt(row['win_rate_ci_high'])}] | {_fmt(row.get('distinct_2'))} | {_fmt(row.get('self_bleu'))} |")
    reference = primary["reference_gold_reward_mean"].iloc[0]
    lines += ["", f"The reference (SFT) policy's gold reward at this temperature is {reference:.3f}.", "",
              "![gold reward vs KL](frontier.png)", "",
              "Solid markers: final evaluations (sweep points joined in order of the swept value, bars: 95% "
              "intervals on both axes); faint markers: checkpoints during training (`eval.every_steps`, on the "
              f"first {min(shared['eval']['trajectory_prompts'], shared['eval']['n_prompts'])} of the "
              f"{shared['eval']['n_prompts']} prompts).", "",
              "## At matched KL", ""]
    lines += [f"- {s['sentence']}" for s in index["matched_kl"]] or ["- Only one method: nothing to match."]
    lines += ["", "Matched KL: each method's Pareto frontier over all its points on the full prompt set (final "
              "evaluations, and checkpoints when `eval.trajectory_prompts` covers every prompt), "
              "interpolated linearly over the KL range both cover; the interval treats the errors along the "
              "frontier as fully correlated (conservative).", "", "## Win rate vs temperature", "",
              "![win rate vs temperature](temperature.png)", ""]
    lines += _head_to_head_lines(matrix, index) + [""] + _caveats(runs, primary, shared, index)
    return "\n".join(lines) + "\n"


def _shared_lines(shared: dict) -> list[str]:
    ev, prefs = shared["eval"], shared["preferences"]
    lines = [f"- Starting policy and KL reference: `{shared['model']}`; task `{shared['task']}`; shared seed "
             f"{shared['seed']}.",
             f"- Evaluation: {ev['n_prompts']} held-out prompts, {ev['max_new_tokens']} new tokens, top_p "
             f"{ev['top_p']}, temperatures {[ev['temperature'], *ev['temperatures']]}; the reference's samples "
             f"are drawn once per temperature and shared.",
             f"- Gold judge: `{shared['gold_reward']}`" + (
                 f", {shared['gold_heldout_accuracy']:.3f} accuracy on held-out labelled reviews."
                 if shared.get("gold_heldout_accuracy") is not None else "."),
             f"- Win rates are decided by `{ev['judge']}`."]
    if shared.get("pairs"):
        p = shared["pairs"]
        lines.append(f"- Preference pairs ({prefs['source']}, {prefs['completions_per_prompt']} completions per "
                     f"prompt): every method that learns from pairs (reward model, DPO family, KTO, "
                     f"Preferred-FT, Unlikelihood) trained on the same {p['train_pairs']} pairs from {p['train_prompts']} prompts; "
                     f"{p['heldout_pairs']} pairs from {p['heldout_prompts']} prompts were held out from all of them.")
    if shared.get("reward_model"):
        rm = shared["reward_model"]
        lines.append(f"- Reward model (the proxy of PPO, GRPO, RLOO and Best-of-N): pairwise accuracy "
                     f"{_fmt(rm['heldout_pairwise_accuracy'])} on the {rm['n_heldout_pairs']} held-out pairs "
                     f"({_fmt(rm['train_pairwise_accuracy'])} on its {rm['n_train_pairs']} training pairs).")
    return lines


def _head_to_head_lines(matrix, index) -> list[str]:
    lines = ["## Head to head", ""]
    if not matrix:
        return lines + ["Not computed: fewer than two policies, or they were not evaluated on the same prompts."]
    labels, wins, low, high, n = matrix
    lines += [f"Win rate of the row entry against the column entry on the same {n} prompts: "
              f"{index['head_to_head']['method']}. All pairs are in `winrates.csv`.", ""]
    if len(labels) <= 10:
        lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, label in enumerate(labels):
            cells = ["–" if i == j else f"{wins[i, j]:.2f} [{low[i, j]:.2f}, {high[i, j]:.2f}]"
                     for j in range(len(labels))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _caveats(runs, primary, shared, index) -> list[str]:
    lines = ["## Caveats", ""]
    unconverged = [e["label"] for e in index["entries"] if e["converged"] == "no"]
    unknown = [e["label"] for e in index["entries"] if e["converged"] == "unknown"]
    if unconverged:
        lines.append(f"- Still improving when training stopped (gold reward rose by more than its interval at "
                     f"the last checkpoint): {', '.join(unconverged)}. Their points under-state their method.")
    if unknown:
        lines.append(f"- No trajectory to judge convergence (set `eval.every_steps`): {', '.join(unknown)}.")
    steps = {e["label"]: (e.get("budget") or {}).get("steps") for e in index["entries"]}
    if len({v for v in steps.values() if v}) > 1:
        lines.append("- Training budgets differ (optimiser steps: " + ", ".join(f"{k} {v}" for k, v in steps.items())
                     + "); compare methods at their budgets, not as if equal.")
    if shared.get("reward_model"):
        acc = shared["reward_model"]["heldout_pairwise_accuracy"]
        lines.append(f"- Methods that use the reward model (PPO, GRPO, RLOO, Best-of-N) optimise a proxy that ranks "
                     f"held-out pairs correctly {_fmt(acc)} of the time; a proxy column rising while gold stays flat "
                     f"is over-optimisation.")
    if shared.get("gold_heldout_accuracy") is not None:
        lines.append(f"- The gold judge is itself a classifier ({shared['gold_heldout_accuracy']:.3f} held-out "
                     f"accuracy), a stand-in for human preference.")
    seeds = {e["train_seed"] for e in index["entries"]}
    if len(seeds) <= 1:
        lines.append("- One training seed: intervals reflect evaluation-sample noise, not run-to-run variation "
                     "(use --seeds).")
    kinds = sorted(set(primary["kl_kind"].dropna()))
    lines.append(f"- KL kinds at the primary temperature: {', '.join(kinds)} (exact: summed per-token KL on the "
                 f"policy's own samples; analytic: Best-of-N's log n - (n-1)/n, its sampled estimate in "
                 f"`kl_sampled_estimate`).")
    return lines
