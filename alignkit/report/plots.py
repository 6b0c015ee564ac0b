"""Plots people look at: training curves and the gold-reward / KL picture of one run."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.eval.summary import GOLD_CI_HIGH, GOLD_MEAN, KL_MEAN, EvalSummary


def plot_run(run_dir: Path, summary: EvalSummary) -> Path:
    """``eval/summary.png``: training loss, gold reward of policy vs reference, per-sample KL (``summary``:
    the run's evaluation summary, as it writes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    samples = [json.loads(x) for x in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if any(m["stage"] == "ppo" for m in metrics):
        _ppo_panel(axes[0], [m for m in metrics if m["stage"] == "ppo"])
    else:
        _loss_panel(axes[0], metrics)
    if samples and "gold_reward" in samples[0]:
        _policy_panels(axes[1], axes[2], samples, summary)
    elif samples and "rm_chosen" in samples[0]:
        _reward_model_panels(axes[1], axes[2], samples, summary)
    fig.tight_layout()
    out = run_dir / "eval" / "summary.png"
    partial = out.with_name(".summary.png.partial")
    fig.savefig(partial, dpi=90, format="png")
    plt.close(fig)
    partial.replace(out)  # atomic: a reader never sees half a picture
    return out


def _policy_panels(ax_reward, ax_kl, samples, summary):
    bins = [i / 20 for i in range(21)]
    ax_reward.hist([s["reference_gold_reward"] for s in samples], bins=bins, alpha=0.6,
                   label="reference (SFT)")
    ax_reward.hist([s["gold_reward"] for s in samples], bins=bins, alpha=0.6, label=summary.method)
    ax_reward.set(title=f"gold reward (win rate {summary.win_rate_vs_reference:.2f})", xlabel="gold reward")
    ax_reward.legend()
    if summary.kl_mean is None:  # greedy decoding: no sampling distribution, no KL
        ax_kl.set(title="no KL at temperature 0 (greedy)")
        return
    kls = [s["kl"] for s in samples if s.get("kl") is not None]
    ax_kl.hist(kls, bins=30)
    ax_kl.axvline(summary.kl_mean, color="k", linestyle="--",
                  label=f"mean {summary.kl_mean:.2f} ({summary.kl_kind or 'exact'})")
    ax_kl.set(title="sequence KL(pi || pi_ref) per sample", xlabel="nats")
    ax_kl.legend()


def _reward_model_panels(ax_margin, ax_scatter, samples, summary):
    margins = [s["rm_chosen"] - s["rm_rejected"] for s in samples]
    ax_margin.hist(margins, bins=30)
    ax_margin.axvline(0, color="k", linestyle="--")
    ax_margin.set(title=f"held-out margin r(chosen) - r(rejected) (accuracy "
                        f"{summary.results['heldout_pairwise_accuracy']:.2f})", xlabel="reward-model margin")
    scored = [s for s in samples if s.get("gold_chosen") is not None]  # gold scores exist for generated pairs
    rm = [s["rm_chosen"] for s in scored] + [s["rm_rejected"] for s in scored]
    gold = [s["gold_chosen"] for s in scored] + [s["gold_rejected"] for s in scored]
    ax_scatter.scatter(gold, rm, s=6, alpha=0.5)
    ax_scatter.set(title="reward model vs gold reward (held-out completions)", xlabel="gold reward",
                   ylabel="reward model")


def _loss_panel(ax, metrics):
    stages = sorted({m["stage"] for m in metrics if m.get("loss") is not None})
    for stage in stages:
        rows = [m for m in metrics if m["stage"] == stage and m.get("loss") is not None]
        ax.plot([m["step"] for m in rows], [m["loss"] for m in rows], label=stage)
    ax.set(title="training loss", xlabel="step")
    if stages:
        ax.legend()


def _ppo_panel(ax, rows):
    """PPO has no single loss to watch: gold and proxy reward against the KL it costs, per iteration."""
    steps = [m["step"] for m in rows]
    ax.plot(steps, [m["reward/gold"] for m in rows], label="gold reward")
    ax.plot(steps, [m["reward/proxy"] for m in rows], label="proxy reward", alpha=0.6)
    ax.set(title="PPO rollouts", xlabel="iteration", ylabel="reward")
    kl_ax = ax.twinx()
    kl_ax.plot(steps, [m["kl"] for m in rows], color="k", linestyle="--", label="KL (nats)")
    kl_ax.set_ylabel("sequence KL(pi || pi_ref)")
    lines = ax.get_lines() + kl_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    partial = out.with_name(f".{out.name}.partial")
    fig.savefig(partial, dpi=110, format="png", bbox_inches="tight")
    partial.replace(out)


def plot_frontier(runs, out: Path) -> Path:
    """``frontier.png``: gold reward vs KL(pi || pi_ref) at the primary temperature, one colour per entry;
    sweep points (mean over seeds) joined in order of the swept value, 95% bars on both axes; each run's
    checkpoints fainter; the reference at KL 0."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups = list(dict.fromkeys(r.group for r in runs if r.is_policy))
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    for group in groups:
        members = [r for r in runs if r.is_policy and r.group == group]
        for run in members:
            traj = sorted((p for p in run.trajectory if p.get(KL_MEAN) is not None), key=lambda p: p["step"])
            if traj:
                ax.plot([p[KL_MEAN] for p in traj], [p[GOLD_MEAN] for p in traj], "o-", ms=3, lw=0.8,
                        color=colours[group], alpha=0.3)
        points: dict[str, list] = {}
        for run in members:
            if run.summary.kl_mean is not None:
                points.setdefault(json.dumps(run.sweep, sort_keys=True), []).append(run.summary)
        rows = []
        for key, summaries in points.items():
            kl = np.array([s.kl_mean for s in summaries])
            gold = np.array([s.gold_reward_mean for s in summaries])
            if len(summaries) > 1:  # several seeds: intervals over seeds
                kl_err, gold_err = (
                    1.96 * kl.std(ddof=1) / len(kl) ** 0.5,
                    1.96 * gold.std(ddof=1) / len(gold) ** 0.5,
                )
            else:
                s = summaries[0]
                high = s.results.get("kl_ci_high")
                kl_err = (high - s.kl_mean) if high is not None else 0.0
                gold_err = s.results[GOLD_CI_HIGH] - s.gold_reward_mean
            sweep = json.loads(key)
            order = next(iter(sweep.values())) if len(sweep) == 1 else kl.mean()
            rows.append((order, kl.mean(), gold.mean(), kl_err, gold_err))
        rows.sort(key=lambda r: (float(r[0]) if isinstance(r[0], (int, float)) else 0.0, r[1]))
        if rows:
            xs, ys, xerr, yerr = (np.array([r[i] for r in rows], dtype=float) for i in (1, 2, 3, 4))
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o-", color=colours[group], ms=6, lw=1.6, capsize=3,
                        label=group)
    reference = next((r.summary.reference_gold_reward_mean for r in runs if r.is_policy), None)
    if reference is not None:
        ax.plot([0], [reference], "k*", ms=12, label="reference (SFT)")
    ax.set(xlabel="sequence KL(pi || pi_ref), nats", ylabel="gold reward (mean over held-out prompts)",
           title="Gold reward vs KL to the reference")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, out)
    plt.close(fig)
    return out


def plot_temperature(frame, out: Path) -> Path:
    """``temperature.png``: win rate against the reference at each sampling temperature (mean over seeds),
    95% interval bars; 0.5 is a tie with the reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups = list(dict.fromkeys(frame["group"]))
    for i, group in enumerate(groups):
        colour = plt.cm.tab10(i % 10)
        part = frame[frame["group"] == group]
        sweeps = list(dict.fromkeys(part["sweep"].fillna("")))
        for j, sweep in enumerate(sweeps):
            rows = part[part["sweep"].fillna("") == sweep].groupby("temperature", sort=True)
            mean = rows["win_rate_vs_reference"].mean()
            low = mean - rows["win_rate_ci_low"].mean()
            high = rows["win_rate_ci_high"].mean() - mean
            label = group + (f" ({sweep})" if sweep else "")
            ax.errorbar(mean.index, mean.values, yerr=[low.values, high.values], fmt="o-", color=colour,
                        alpha=1.0 if len(sweeps) == 1 else 0.4 + 0.6 * (j + 1) / len(sweeps), capsize=3,
                        label=label)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set(xlabel="sampling temperature (0 = greedy)", ylabel="win rate vs the reference policy",
           title="Win rate vs sampling temperature", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, out)
    plt.close(fig)
    return out


def plot_compute(curves: dict, out: Path, *, axis: str = "flops", target: float | None = None) -> Path:
    """``frontier_compute.png``: gold reward against cumulative training compute (log x), one line per
    setting (``curves``: (group, sweep) -> points with ``gold`` and ``axis``), one colour per method; the
    common target gold reward dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups = list(dict.fromkeys(group for group, _ in curves))
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    shown: set[str] = set()
    for (group, sweep), points in curves.items():
        xy = [(p[axis], p["gold"]) for p in points if p.get(axis) and p.get("gold") is not None]
        if not xy:
            continue
        ax.plot([x for x, _ in xy], [y for _, y in xy], "o-", ms=4, color=colours[group],
                label=None if group in shown else group, alpha=0.9 if not sweep else 0.6)
        shown.add(group)
    if target is not None:
        ax.axhline(target, color="k", lw=0.8, ls="--", label=f"target {target:.3f}")
    ax.set_xscale("log")
    ax.set(xlabel={"flops": "cumulative training FLOPs (estimated, shared stages included)"}.get(axis, axis),
           ylabel="gold reward", title="Gold reward vs training compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, out)
    plt.close(fig)
    return out
