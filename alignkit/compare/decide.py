"""``alignkit compare --decide [--budget DURATION]``: add paired seeds until every pair of methods is decided.

The comparison is run at the looks of a fixed seeds schedule (:data:`~alignkit.eval.verdict.LOOKS`: 2, 3, 5
and 8 paired seeds per setting; a comparison asked for with more seeds starts at the next look). Each look is
the same comparison with more seeds: its finished runs are reused (the run decision), only the new seeds
train. After each look every pair's verdict is read at that look's share of 0.05 (an O'Brien-Fleming-type
spending function, :func:`~alignkit.eval.verdict.look_alpha`), so the looks together name a false winner at
most 5% of the time. It stops when every pair is a winner or equivalent, when the schedule ends, or when the
time the added looks took reaches the budget (the first look, the comparison asked for, is not counted).
``decide.json`` records every look; the report gains a "Decide" section.
"""

from __future__ import annotations

import re
import time

from alignkit.compare.comparison import run_comparison
from alignkit.compare.plan import ComparisonPlan, plan_comparison
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import LOOKS, look_alpha
from alignkit.runlog import write_json, write_text

DECIDED = ("winner", "equivalent")
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
    """Run the comparison look by look (module docstring); prints each look's verdicts and what it added,
    writes ``decide.json``; returns the last look's plan."""
    limit, spent, looks, plan = parse_duration(budget), 0.0, [], None
    stopped = "the schedule ended"
    for k in schedule(seeds):
        before = {e.label for e in plan.entries} if plan else set()
        plan = plan_comparison(specs, seeds=k, argv=argv, **options)
        alpha = look_alpha(k)
        start = time.monotonic()
        index = run_comparison(plan, alpha=alpha)
        if looks:
            spent += time.monotonic() - start
        look = {"seeds": k, "alpha": alpha, "added": [e.label for e in plan.entries if e.label not in before],
                "seconds_added_so_far": round(spent, 1),
                "verdicts": [{key: v[key] for key in ("a", "b", "verdict", "answer", "would_take")}
                             | {"holm_p": (v["result"] or {}).get("holm_p")} for v in index["matched_kl"]]}
        looks.append(look)
        print(look_lines(look))
        if all(v["verdict"] in DECIDED for v in look["verdicts"]):
            stopped = "every pair decided"
            break
        if limit is not None and spent >= limit:
            stopped = f"the budget ({budget}) was spent"
            break
    record = {"rule": __doc__.split("\n\n")[1], "schedule": list(LOOKS), "budget_s": limit, "looks": looks,
              "stopped": stopped}
    write_json(plan.out / "decide.json", record)
    report = plan.out / "report.md"
    write_text(report, report.read_text() + render(record))
    return plan


def look_lines(look: dict) -> str:
    """A look as printed: its seeds, level and additions, then one line per pair."""
    head = (f"decide: look at {look['seeds']} seeds (alpha {look['alpha']:.3g}), added "
            f"{', '.join(look['added']) or 'nothing'}")
    return "\n".join([head, *(f"  {v['a']} vs {v['b']}: {v['answer']} ({v['would_take']})"
                              for v in look["verdicts"])])


def render(record: dict) -> str:
    """The report's section: one row per look and why it stopped."""
    lines = ["", "## Decide", "", f"{record['rule']} Stopped: {record['stopped']}.", "",
             "| seeds | alpha | added | verdicts |", "|---|---|---|---|"]
    for look in record["looks"]:
        verdicts = "; ".join(f"{v['a']} vs {v['b']}: {v['answer']}" for v in look["verdicts"])
        lines.append(f"| {look['seeds']} | {look['alpha']:.3g} | {len(look['added'])} runs | {verdicts} |")
    return "\n".join(lines) + "\n"
