"""``alignkit compare --decide [--budget DURATION]``: add seeds, KL settings and training where a verdict is
undecided, look by look, until every pair is decided or the budget is spent.

Each look is the comparison again, its finished runs reused (the run decision), at the next seeds of a fixed
schedule (:data:`~alignkit.eval.verdict.LOOKS`: 2, 3, 5 and 8 paired seeds per setting; asked for with more
seeds it starts at the next look), plus what the previous look's undecided verdicts asked for
(:mod:`alignkit.compare.look_additions`): a setting past a method's sweep where its points end below the
matched KL (its KL knob, :mod:`alignkit.eval.kl_knob`), and a round more of training for each run that
could still improve there (``--until-converged``'s rounds). Look j is tested at its share of 0.05 under an
O'Brien-Fleming-type spending function (:func:`~alignkit.eval.verdict.look_alpha`) whatever it added: every
look counts, whether it changed the seeds, the settings or the runs' length, and each is tested at a level
fixed before it, so by the union bound the looks together name a false winner at most 5% of the time. It
stops when every pair is a winner or equivalent, when the schedule ends, or when the time the added looks
took reaches the budget (the first look, the comparison asked for, is not counted).

``decide.json`` records every look (the runs, settings and rounds it added, each with the verdict that asked
for it, what could not be added and why, and its verdicts) and what the next look would have added; each
look prints one line of what it added, then its verdicts; the report gains a "Decide" section.
"""

from __future__ import annotations

import re
import time

from alignkit.compare.comparison import run_comparison
from alignkit.compare.look_additions import (
    DECIDED,
    extend_runs,
    keep_final_states,
    next_additions,
    with_settings,
)
from alignkit.compare.plan import ComparisonPlan, plan_comparison
from alignkit.compare.until_converged import settings_from
from alignkit.compare.writer import ComparisonWriter
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import LOOKS, look_alpha
from alignkit.runlog import write_json, write_text

UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``90s``, ``45m``, ``1h30m`` or a bare number of seconds; None for None."""
    if text is None:
        return None
    parts = re.fullmatch(r"((?:\d+(?:\.\d+)?[smh])+|\d+(?:\.\d+)?)", text.strip())
    if not parts:
        raise AlignkitError(f"--budget {text}: expected a duration such as 90s, 45m or 1h30m")
    if text.strip()[-1].isdigit():
        return float(text)
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def schedule(seeds: int | None) -> list[int]:
    """The looks still ahead of a comparison asked for with ``seeds``: from the first look at or above it."""
    looks = [k for k in LOOKS if k >= (seeds or 1)]
    if not looks:
        raise AlignkitError(f"compare --decide: --seeds {seeds} is past the last look ({LOOKS[-1]} seeds)")
    return looks


def decide_comparison(specs, *, budget: str | None = None, seeds: int | None = None, argv: list[str],
                      **options) -> ComparisonPlan:
    """Run the comparison look by look (module docstring); prints each look's additions and verdicts,
    writes ``decide.json``; returns the last look's plan."""
    limit, spent, looks, plan, writer = parse_duration(budget), 0.0, [], None, None
    cfg = settings_from(specs, True)  # how far a round trains on (a comparison YAML's until_converged)
    settings: list[dict] = []  # every setting added so far, trained at each later look's seeds
    current, rounds, budgets = {}, {}, {}  # each extended run's folder, rounds and first budget
    ahead = {"settings": [], "extend": [], "not_added": []}
    stopped = "the schedule ended"
    try:
        for k in schedule(seeds):
            before = {e.label for e in plan.entries} if plan else set()
            settings += ahead["settings"]
            plan = keep_final_states(with_settings(plan_comparison(specs, seeds=k, argv=argv, **options),
                                                   settings, k))
            writer = writer or ComparisonWriter(plan.out)
            alpha, start = look_alpha(k), time.monotonic()
            extend_runs(plan, ahead["extend"], current, rounds, budgets, cfg)
            index = run_comparison(plan, alpha=alpha, writer=writer, folders=current)
            if looks:
                spent += time.monotonic() - start
            added = [e.label for e in plan.entries if e.label not in before]
            look = {"seeds": k, "alpha": alpha, "added": added, **ahead,
                    "seconds_added_so_far": round(spent, 1), "verdicts": verdicts(index)}
            looks.append(look)
            print(look_lines(look))
            ahead = next_additions(index["matched_kl"], plan, rounds, cfg)
            if all(v["verdict"] in DECIDED for v in look["verdicts"]):
                stopped = "every pair decided"
                break
            if limit is not None and spent >= limit:
                stopped = f"the budget ({budget}) was spent"
                break
    finally:
        if writer is not None:
            writer.release()
    record = {"rule": __doc__.split("\n\n")[1], "schedule": list(LOOKS), "budget_s": limit, "looks": looks,
              "stopped": stopped, "next_look_would_add": ahead}
    write_json(plan.out / "decide.json", record)
    report = plan.out / "report.md"
    write_text(report, report.read_text() + render(record))
    return plan


def verdicts(index: dict) -> list[dict]:
    """A look's verdicts as decide.json keeps them: the pair, the answer, what would decide it."""
    return [{key: v[key] for key in ("a", "b", "verdict", "answer", "would_take")}
            | {"needs": v.get("needs") or {}, "holm_p": (v["result"] or {}).get("holm_p")}
            for v in index["matched_kl"]]


def additions(look: dict) -> str:
    """What a look added besides seeds, in one clause each: settings, rounds, and what could not be added."""
    parts = [f"setting {s['group']} {s['key'].split('.')[-1]}={s['value']:g} ({s['pair']}: {s['group']}'s "
             f"points end below {s['kl']:.3g} nats)" for s in look["settings"]]
    for item in look["extend"]:
        why = f"failed: {item['failed']}" if "failed" in item else f"{item['pair']}: it could still improve"
        parts.append(f"trained on {item['run']} to round {item['round']} ({why})")
    for item in look["not_added"]:
        what = f"a round of {item['run']}" if "run" in item else f"a setting of {item['setting']}"
        parts.append(f"cannot add {what}: {item['because']}")
    return "; ".join(parts)


def look_lines(look: dict) -> str:
    """A look as printed: one line of its seeds, level and additions, then one line per pair."""
    head = (f"decide: look at {look['seeds']} seeds (alpha {look['alpha']:.3g}), added "
            f"{', '.join(look['added']) or 'nothing'}")
    more = additions(look)
    pairs = [f"  {v['a']} vs {v['b']}: {v['answer']} ({v['would_take']})" for v in look["verdicts"]]
    return "\n".join([head + (f"; {more}" if more else ""), *pairs])


def render(record: dict) -> str:
    """The report's section: one row per look (what it added, and why) and why it stopped."""
    lines = ["", "## Decide", "", f"{record['rule']} Stopped: {record['stopped']}.", "",
             "| seeds | alpha | runs added | settings and rounds added | verdicts |", "|---|---|---|---|---|"]
    for look in record["looks"]:
        answers = "; ".join(f"{v['a']} vs {v['b']}: {v['answer']}" for v in look["verdicts"])
        added = additions(look) or "\u2013"
        lines.append(f"| {look['seeds']} | {look['alpha']:.3g} | {len(look['added'])} runs | {added} | "
                     f"{answers} |")
    return "\n".join(lines) + "\n"
