"""Plots people look at: training curves and the gold-reward / KL picture of one run."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(run_dir: Path) -> Path:
    """``eval/summary.png``: training loss, gold reward of policy vs reference, per-sample KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    samples = [json.loads(x) for x in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
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
    ax_reward.hist([s["reference_gold_reward"] for s in samples], bins=bins, alpha=0.6, label="reference (SFT)")
    ax_reward.hist([s["gold_reward"] for s in samples], bins=bins, alpha=0.6, label=summary["method"])
    ax_reward.set(title=f"gold reward (win rate {summary['win_rate_vs_reference']:.2f})", xlabel="gold reward")
    ax_reward.legend()
    if summary.get("kl_mean") is None:  # greedy decoding: no sampling distribution, no KL
        ax_kl.set(title="no KL at temperature 0 (greedy)")
        return
    kls = [s["kl"] for s in samples if s.get("kl") is not None]
    ax_kl.hist(kls, bins=30)
    ax_kl.axvline(summary["kl_mean"], color="k", linestyle="--",
                  label=f"mean {summary['kl_mean']:.2f} ({summary.get('kl_kind', 'exact')})")
    ax_kl.set(title="sequence KL(pi || pi_ref) per sample", xlabel="nats")
    ax_kl.legend()


def _reward_model_panels(ax_margin, ax_scatter, samples, summary):
    margins = [s["rm_chosen"] - s["rm_rejected"] for s in samples]
    ax_margin.hist(margins, bins=30)
    ax_margin.axvline(0, color="k", linestyle="--")
    ax_margin.set(title=f"held-out margin r(chosen) - r(rejected) (accuracy "
                        f"{summary['heldout_pairwise_accuracy']:.2f})", xlabel="reward-model margin")
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
