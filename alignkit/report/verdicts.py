"""What a comparison may conclude from its finished runs: each entry's convergence label (the stated test of
:mod:`alignkit.eval.convergence` on its trajectory and learning rate) and, for every two methods, the
matched-KL verdict of :mod:`alignkit.eval.matched_kl`, over every evaluated point and over final points only.
Nothing here trains or samples: it reads what the runs wrote."""

from __future__ import annotations

import itertools

import numpy as np

from alignkit.eval.convergence import ConvergenceTest, convergence
from alignkit.eval.matched_kl import MAX_KL_GAP, MatchedKL, Setting, bootstrap_matched_kl, holm, verdict_sentence
from alignkit.report.records import RunRecord
from alignkit.runlog import read_jsonl

N_BOOT = 1000
CONVERGENCE = ConvergenceTest()
METHOD = (f"bootstrap over the shared evaluation prompts ({N_BOOT} resamples, the same for every point of both "
          f"methods, seeds resampled too when a setting has several), both frontiers rebuilt in every resample, "
          f"interpolated only between points at most {MAX_KL_GAP:g} nats apart; basic 95% interval")


def lr_fraction(run: RunRecord) -> float | None:
    """The training learning rate at the run's last trajectory checkpoint over its peak (None when the run
    logged no learning rate or has no trajectory)."""
    stage, steps = run.summary.method, [p["step"] for p in run.trajectory]
    logged = [(r["step"], r.get("lr", r.get("learning_rate"))) for r in read_jsonl(run.run_dir / "metrics.jsonl")
              if r.get("stage") == stage and isinstance(r.get("lr", r.get("learning_rate")), (int, float))]
    if not logged or not steps:
        return None
    peak = max(lr for _, lr in logged)
    at_end = [lr for step, lr in logged if step <= max(steps)]
    return at_end[-1] / peak if at_end and peak > 0 else None


def convergence_of(run: RunRecord) -> dict:
    """The run's label (converged, still improving, budget-limited, unknown; no training for Best-of-N) and
    the numbers behind it."""
    if not run.summary.steps:
        return {"label": "no training"}
    return convergence(run.trajectory, CONVERGENCE, lr_fraction=lr_fraction(run))


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


def settings(runs: list[RunRecord], checkpoints: bool = True) -> dict[str, list[Setting]]:
    """Each method's evaluated points as resampling settings; the seeds of one sweep point at one position are
    one setting (seeds are averaged before a frontier is built, never maximised over)."""
    grouped: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
    for run in runs:
        if not run.is_policy:
            continue
        sweep = tuple(sorted(run.sweep.items()))
        for position, gold, kl in _points(run, checkpoints):
            grouped.setdefault((run.group, sweep, position), []).append((gold, kl))
    out: dict[str, list[Setting]] = {}
    for (group, sweep, position), seeds in grouped.items():
        label = f"{group}{''.join(f'@{k}={v}' for k, v in sweep)}@{position}"
        out.setdefault(group, []).append(Setting(np.stack([g for g, _ in seeds]), np.stack([k for _, k in seeds]),
                                                 label))
    return out


def matched_kl_verdicts(runs: list[RunRecord], labels: dict[str, str], *, units: str = "seed") -> list[dict]:
    """For every two methods: the verdict over all evaluated points and over final points only, each with its
    sentence under the verdict rule. ``labels``: each run's convergence label. The all-points verdicts are one
    family, the final-points ones another, each Holm-adjusted (:data:`FAMILY`). ``units``: what a setting's
    several runs are (seeds; replicates in a combined report)."""
    every, finals = settings(runs, checkpoints=True), settings(runs, checkpoints=False)
    pairs = list(itertools.combinations(sorted(every), 2))
    results = [bootstrap_matched_kl(every[a], every[b], n_boot=N_BOOT) for a, b in pairs]
    final = [bootstrap_matched_kl(finals[a], finals[b], n_boot=N_BOOT) if a in finals and b in finals else None
             for a, b in pairs]
    holm_all, holm_final = _family(results), _family(final)
    out = []
    for (a, b), result, last, p_all, p_final in zip(pairs, results, final, holm_all, holm_final):
        involved = {r.label: labels[r.label] for r in runs if r.group in (a, b)}
        out.append({"a": a, "b": b, "result": _as_dict(result, p_all), "final_points_only": _as_dict(last, p_final),
                    "sentence": verdict_sentence(a, b, result, converged=involved, adjusted_p=p_all,
                                                 family=len(pairs), units=units),
                    "final_sentence": verdict_sentence(a, b, last, converged=involved, adjusted_p=p_final,
                                                       family=len(pairs), units=units)})
    return out


FAMILY = ("the matched-KL sentences of every two methods are one family (the final-points-only sentences "
          "another), Holm-adjusted: a winner is named only when its Holm-adjusted p-value (from the bootstrap "
          "distribution, the level at which the basic interval would just reach 0) is below 0.05")


def _family(results: list) -> list[float | None]:
    """Holm-adjusted p-values of the defined results (None where a pair had no verdict)."""
    defined = [i for i, r in enumerate(results) if r is not None]
    adjusted = holm([results[i].p_value for i in defined])
    out: list[float | None] = [None] * len(results)
    for i, p in zip(defined, adjusted):
        out[i] = p
    return out


def _as_dict(result: MatchedKL | None, holm_p: float | None = None) -> dict | None:
    if result is None:
        return None
    return {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "kl_low": result.kl_low, "kl_high": result.kl_high, "seeds": result.seeds,
            "undefined_fraction": result.undefined_fraction, "p_value": result.p_value, "holm_p": holm_p,
            "unit_differences": result.unit_differences}
