"""From finished run directories to a comparison: ``comparison.csv``, ``trajectories.csv``, ``winrates.csv``,
``frontier.png``, ``temperature.png``, ``report.md`` and ``compare.json``, and the one-screen table.

``alignkit compare`` and ``alignkit report`` share this one path, so a comparison rebuilt from its run
directories is identical to the one its runs were trained for. Everything here reads what the runs wrote
(through :mod:`alignkit.report.records`); nothing is trained or sampled.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.console import get_logger
from alignkit.errors import AlignkitError
from alignkit.eval.summary import GOLD_MEAN
from alignkit.eval.verdict import ALPHA, MARGIN
from alignkit.report.cost import FIRST_RULE, budget_columns, curves, first_sentence, first_to_reach
from alignkit.report.cost import RULE as COMPUTE_RULE
from alignkit.report.html import write_html
from alignkit.report.markdown import render_markdown
from alignkit.report.plots import plot_compute, plot_frontier, plot_temperature
from alignkit.report.records import (
    HEAD_TO_HEAD_METHOD,
    N_BOOT,
    RunRecord,
    check_runs_share,
    comparison_rows,
    load_runs,
    trajectory_rows,
    winrate_matrix,
)
from alignkit.report.verdicts import (
    CONVERGENCE,
    FAMILY,
    convergence_of,
    headline,
    matched_kl_verdicts,
)
from alignkit.report.verdicts import METHOD as MATCHED_KL_METHOD
from alignkit.report.versions import version_differences, version_warning
from alignkit.runfolder import claim_comparison_dir
from alignkit.runlog import write_json, write_text

LOG = get_logger()


# -------------------------------------------------------------------------------------------------
# the report


class EntriesFailed(AlignkitError):
    """Some entries of a comparison failed; the report of the others was written."""


def build_report(paths: list[Path], out: Path, *, name: str = "comparison", argv: list[str] | None = None,
                 states: dict[str, str] | None = None, failed: dict[str, str] | None = None,
                 margin: float = MARGIN, alpha: float = ALPHA) -> dict:
    """Write every comparison output into ``out`` from the finished runs at ``paths``; returns the index.
    ``margin``: the equivalence margin of the matched-KL verdicts (gold reward); ``alpha``: their level.
    ``states`` records what the comparison did with each run (train, evaluate, current); ``failed`` names the
    entries whose runs failed (and why): reported, and the command fails once the rest is written."""
    import pandas as pd

    failed = failed or {}
    failure = (
        (
            f"compare: {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed: "
            + "; ".join(f"{label} ({why})" for label, why in failed.items())
            + f"; see {out}/logs/<label>.log, then rerun the same command to resume them"
        )
        if failed
        else ""
    )
    if failed and not paths:
        raise AlignkitError(failure)
    runs, broken = load_runs(paths)
    check_runs_share(runs)
    out = claim_comparison_dir(out)
    convergence = {r.label: convergence_of(r) for r in runs}
    rows = comparison_rows(runs, convergence)
    by_label = {r.label: r for r in runs}
    rows = [{**row, **budget_columns(by_label[row["label"]], runs)} for row in rows]
    if not rows:
        raise AlignkitError("report: none of these runs trained a policy (reward-model runs have no samples)")
    frame = pd.DataFrame(rows)
    write_text(out / "comparison.csv", frame.to_csv(index=False, float_format="%.6g"))
    write_text(out / "trajectories.csv", pd.DataFrame(trajectory_rows(runs)).to_csv(index=False,
                                                                                    float_format="%.6g"))
    matrix = winrate_matrix(runs)
    if matrix:
        labels, wins, low, high, n = matrix
        kl = _primary_kl(frame)
        pairs = [{"row": labels[i], "row_kl": kl.get(labels[i]), "column": labels[j],
                  "column_kl": kl.get(labels[j]),
                  "win_rate": wins[i, j], "ci_low": low[i, j], "ci_high": high[i, j], "n_prompts": n}
                 for i in range(len(labels)) for j in range(len(labels)) if i != j]
        write_text(out / "winrates.csv", pd.DataFrame(pairs).to_csv(index=False, float_format="%.6g"))
    labels = {label: c["label"] for label, c in convergence.items()}
    sentences = matched_kl_verdicts(runs, labels, margin=margin, alpha=alpha)
    plot_frontier(runs, out / "frontier.png")
    plot_temperature(frame, out / "temperature.png")
    settings = curves(runs)
    by_seed = curves(runs, by_seed=True)
    first = first_to_reach(by_seed)
    plot_compute(settings, out / "frontier_compute.png", target=first["target"] if first else None)
    index = _index(runs, frame, matrix, sentences, name, argv, convergence)
    index["margin"], index["alpha"] = margin, alpha
    index["version_differences"] = version_differences(runs)
    index["version_warning"] = version_warning(index["version_differences"])
    if index["version_warning"]:
        LOG.warning("report: %s", index["version_warning"], extra={"notice": True})
    index["compute"] = {"rule": COMPUTE_RULE, "first_rule": FIRST_RULE, "first_to_reach": first,
                        "first_to_reach_wall": first_to_reach(by_seed, "wall_s"),
                        "sentence": first_sentence(first)}
    for entry in index["entries"]:
        entry["state"] = (states or {}).get(entry["label"], "current")
    markdown = render_markdown(runs, frame, matrix, index)
    if failed:
        index["failed"] = [{"label": label, "error": why} for label, why in failed.items()]
        markdown += "\n## Failed entries\n\n" + "".join(f"- **{label}**: {why}\n" for label,
                                                        why in failed.items())
    write_text(out / "report.md", markdown)
    write_json(out / "compare.json", index)
    write_html(out, runs, frame, matrix, index, markdown)
    if failed:
        raise EntriesFailed(f"{failure}; the report in {out} covers the other {len(runs)} run(s)")
    if broken:  # the others are reported; the broken one is named, and the command fails
        more = f" (and {len(broken) - 1} more unreadable run(s))" if len(broken) > 1 else ""
        raise AlignkitError(f"report: {broken[0]}{more}; the report in {out} covers the other {len(runs)} "
                            "run(s)")
    return index


def _primary_kl(frame) -> dict:
    """Each entry's KL at the primary (first) temperature, to print beside its win rates."""
    first = frame.drop_duplicates("label")
    return {row["label"]: (None if row["kl_mean"] != row["kl_mean"] else float(row["kl_mean"]))
            for _, row in first.iterrows()}


def _index(runs, frame, matrix, sentences, name, argv, convergence) -> dict:
    first = runs[0].manifest
    return {
        "name": name, "argv": argv or [],
        "entries": [{"label": r.label, "group": r.group, "method": r.summary.method, "sweep": r.sweep,
                     "train_seed": r.manifest.get("train_seed"), "run": r.run_dir.name,
                     "convergence": convergence[r.label], "budget": r.summary.budget} for r in runs],
        "shared": shared_facts(runs),
        "outputs": ["comparison.csv", "trajectories.csv", *(["winrates.csv"] if matrix else []),
                    "frontier.png",
                    "frontier_compute.png", "temperature.png", "report.md"],
        "matched_kl": sentences, "matched_kl_method": MATCHED_KL_METHOD, "matched_kl_family": FAMILY,
        "kl_by_entry": _primary_kl(frame), "convergence_test": CONVERGENCE.describe(),
        "head_to_head": {"method": HEAD_TO_HEAD_METHOD.format(n_boot=N_BOOT),
                         "n_prompts": matrix[4] if matrix else 0,
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
        summary = run.summary
        if summary.training_data:
            facts["pairs"] = summary.training_data
        if summary.judge_agreement:
            facts["judge_agreement"] = summary.judge_agreement
        if summary.gold_agreement:
            facts["gold_agreement"] = summary.gold_agreement
        if summary.judge_kind == "pairwise":
            facts["judge_pairwise"] = True
        if summary.self_judged:
            facts.setdefault("self_judged", []).append(run.label)
        if summary.n_samples is not None:
            facts["eval_prompts"] = summary.n_samples
        rm = run.manifest.get("reward_model")
        if rm:
            facts["reward_model"] = {k: rm.get(k) for k in ("heldout_pairwise_accuracy", "n_heldout_pairs",
                                                            "n_train_pairs", "train_pairwise_accuracy",
                                                            "budget")}
    return facts


def screen_table(out: Path) -> str:
    """The one-screen summary printed at the end: each entry at the primary temperature."""
    import pandas as pd

    frame = pd.read_csv(out / "comparison.csv")
    index = json.loads((out / "compare.json").read_text())
    frame = frame[frame["temperature"] == index["primary_temperature"]]
    lines = [f"{'entry':<28} {'gold':>6} {'KL':>6} {'win rate [95% CI]':>20} {'steps':>6} {'train s':>8}  "
             "convergence"]
    for _, r in frame.iterrows():
        kl = "–" if pd.isna(r["kl_mean"]) else f"{r['kl_mean']:.2f}"
        lines.append(
            f"{r['label'][:28]:<28} {r[GOLD_MEAN]:>6.3f} {kl:>6} "
            f"{r['win_rate_vs_reference']:>6.3f} [{r['win_rate_ci_low']:.2f}, "
            f"{r['win_rate_ci_high']:.2f}] "
            f"{int(r['train_steps']) if not pd.isna(r['train_steps']) else 0:>6} "
            f"{r['train_wall_s'] if not pd.isna(r['train_wall_s']) else 0:>8.1f}  {r['convergence']}"
        )
    lead = headline(index["matched_kl"], list(dict.fromkeys(e["group"] for e in index["entries"])))
    lines += [f"  {lead['sentence']}"] if lead else []  # every pair: the table in report.md
    return "\n".join(lines)
