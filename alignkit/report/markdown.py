"""``report.md``: what was compared and shared, the table, the plots, the verdicts, the head-to-head matrix
and the caveats, rendered from the records and the index ``build_report`` assembles."""

from __future__ import annotations

import math

from alignkit.eval.summary import GOLD_CI_HIGH, GOLD_CI_LOW, GOLD_MEAN, REFERENCE_GOLD_MEAN
from alignkit.report.length_control import length_control_lines
from alignkit.report.records import (
    RunRecord,
)
from alignkit.report.verdicts import (
    headline,
    table_rows,
)


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
              "sampled in training (seq / tokens) | train wall s | convergence |", "|---" * 10 + "|"]
    labels = {e["label"]: e["convergence"]["label"] for e in index["entries"]}
    for r in runs:
        b, c = r.summary.budget or {}, r.cost
        sweep = _fmt(';'.join(f'{k}={v}' for k, v in r.sweep.items()) or None)
        lines.append(f"| {r.label} | {r.summary.method} | {sweep} "
                     f"| {r.manifest.get('train_seed')} | {b.get('steps', '–')} | "
                     f"{b.get('train_sequences', '–')} | {b.get('train_tokens', '–')} | "
                     f"{b.get('generated_sequences', 0)} / {b.get('generated_tokens', 0)} | "
                     f"{_fmt(c.get('train_wall_s'), 1)} | {labels[r.label]} |")
    lines += ["", "## What every entry shared", ""] + _shared_lines(shared) + [""]
    lines += [f"## Results at temperature {temperature:g}", "",
              "| entry | gold reward [95% CI] | proxy (RM) | KL [95% CI] | KL kind | win rate vs reference "
              "[95% CI] | distinct-2 | self-BLEU |", "|---" * 8 + "|"]
    for _, row in primary.iterrows():
        lines.append(f"| {row['label']} | {_fmt(row[GOLD_MEAN])} [{_fmt(row[GOLD_CI_LOW])}, "
                     f"{_fmt(row[GOLD_CI_HIGH])}] | {_fmt(row.get('proxy_reward_mean'))} | "
                     f"{_fmt(row['kl_mean'], 2)} [{_fmt(row['kl_ci_low'], 2)}, {_fmt(row['kl_ci_high'], 2)}] "
                     "| "
                     f"{row['kl_kind']} | {_fmt(row['win_rate_vs_reference'])} "
                     f"[{_fmt(row['win_rate_ci_low'])}, {_fmt(row['win_rate_ci_high'])}] | "
                     f"{_fmt(row.get('distinct_2'))} | {_fmt(row.get('self_bleu'))} |")
    reference = primary[REFERENCE_GOLD_MEAN].iloc[0]
    # counted: a task may have fewer prompts
    evaluated = shared.get("eval_prompts", shared["eval"]["n_prompts"])
    lines += ["", f"The reference (SFT) policy's gold reward at this temperature is {reference:.3f}.", ""]
    lines += [*length_control_lines(primary),
              "![gold reward vs KL](frontier.png)", "",
              "Solid markers: final evaluations (sweep points joined in order of the swept value, bars: 95% "
              "intervals on both axes); faint markers: checkpoints during training (`eval.every_steps`, on "
              "the "
              f"first {min(shared['eval']['trajectory_prompts'], evaluated)} of the {evaluated} prompts).",
              "",
              "## At matched KL", ""]
    verdicts = index["matched_kl"]
    lead = headline(verdicts, [r.group for r in runs])
    lines += (
        [f"**{lead['a']} vs {lead['b']}** (the first two methods named): {lead['sentence']}", ""]
        if lead
        else []
    ) + (table_rows(verdicts) if verdicts else ["Only one method: nothing to match."])
    family = verdicts[0]["family"] if verdicts else 0
    lines += ["", f"Matched KL: {index['matched_kl_method']}. Verdict rule: a winner when the interval "
                  "excludes 0, "
              f"the Holm-adjusted p is below {index['alpha']:.3g} ({index['matched_kl_family']}; {family} "
              f"comparisons adjusted) and "
              f"none of the trailing method's runs could still improve at the matched KL; equivalent within "
              f"\u00b1{index['margin']:g} (--margin) when the interval lies inside it; otherwise "
              f"inconclusive, with what it would take. Convergence: {index['convergence_test']}.", ""]
    lines += _compute_lines(index["compute"])
    lines += ["## Win rate vs temperature", "",
              "![win rate vs temperature](temperature.png)", ""]
    lines += _head_to_head_lines(matrix, index) + [""] + _caveats(runs, primary, shared, index)
    return "\n".join(lines) + "\n"


def _compute_lines(compute: dict) -> list[str]:
    """The compute-matched view: the plot, which method reaches the common gold reward first, the rules."""
    wall = compute.get("first_to_reach_wall")
    by_wall = (f" By wall seconds instead: least for {wall['first']} (" + ", ".join(
        f"{g} {v:.3g} s" for g, v in wall["cost"].items())
        + f"; {'decided' if wall['decided'] else 'inconclusive'} by the same rule).") if wall else ""
    return ["## At matched compute", "", "![gold reward vs training compute](frontier_compute.png)", "",
            f"- {compute['sentence']}{by_wall}", "",
            f"Compute: {compute['rule']}. First to reach: {compute['first_rule']}. Each entry's totals are "
            "the "
            f"`compute_*` columns of comparison.csv.", ""]


def _shared_lines(shared: dict) -> list[str]:
    ev, prefs = shared["eval"], shared["preferences"]
    lines = [f"- Starting policy and KL reference: `{shared['model']}`; task `{shared['task']}`; shared seed "
             f"{shared['seed']}.",
             f"- Evaluation: {shared.get('eval_prompts', ev['n_prompts'])} "
             f"{'prompts from ' + repr(ev['prompts']) if ev.get('prompts') else 'held-out prompts'}, "
             f"{ev['max_new_tokens']} new tokens, top_p "
             f"{ev['top_p']}, temperatures {[ev['temperature'], *ev['temperatures']]}; the reference's "
             "samples "
             f"are drawn once per temperature and shared.",
             f"- Gold judge (the reward axis of every table and plot): `{shared['gold_reward']}`" + (
                 f", {shared['gold_heldout_accuracy']:.3f} accuracy on held-out labelled reviews."
                 if shared.get("gold_heldout_accuracy") is not None else
                 _agreement(shared, "gold_agreement") if shared.get("gold_agreement") else "."),
             f"- Win rates are decided by `{ev['judge']}`" + _agreement(shared)]
    if shared.get("pairs"):
        p = shared["pairs"]
        per_prompt = p.get("completions_per_prompt",
                           prefs["completions_per_prompt"] if prefs["source"] == "generated"
                           # runs recorded before the count was: the recipe's K holds for generated pairs
                           else None)
        counted = f", {per_prompt} completions per prompt" if per_prompt is not None else ""
        lines.append(f"- Preference pairs ({prefs['source']}{counted}): every method that learns from pairs "
                     f"(reward model, DPO family, KTO, "
                     f"Preferred-FT, Unlikelihood) trained on the same {p['train_pairs']} pairs from "
                     f"{p['train_prompts']} prompts; {p['heldout_pairs']} pairs from {p['heldout_prompts']} "
                     "prompts were held out from all of them.")
    if shared.get("reward_model"):
        rm = shared["reward_model"]
        lines.append(f"- Reward model (the proxy of PPO, GRPO, RLOO and Best-of-N): pairwise accuracy "
                     f"{_fmt(rm['heldout_pairwise_accuracy'])} on the {rm['n_heldout_pairs']} held-out pairs "
                     f"({_fmt(rm['train_pairwise_accuracy'])} on its {rm['n_train_pairs']} training pairs).")
    return lines


def _agreement(shared: dict, key: str = "judge_agreement") -> str:
    """A judge's agreement with the held-out human preference pairs, as the end of a sentence."""
    found = shared.get(key) or {}
    if found.get("agreement") is None:
        return (
            " (its agreement with held-out preference pairs was not measured: no run had the pairs at hand)."
        )
    extra = (
        f"; {found['order_disagreements']} verdicts flipped with the order of the two responses and "
        f"{found['unparseable']} answers named neither, all counted as ties"
        if "unparseable" in found
        else ""
    )
    return (f": it prefers the chosen completion of {found['agreement']:.3f} of {found['n_pairs']} held-out "
            f"preference pairs (ties, {found['ties']}, count half{extra}).")


def _head_to_head_lines(matrix, index) -> list[str]:
    lines = ["## Head to head", ""]
    if not matrix and index["shared"].get("judge_pairwise"):
        return lines + [
            f"Not computed for a pairwise judge: `{index['head_to_head']['judge']}` compared "
            "each entry's "
            f"completion with the reference's only, and gives no score to compare two entries by."
        ]
    if not matrix:
        return lines + ["Not computed: fewer than two policies, or they were not evaluated on the same "
                        "prompts."]
    labels, wins, low, high, n = matrix
    kl = index.get("kl_by_entry") or {}
    # a win rate means little without its KL
    named = [f"{label} (KL {_fmt(kl.get(label), 2)})" for label in labels]
    lines += [f"Win rate of the row entry against the column entry on the same {n} prompts: "
              f"{index['head_to_head']['method']}. Each entry's KL to the reference (nats, primary "
              "temperature) "
              "is beside its name: a higher win rate bought with more KL is no like-for-like win. All pairs "
              "are in "
              f"`winrates.csv` (with `row_kl`, `column_kl`).", ""]
    if len(labels) <= 10:
        lines += ["| | " + " | ".join(named) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, label in enumerate(named):
            cells = ["–" if i == j else f"{wins[i, j]:.2f} [{low[i, j]:.2f}, {high[i, j]:.2f}]"
                     for j in range(len(labels))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _caveats(runs, primary, shared, index) -> list[str]:
    lines = ["## Caveats", ""]
    if index.get("version_warning"):
        lines.append(f"- **W{index['version_warning'][1:]}**")
    by_label = {e["label"]: e["convergence"]["label"] for e in index["entries"]}
    for state, what in (("still improving",
                         "Still improving when training stopped (the gold reward's rise over the last "
                         "checkpoints is above 0 with 95% confidence, and not shown to be within the "
                         "tolerance)"),
                        ("budget-limited",
                         "Still improving when the learning-rate schedule had decayed (budget-limited)"),
                        ("declining", "Declining when training stopped (over-optimisation or instability)"),
                        ("unknown",
                         "Convergence unknown (too few or too noisy checkpoints; set `eval.every_steps` "
                                    "or train longer)")):
        named = [label for label, label_state in by_label.items() if label_state == state]
        if named:
            lines.append(f"- {what}: {', '.join(named)}. Their points may under-state their method.")
    steps = {e["label"]: (e.get("budget") or {}).get("steps") for e in index["entries"]}
    if len({v for v in steps.values() if v}) > 1:
        lines.append("- Training budgets differ (optimiser steps: " + ", ".join(f"{k} {v}" for k,
                                                                                v in steps.items())
                     + "); compare methods at their budgets, not as if equal.")
    if shared.get("self_judged"):
        lines.append(f"- Self-judged (eval.allow_self_judging: true): {', '.join(shared['self_judged'])} "
                     "were judged by the very reward model they optimised, so their win rates (and gold "
                     "column, "
                     "when the gold reward is that model) measure how far they climbed their own objective, "
                     "not "
                     f"preference; over-optimisation cannot be seen in these numbers.")
    elif shared.get("reward_model"):
        acc = shared["reward_model"]["heldout_pairwise_accuracy"]
        lines.append("- Methods that use the reward model (PPO, GRPO, RLOO, Best-of-N) optimise a proxy "
                     "that ranks "
                     f"held-out pairs correctly {_fmt(acc)} of the time; a proxy column rising while gold "
                     "stays flat "
                     f"is over-optimisation.")
    if shared.get("gold_heldout_accuracy") is not None:
        lines.append(f"- The gold judge is itself a classifier ({shared['gold_heldout_accuracy']:.3f} "
                     "held-out "
                     f"accuracy), a stand-in for human preference.")
    seeds = {e["train_seed"] for e in index["entries"]}
    if len(seeds) <= 1:
        lines.append("- One training seed: intervals reflect evaluation-sample noise, not run-to-run "
                     "variation (use --seeds).")
    kinds = sorted(set(primary["kl_kind"].dropna()))
    lines.append(f"- KL kinds at the primary temperature: {', '.join(kinds)} (exact: summed per-token KL on "
                 "the "
                 f"policy's own samples; analytic: Best-of-N's log n - (n-1)/n, its sampled estimate in "
                 f"`kl_sampled_estimate`).")
    return lines
