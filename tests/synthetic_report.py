"""A made-up comparison of any size, for ``report.html`` at sizes no test can train (26 entries x 256
prompts, Figure 2 in miniature): run folders holding only ``eval/samples.jsonl``; records, tables and plots
built by the report's own code, then ``write_html``. Scores are random; completions are random words of
realistic length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
from alignkit.report.html import write_html
from alignkit.report.plots import plot_compute, plot_frontier, plot_temperature
from alignkit.report.records import HEAD_TO_HEAD_METHOD, N_BOOT, RunRecord, comparison_rows, winrate_matrix

HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\"> & <b>not bold</b>"  # must show as text


def _words(rng: np.random.Generator, n: int) -> str:
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "dra", "film", "good", "plot", "act"]
    return " ".join("".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(n))


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    half = 1.96 * values.std(ddof=1) / len(values) ** 0.5
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def synthetic_runs(folder: Path, entries: int, prompts: int, *, words: int = 24, judge: str = "gold",
                   seed: int = 0) -> list[RunRecord]:
    """``entries`` policies (methods of 2 to 4 sweep points) on ``prompts`` prompts; every other method has a
    proxy score; with ``judge`` other than gold, a noisy judge score. The first completion is hostile HTML."""
    rng = np.random.default_rng(seed)
    prompt_text = [_words(rng, 4) for _ in range(prompts)]
    reference = [_words(rng, words) for _ in range(prompts)]
    reference_gold = rng.uniform(0, 1, prompts)
    reference_judge = reference_gold if judge == "gold" else reference_gold + rng.normal(0, 0.2, prompts)
    runs = []
    for i in range(entries):
        group, label = f"method{i // 3}", f"method{i // 3}@beta={i % 3}"
        gold, kl = rng.uniform(0, 1, prompts), rng.gamma(2.0, 2.0, prompts)
        scored = gold if judge == "gold" else gold + rng.normal(0, 0.2, prompts)
        rows = [{"prompt": p, "completion": _words(rng, int(rng.integers(words // 2, words * 3 // 2))),
                 "ended": bool(rng.random() < 0.2), "gold_reward": float(g), "kl": float(k),
                 "judge_score": float(j), "reference_completion": rc, "reference_gold_reward": float(rg),
                 "reference_judge_score": float(rj)}
                for p, g, k, j, rc, rg, rj in zip(prompt_text, gold, kl, scored, reference, reference_gold,
                                                  reference_judge)]
        if i == 0:
            rows[0]["completion"] = HOSTILE
        if (i // 3) % 2:
            for r in rows:
                r["proxy_reward"] = float(3 * r["gold_reward"] + rng.normal(0, 1))
        run_dir = folder / "runs" / label.replace("@", "_").replace("=", "")
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        entry = {"label": label, "group": group, "sweep": {"beta": i % 3}}
        runs.append(RunRecord(run_dir, {"compare_entry": entry},
                              _summary(group, gold, kl, scored, reference_judge), _trajectory(rng, gold)))
    return runs


def _summary(method: str, gold, kl, judged, reference_judged) -> EvalSummary:
    mean, low, high = _mean_ci(gold)
    kl_mean, kl_low, kl_high = _mean_ci(kl)
    wins = float(np.mean((judged > reference_judged) + 0.5 * (judged == reference_judged)))
    row = {TEMPERATURE: 1.0, N_SAMPLES: len(gold), GOLD_MEAN: mean, GOLD_CI_LOW: low, GOLD_CI_HIGH: high,
           REFERENCE_GOLD_MEAN: 0.5, KL_KIND: "exact", KL_MEAN: kl_mean, "kl_ci_low": kl_low,
           "kl_ci_high": kl_high, WIN_RATE: wins, "win_rate_ci_low": wins - 0.05,
           "win_rate_ci_high": wins + 0.05}
    return EvalSummary(method=method, results=row, by_temperature=[row], budget={"steps": 100})


def _trajectory(rng: np.random.Generator, gold: np.ndarray) -> list[dict]:
    final = float(gold.mean())
    return [{"step": step, GOLD_MEAN: final - 0.2 / step * 25, GOLD_CI_LOW: final - 0.2 / step * 25 - 0.03,
             GOLD_CI_HIGH: final - 0.2 / step * 25 + 0.03, KL_MEAN: step / 25 * float(rng.uniform(0.5, 1.5))}
            for step in (25, 50, 75, 100)]


def synthetic_report(folder: Path, entries: int, prompts: int, **options) -> Path:
    """``folder/report.html`` of a made-up comparison, through the tables, plots and page of a real one."""
    import pandas as pd

    runs = synthetic_runs(folder, entries, prompts, **options)
    convergence = {r.label: {"label": "converged"} for r in runs}
    frame = pd.DataFrame(comparison_rows(runs, convergence))
    matrix = winrate_matrix(runs)
    plot_frontier(runs, folder / "frontier.png")
    plot_temperature(frame, folder / "temperature.png")
    compute = {(r.group, r.label): [{"flops": 1e12 * p["step"], "gold": p[GOLD_MEAN]} for p in r.trajectory]
               for r in runs}
    plot_compute(compute, folder / "frontier_compute.png")
    groups = sorted({r.group for r in runs})
    judge = options.get("judge", "gold")
    index = {"name": f"synthetic {entries} x {prompts}", "primary_temperature": 1.0,
             "shared": {"model": "synthetic", "task": "synthetic", "gold_reward": "random",
                        "eval": {"judge": judge, "n_prompts": prompts}},
             "entries": [{"label": r.label, "convergence": convergence[r.label]} for r in runs],
             "matched_kl": [{"sentence": f"{a} and {b}: inconclusive (made-up data)."}
                            for a, b in zip(groups[:-1], groups[1:])],
             "kl_by_entry": {r.label: r.summary.kl_mean for r in runs},
             "head_to_head": {"method": HEAD_TO_HEAD_METHOD.format(n_boot=N_BOOT), "judge": judge}}
    markdown = "## Caveats\n\n- Made-up data: **every** number is random.\n"
    return write_html(folder, runs, frame, matrix, index, markdown)


def disagreements(run: RunRecord) -> int:
    """Prompts where the judge and the gold reward prefer different ones of the entry's and the reference's
    completions (the page's "judge disagrees with gold", counted here independently)."""
    return sum(np.sign(r["judge_score"] - r["reference_judge_score"])
               * np.sign(r["gold_reward"] - r["reference_gold_reward"]) < 0 for r in run.samples())
