"""What a comparison may conclude from its finished runs: each entry's convergence label (the stated test of
:mod:`alignkit.eval.convergence` on its trajectory and learning rate) and, for every two methods, the
matched-KL verdict (:mod:`alignkit.eval.matched_kl`, :mod:`alignkit.eval.verdict`), over every evaluated point
and over final points only, all of a report's comparisons one Holm family. Nothing here trains or samples: it
reads what the runs wrote."""

from __future__ import annotations

import itertools

import numpy as np

from alignkit.eval.convergence import ConvergenceTest, convergence
from alignkit.eval.kl_knob import GroupRun, next_setting
from alignkit.eval.matched_kl import KL_MATCH, MatchedKL, Setting, holm, matched_kl
from alignkit.eval.verdict import ALPHA, MARGIN, Run, SettingFor, decide, interval_text, sentence
from alignkit.report.records import RunRecord
from alignkit.runlog import read_jsonl

CONVERGENCE = ConvergenceTest()
METHOD = (f"each method's frontier as a staircase (at KL k: the best gold of its points at KL <= k, points "
          f"within {KL_MATCH:.0%} of a KL counting as at it; never interpolated), each step chosen on half "
          "of "
          "the prompts and read on the other; per paired unit (seed, or replicate) the mean over the "
          "measured "
          f"KLs of one method's lower step against the other's upper step; a t interval over units (k - 1 "
          f"degrees of freedom); one unit covers evaluation noise only and names no winner")


def lr_fraction(run: RunRecord) -> float | None:
    """The training learning rate at the run's last trajectory checkpoint over its peak (None when the run
    logged no learning rate or has no trajectory)."""
    stage, steps = run.summary.method, [p["step"] for p in run.trajectory]
    logged = [(r["step"], r.get("lr",
                                r.get("learning_rate"))) for r in read_jsonl(run.run_dir / "metrics.jsonl")
              if r.get("stage") == stage and isinstance(r.get("lr", r.get("learning_rate")), (int, float))]
    if not logged or not steps:
        return None
    peak = max(lr for _, lr in logged)
    at_end = [lr for step, lr in logged if step <= max(steps)]
    return at_end[-1] / peak if at_end and peak > 0 else None


def convergence_of(run: RunRecord, test: ConvergenceTest = CONVERGENCE) -> dict:
    """The run's label (converged, declining, still improving, budget-limited, unknown; no training for
    Best-of-N) and the numbers behind it."""
    if not run.summary.steps:
        return {"label": "no training"}
    return convergence(run.trajectory, test, lr_fraction=lr_fraction(run),
                       reference=run.summary.reference_gold_reward_mean)


def _points(run: RunRecord, checkpoints: bool) -> list[tuple[object, np.ndarray, np.ndarray]]:
    """(position, per-prompt gold, per-prompt KL) of the run's final evaluation and, with ``checkpoints``, of
    each trajectory checkpoint that recorded its prompts on the same prompt set."""
    rows = run.samples()
    if not rows or any(r.get("kl") is None for r in rows):
        return []
    gold = np.array([r["gold_reward"] for r in rows], float)
    kl = (np.full(len(rows), run.summary.kl_mean) if run.summary.kl_kind == "analytic"
          else np.array([r["kl"] for r in rows], float))  # Best-of-N reports its analytic KL
    points = [("final", gold, kl)]
    if checkpoints:
        points += [(p["step"], np.asarray(p["gold_per_prompt"], float), np.asarray(p["kl_per_prompt"], float))
                   for p in run.trajectory if len(p.get("gold_per_prompt") or ()) == len(rows)]
    return points


def unit_of(run: RunRecord, units: str) -> object:
    """The run's unit: its replicate (``r<k>/`` label prefix of a combined report) or its training seed."""
    return run.label.split("/")[0] if units == "replicate" else run.manifest.get("train_seed")


def settings(runs: list[RunRecord], checkpoints: bool = True,
             units: str = "seed") -> dict[str, list[Setting]]:
    """Each method's evaluated points as settings with one row per unit (a replicate's seeds averaged); a
    setting is a sweep point at one position (a checkpoint step, or the final evaluation)."""
    grouped: dict[tuple, dict[object, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for run in runs:
        if not run.is_policy:
            continue
        sweep = tuple(sorted(run.sweep.items()))
        for position, gold, kl in _points(run, checkpoints):
            grouped.setdefault((run.group, sweep, position), {}).setdefault(unit_of(run, units),
                                                                            []).append((gold, kl))
    out: dict[str, list[Setting]] = {}
    for (group, sweep, position), by_unit in grouped.items():
        label = f"{group}{''.join(f'@{k}={v}' for k, v in sweep)}@{position}"
        ids = list(by_unit)
        gold = np.stack([np.mean([g for g, _ in by_unit[u]], axis=0) for u in ids])
        kl = np.stack([np.mean([k for _, k in by_unit[u]], axis=0) for u in ids])
        out.setdefault(group, []).append(Setting(gold, kl, label, tuple(ids)))
    return out


def matched_kl_verdicts(runs: list[RunRecord], labels: dict[str, str], *, units: str = "seed",
                        margin: float = MARGIN, alpha: float = ALPHA) -> list[dict]:
    """For every two methods: the verdict over all evaluated points and over final points only, each with its
    table row and sentence under the verdict rule. ``labels``: each run's convergence label. Every comparison
    of the report is one Holm family (:data:`FAMILY`). ``units``: what a setting's several runs are (seeds;
    replicates in a combined report); ``alpha``: the level a winner's Holm-adjusted p must be below (a
    look's share under ``compare --decide``)."""
    every, finals = settings(runs, True, units), settings(runs, False, units)
    pairs = list(itertools.combinations(sorted(every), 2))
    results = [matched_kl(every[a], every[b], unit_kind=units) for a, b in pairs]
    final = [matched_kl(finals[a], finals[b], unit_kind=units) if a in finals and b in finals else None
             for a, b in pairs]
    adjusted, family = _family(results + final)
    facts = [Run(r.label, r.group, labels[r.label], r.summary.kl_mean) for r in runs if r.is_policy]
    setting_for = settings_ahead(runs)
    out = []
    for i, ((a, b), result, last) in enumerate(zip(pairs, results, final)):
        p_all, p_final = adjusted[i], adjusted[len(pairs) + i]
        verdict = decide(a, b, result, facts, margin=margin, adjusted_p=p_all, alpha=alpha,
                         setting_for=setting_for)
        last_verdict = decide(a, b, last, facts, margin=margin, adjusted_p=p_final, alpha=alpha,
                              setting_for=setting_for)
        out.append({"a": a, "b": b, "result": _as_dict(result, p_all), "final_points_only": _as_dict(last,
                                                                                                     p_final),
                    "verdict": verdict.kind, "winner": verdict.winner, "answer": verdict.answer,
                    "would_take": verdict.would_take, "needs": verdict.needs,
                    "final_verdict": last_verdict.answer,
                    "family": family, "margin": margin, "alpha": alpha,
                    "sentence": sentence(a, b, result, verdict, family=family, margin=margin, alpha=alpha),
                    "final_sentence": sentence(a, b, last, last_verdict, family=family, margin=margin,
                                               alpha=alpha)})
    return out


def settings_ahead(runs: list[RunRecord]) -> SettingFor:
    """For the verdicts: the setting that moves a method's points toward a KL
    (:mod:`alignkit.eval.kl_knob`), read from its runs' recorded method sections."""
    by_group: dict[str, list[GroupRun]] = {}
    for run in (r for r in runs if r.is_policy):
        method = run.summary.method
        section = ((run.manifest.get("recipe") or {}).get("methods") or {}).get(method) or {}
        by_group.setdefault(run.group, []).append(GroupRun(method, section, run.sweep, run.summary.kl_mean))
    return lambda group, kl: next_setting(group, by_group.get(group, []), kl)


FAMILY = ("every matched-KL comparison of a report (all points and final points only, every pair with two or "
          "more units) is one family, Holm-adjusted: a winner is named only when its Holm-adjusted p-value "
          "(the t test of the side that leads) is below 0.05")


def table_rows(verdicts: list[dict]) -> list[str]:
    """The verdicts as one markdown table, a row per pair."""
    lines = ["| pair | KL range (nats) | difference | 95% interval | units | verdict | final points only "
             "| what it would take / would flip it |", "|---" * 8 + "|"]
    for v in verdicts:
        r = v["result"]
        cells = ([f"{r['kl_low']:.3g}\u2013{r['kl_high']:.3g}", f"{r['difference']:.3f}",
                  interval_text(r["ci_low"], r["ci_high"]), str(r["units"])] if r else ["\u2013"] * 4)
        lines.append(f"| {v['a']} vs {v['b']} | " + " | ".join(cells)
                     + f" | {v['answer']} | {v['final_verdict']} | {v['would_take']} |")
    return lines


def headline(verdicts: list[dict], groups: list[str]) -> dict | None:
    """The verdict of the first two methods in the order the comparison named them (None with fewer)."""
    named = list(dict.fromkeys(groups))[:2]
    return next((v for v in verdicts if {v["a"], v["b"]} == set(named)), None) if len(named) == 2 else None


def _family(results: list) -> tuple[list[float | None], int]:
    """Holm-adjusted p-values of the results with two or more units (None elsewhere), and how many
    were adjusted."""
    defined = [i for i, r in enumerate(results) if r is not None and r.units > 1]
    adjusted = holm([results[i].p_value for i in defined])
    out: list[float | None] = [None] * len(results)
    for i, p in zip(defined, adjusted):
        out[i] = p
    return out, len(defined)


def _as_dict(result: MatchedKL | None, holm_p: float | None = None) -> dict | None:
    if result is None:
        return None
    return {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "kl_low": result.kl_low, "kl_high": result.kl_high, "units": result.units, "seeds": result.units,
            "p_value": result.p_value, "holm_p": holm_p, "unit_differences": result.unit_differences,
            "unit_sd": result.unit_sd}
