"""``alignkit compare --replicates N``: the whole comparison N times, each replicate re-drawing every shared
stage (the preference pairs and their split, the reward model, the prompts; the builtin SFT model is the one
the package ships, as it always was one build whatever the seed), so the
verdict can see how far the pipeline's own randomness moves it.

Replicate k is an ordinary comparison in ``OUT/replicate-k/`` whose shared ``seed`` is the recipe's plus
``SEED_STRIDE * k`` (replicate 0 is the comparison without ``--replicates``); replicates share only the data
and the gold judge. The combined report (``OUT/report.md``, ``OUT/replicates.csv``, ``OUT/replicates.json``)
gives each method's replicate-to-replicate standard deviation of gold reward and KL, and one matched-KL
verdict per pair of methods from a replicate-level bootstrap: in every resample the replicates (with the seeds
within them) are drawn with replacement, then the prompts, and both frontiers are rebuilt; a winner is named
only when the sign holds in every replicate alone, under the verdict rule (:mod:`alignkit.report.verdicts`).

``python -m alignkit.compare.replicates OUT`` rebuilds the combined report from finished replicate folders and
prints the standard-deviation table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from alignkit.compare.comparison import run_comparison
from alignkit.compare.executors import ExecutorSettings
from alignkit.compare.plan import ComparisonPlan, command_line, plan_comparison
from alignkit.compare.writer import ComparisonWriter
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import MARGIN
from alignkit.report.records import RunRecord, load_runs
from alignkit.report.verdicts import FAMILY, convergence_of, matched_kl_verdicts, table_rows
from alignkit.runfolder import ComparisonEntry, claim_comparison_dir
from alignkit.runlog import write_json, write_text

SEED_STRIDE = 1000  # replicate k's shared seed: the recipe's + 1000 k (far from --seeds' training seeds)
BOOTSTRAP = ("the replicate is the unit: each replicate's difference from its own staircases (its seeds "
             "averaged), a t interval over replicates with k - 1 degrees of freedom")


def replicate_plans(specs, *, replicates: int, out: Path, overrides=(), overwrite: bool = False,
                    executor: ExecutorSettings | None = None, argv: list[str] | None = None,
                    **options) -> list[ComparisonPlan]:
    """The comparison's plan once per replicate, into ``out/replicate-k`` with its shared seed moved; each
    records ``argv``, by default the command line of these options (``--replicates N`` and all)."""
    if argv is None:
        argv = command_line(specs, replicates=replicates, out=out, overrides=overrides, overwrite=overwrite,
                            executor=executor, **options)
    base = plan_comparison(specs, overrides=overrides, out=out, argv=argv, **options)
    seed = base.entries[0].recipe.seed
    plans = []
    for k in range(replicates):
        moved = [*overrides, f"seed={seed + SEED_STRIDE * k}"] if k else list(overrides)
        plan = plan_comparison(specs, overrides=moved, out=Path(out) / f"replicate-{k}", overwrite=overwrite,
                               executor=executor, argv=argv, **options)
        plans.append(dataclasses.replace(plan, name=f"{base.name} (replicate {k})"))
    return plans


def run_replicates(plans: list[ComparisonPlan], out: Path, *, cache_dir: Path | None = None) -> dict:
    """Run every replicate's comparison (each reuses its finished runs as any comparison does), then write
    the combined report into ``out``, which stays claimed for this process meanwhile."""
    writer = ComparisonWriter(out)
    writer.check()
    claim_comparison_dir(out)
    writer.claim()
    try:
        for plan in plans:
            run_comparison(plan, cache_dir=cache_dir)
        return combined_report(out, [plan.out for plan in plans], margin=plans[0].margin)
    finally:
        writer.release()


def compare_replicates(specs, replicates: int, *, out: Path | None, **options) -> dict:
    """``alignkit compare ... --replicates N``: plan (``options``: those of :func:`replicate_plans`), run
    (each replicate's entries on its executor: in turn, ``--jobs N`` or Ray), combine, and print the spread
    table and verdicts."""
    out = Path(out or Path("runs") / "compare-replicates")
    plans = replicate_plans(specs, replicates=replicates, out=out, **options)
    index = run_replicates(plans, out)
    print(spread_table(index["spread"]))
    for verdict in index["matched_kl"]:
        print(f"  {verdict['sentence']}")
    print(f"replicates: {out / 'report.md'}", file=sys.stderr)
    return index


def replicate_dirs(out: Path) -> list[Path]:
    """The finished replicate folders of ``out``, in order."""
    found = sorted((p for p in Path(out).glob("replicate-*") if (p / "compare.json").is_file()),
                   key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else 10**9)
    if not found:
        raise AlignkitError(f"{out}: no finished replicate folders (replicate-0, replicate-1, ...) with a "
                            "compare.json")
    return found


def _relabelled(run: RunRecord, replicate: int) -> RunRecord:
    """A run under a label unique across replicates (``r<k>/<label>``), in the same group."""
    entry = dataclasses.replace(run.entry or ComparisonEntry(run.label), label=f"r{replicate}/{run.label}",
                                group=run.group)
    return dataclasses.replace(run, manifest={**run.manifest, "compare_entry": entry.to_dict()})


def spread_rows(per_replicate: list[list[RunRecord]]) -> list[dict]:
    """Per method and sweep point: each replicate's final gold reward and KL (seeds averaged), their mean
    and replicate-to-replicate standard deviation."""
    values: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for runs in per_replicate:
        seen: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for run in runs:
            if run.is_policy and run.summary.kl_mean is not None:
                key = (run.group, ";".join(f"{k}={v}" for k, v in run.sweep.items()))
                seen.setdefault(key, []).append((run.summary.gold_reward_mean, run.summary.kl_mean))
        for key, pairs in seen.items():
            values.setdefault(key, []).append(tuple(np.mean(pairs, axis=0)))
    rows = []
    for (group, sweep), pairs in values.items():
        gold, kl = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        sd = (lambda x: float(x.std(ddof=1)) if len(x) > 1 else None)  # noqa: E731
        rows.append({"group": group, "sweep": sweep, "replicates": len(pairs),
                     "gold_mean": float(gold.mean()),
                     "gold_sd": sd(gold), "kl_mean": float(kl.mean()), "kl_sd": sd(kl),
                     "gold_by_replicate": [round(float(x), 4) for x in gold],
                     "kl_by_replicate": [round(float(x), 3) for x in kl]})
    return rows


def combined_report(out: Path, folders: list[Path], margin: float = MARGIN) -> dict:
    """``out/report.md``, ``out/replicates.csv`` and ``out/replicates.json`` from finished
    replicate folders."""
    import pandas as pd

    per_replicate = [load_runs([folder])[0] for folder in folders]
    runs = [_relabelled(run, k) for k, found in enumerate(per_replicate) for run in found]
    labels = {run.label: convergence_of(run)["label"] for run in runs}
    verdicts = matched_kl_verdicts(runs, labels, units="replicate", margin=margin)
    rows = spread_rows(per_replicate)
    seeds = sorted({run.manifest["recipe"]["seed"] for run in runs})
    index = {"replicates": [str(f) for f in folders], "shared_seeds": seeds, "spread": rows,
             "matched_kl": verdicts,
             "bootstrap": BOOTSTRAP, "family": FAMILY,
             "per_replicate_sentences": [[v["sentence"] for v in json.loads((f / "compare.json").read_text())
                                          .get("matched_kl", [])] for f in folders]}
    write_text(out / "replicates.csv", pd.DataFrame([{k: v for k,
                                                      v in r.items() if "_by_" not in k} for r in rows])
               .to_csv(index=False, float_format="%.6g"))
    write_json(out / "replicates.json", index)
    write_text(out / "report.md", render(index))
    return index


def spread_table(rows: list[dict]) -> str:
    """The replicate-to-replicate spread as a fixed-width table."""
    fmt = lambda x, d: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [f"{'entry':<28} {'n':>3} {'gold mean':>9} {'gold sd':>8} {'KL mean':>8} {'KL sd':>7}"]
    for r in rows:
        name = r["group"] + (f" ({r['sweep']})" if r["sweep"] else "")
        lines.append(f"{name[:28]:<28} {r['replicates']:>3} {fmt(r['gold_mean'], 3):>9} "
                     f"{fmt(r['gold_sd'], 3):>8} {fmt(r['kl_mean'], 2):>8} {fmt(r['kl_sd'], 2):>7}")
    return "\n".join(lines)


def render(index: dict) -> str:
    n = len(index["replicates"])
    lines = [f"# Replicates: {n} comparisons, each re-drawing every shared stage", "",
             f"Shared seeds {index['shared_seeds']} (the preference pairs and their split, "
             f"the reward model and the prompts are drawn from it); the data, the SFT model and the gold "
             f"judge are shared. Each "
             f"replicate's own report: " + ", ".join(f"[{Path(f).name}]({Path(f).name}/report.md)"
                                                     for f in index["replicates"]) + ".", "",
             "## Replicate-to-replicate spread (final evaluations, primary temperature, seeds averaged)", "",
             "| entry | replicates | gold mean | gold sd | KL mean | KL sd | gold by replicate | KL by "
             "replicate |",
             "|---" * 8 + "|"]
    for r in index["spread"]:
        sd = lambda x, d: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
        lines.append(f"| {r['group']}{' (' + r['sweep'] + ')' if r['sweep'] else ''} | {r['replicates']} | "
                     f"{r['gold_mean']:.3f} | {sd(r['gold_sd'], 3)} | {r['kl_mean']:.2f} | "
                     f"{sd(r['kl_sd'], 2)} | {r['gold_by_replicate']} | {r['kl_by_replicate']} |")
    lines += ["", "## At matched KL, over every replicate", ""]
    lines += (
        table_rows(index["matched_kl"]) if index["matched_kl"] else ["Only one method: nothing to match."]
    )
    adjusted = index["matched_kl"][0]["family"] if index["matched_kl"] else 0
    lines += ["", f"Interval: {index['bootstrap']}; it combines evaluation noise with replicate-to-replicate "
              f"variance. Multiplicity: {index['family']} ({adjusted} comparisons adjusted).", "",
              "## Each replicate alone", ""]
    for k, sentences in enumerate(index["per_replicate_sentences"]):
        lines += [f"- replicate {k}: {s}" for s in sentences] or [f"- replicate {k}: no verdict"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m alignkit.compare.replicates OUT``: rebuild the combined report and print the
    spread table."""
    if len(argv) != 1:
        print("usage: python -m alignkit.compare.replicates OUT (a folder written by alignkit compare "
              "--replicates N)",
              file=sys.stderr)
        return 2
    out = Path(argv[0])
    try:
        index = combined_report(out, replicate_dirs(out))
    except AlignkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(spread_table(index["spread"]))
    for verdict in index["matched_kl"]:
        print(f"  {verdict['sentence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
