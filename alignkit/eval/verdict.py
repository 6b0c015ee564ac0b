"""The verdict rule: from a matched-KL result (:mod:`alignkit.eval.matched_kl`) to one of four answers.

* **a wins** when, with at least two paired units, the interval lies above 0, its Holm-adjusted p-value (one
  family per report) is below 0.05, and nothing threatens it (below);
* **equivalent within +-margin** when, with at least two units, the interval lies inside (-margin, margin)
  and nothing threatens it;
* **inconclusive** otherwise, with what it would take: the paired seeds a t test needs at the observed
  difference and the measured per-unit sd, or the points a side lacks (and the setting that would reach them,
  :mod:`alignkit.eval.kl_knob`);
* one unit covers evaluation noise only and never names a winner.

**Repeated looks** (``compare --decide``) test look j at its share of 0.05 under an O'Brien-Fleming-type
spending function over the seeds schedule :data:`LOOKS` (:func:`look_alpha`); the shares sum to 0.05, so by
the union bound the looks together name a false winner at most 5% of the time.

**What threatens a verdict.** A frontier over every checkpoint of every setting only rises when training adds
points. The leader's further training can only widen its lead; the trailing method's can close it, and only
through runs that could still improve at the matched KL: a trailing run not labelled converged or declining
whose last point lies at or below the top of the matched KL range (a run already past it adds points at higher
KL, which cannot lift the staircase inside the range). Such runs are named, and a verdict they threaten is
inconclusive; the sentence says what would flip it (those runs gaining the margin by which the trailing side
is behind).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from scipy import stats

from alignkit.eval.matched_kl import KL_MATCH, MatchedKL, seeds_needed

MARGIN = 0.02      # gold reward: the README's measured run-to-run sd on IMDb (0.014-0.017), rounded up
ASSUMED_SD = 0.02  # what "seeds needed" assumes from one unit, which cannot measure run-to-run variation
OPEN = ("converged", "declining", "no training")  # labels that cannot improve by training on
ALPHA = 0.05
LOOKS = (2, 3, 5, 8)  # paired seeds at each look of compare --decide


def spent(fraction: float, alpha: float = ALPHA) -> float:
    """Alpha spent by information ``fraction`` (Lan-DeMets O'Brien-Fleming type): little early, all at 1."""
    if fraction <= 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2) / math.sqrt(min(fraction, 1))
    return float(min(alpha, 2 - 2 * stats.norm.cdf(z)))


def look_alpha(units: int, looks: tuple = LOOKS, alpha: float = ALPHA) -> float:
    """The test level of the look at ``units`` paired seeds: the alpha spent since the schedule's look before
    it (a look skipped spends nothing; no look beyond the schedule's last)."""
    if units not in looks:
        raise ValueError(f"{units} seeds is no look of the schedule {looks}")
    i = looks.index(units)
    return spent(units / looks[-1], alpha) - (spent(looks[i - 1] / looks[-1], alpha) if i else 0.0)


@dataclass
class Run:
    """What the rule needs of one run: its label, method (group), convergence label and last point's KL."""

    label: str
    group: str
    state: str
    final_kl: float | None


@dataclass
class Verdict:
    """The answer for one pair (a against b) and the words of its table row."""

    kind: str        # "winner", "equivalent", "inconclusive", "no verdict"
    winner: str | None
    answer: str      # the verdict cell
    would_take: str  # what would decide it (inconclusive), or what would flip it (decided)
    needs: dict = field(default_factory=dict)  # the same for compare --decide: seeds, setting, runs to extend


def threats(trailing: str, runs: list[Run], kl_high: float) -> list[str]:
    """The trailing method's runs that could still improve inside the matched KL range (module docstring)."""
    return sorted(r.label for r in runs if r.group == trailing and r.state not in OPEN
                  and (r.final_kl is None or r.final_kl <= kl_high * (1 + KL_MATCH)))


def _named(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 3 else f"{len(labels)} runs ({', '.join(labels[:2])}, ...)"


SettingFor = Callable[[str, float], tuple[str, dict | None]]  # (method, KL) -> (phrase, setting or None)


def decide(a: str, b: str, result: MatchedKL | None, runs: list[Run], *, margin: float = MARGIN,
           adjusted_p: float | None = None, alpha: float = ALPHA,
           setting_for: SettingFor | None = None) -> Verdict:
    """The rule of the module docstring for a against b, a winner's (Holm-adjusted) p below ``alpha``;
    ``setting_for`` names the setting that would give a side the points it lacks."""
    if result is None:
        return Verdict("no verdict", None, "no verdict", f"points of both {a} and {b} on the same prompts")
    if result.units == 1:
        need = seeds_needed(result.difference, ASSUMED_SD * math.sqrt(2))
        return Verdict("inconclusive", None, "inconclusive (one run each: evaluation noise only)",
                       f"paired seeds (--seeds): about {need or 'many'} at this difference if runs vary by "
                       f"{ASSUMED_SD:g} (assumed; one run cannot measure it)")
    p = result.p_value if adjusted_p is None else adjusted_p
    lead = a if result.ci_low > 0 else b if result.ci_high < 0 else None
    if lead is not None and p < alpha:
        trailing = b if lead == a else a
        threat = threats(trailing, runs, result.kl_high)
        gap = result.ci_low if lead == a else -result.ci_high
        if threat:
            return Verdict("inconclusive", None,
                           f"inconclusive: {lead} leads, but {trailing} could still improve",
                           f"{_named(threat)} trained on (--until-converged) without gaining {gap:.3f} at "
                           f"{result.kl_low:.3g}-{result.kl_high:.3g} nats", {"extend": threat})
        return Verdict("winner", lead, f"{lead} higher",
                       f"flips only if {trailing} gains {gap:.3f} at these KLs (its runs there are flat)")
    if -margin < result.ci_low and result.ci_high < margin:
        open_runs = [r.label for r in runs if r.group in (a, b) and r.state not in OPEN
                     and (r.final_kl is None or r.final_kl <= result.kl_high * (1 + KL_MATCH))]
        if open_runs:
            return Verdict("inconclusive", None,
                           f"inconclusive: within \u00b1{margin:g}, but runs could improve",
                           f"{_named(sorted(open_runs))} trained on (--until-converged)",
                           {"extend": sorted(open_runs)})
        return Verdict("equivalent", None, f"equivalent within \u00b1{margin:g}",
                       f"flips if either gains {margin - max(abs(result.ci_low), abs(result.ci_high)):.3f}")
    return Verdict("inconclusive", None, "inconclusive" + (" after Holm" if lead else ""),
                   *_would_take(a, b, result, setting_for))


def _would_take(a: str, b: str, result: MatchedKL, setting_for: SettingFor | None = None) -> tuple[str, dict]:
    """What would decide an inconclusive pair, in words and as ``needs``: the side the points cannot bound
    (with the setting that would reach past them), else paired seeds."""
    for unbounded, short, other in ((result.ci_high, a, b), (result.ci_low, b, a)):
        if not math.isfinite(unbounded) and (result.difference < 0) == (short == a):
            points = f"points of {short} at {result.kl_high:.3g} nats or above"
            why = f"its points end below, so only {short}'s lead over {other} can be shown there"
            phrase, setting = setting_for(short, result.kl_high) if setting_for else ("", None)
            if setting:
                return f"{phrase} ({points}: {why})", {"setting": setting}
            if phrase:
                return f"{points} ({why}; {phrase})", {"points": short, "no_setting": phrase}
            return f"{points} ({why})", {}
    need = seeds_needed(result.difference, result.unit_sd)
    unit = "replicates" if result.unit_kind == "replicate" else "paired seeds"
    if need is None:
        return f"more {unit} (the difference is 0 at the measured sd)", {}
    return (f"about {need} {unit} at this difference and the measured sd {result.unit_sd:.3f} (now "
            f"{result.units})", {"seeds": need})


def interval_text(ci_low: float, ci_high: float) -> str:
    """An interval with its unbounded sides as infinities."""
    low = "-\u221e" if not math.isfinite(ci_low) else f"{ci_low:.3f}"
    high = "\u221e" if not math.isfinite(ci_high) else f"{ci_high:.3f}"
    return f"{low} to {high}"


def sentence(a: str, b: str, result: MatchedKL | None, verdict: Verdict, *, family: int,
             margin: float = MARGIN, alpha: float = ALPHA) -> str:
    """The one sentence for a headline pair: the answer, the interval and what it covers, the equivalence
    margin, what would change it."""
    if result is None:
        return f"{a} vs {b}: no verdict, no points of both on the same prompts."
    holm = f"; Holm over {family} comparisons" if family > 1 and result.units > 1 else ""
    holm += f"; tested at alpha {alpha:.3g} (one of repeated looks)" if alpha != ALPHA else ""
    head = f"At matched KL ({result.kl_low:.3g}\u2013{result.kl_high:.3g} nats), {a} vs {b}: "
    body = {"winner": f"{verdict.winner} reaches a higher gold reward",
            "equivalent": verdict.answer}.get(verdict.kind, verdict.answer)
    return (f"{head}{body}, difference {result.difference:.3f} (95% interval "
            f"{interval_text(result.ci_low, result.ci_high)}, {result.units} "
            f"unit{'s' if result.units > 1 else ''}, covering {result.covers}{holm}; equivalence margin "
            f"\u00b1{margin:g}). "
            f"{'What would flip it' if verdict.kind in ('winner', 'equivalent') else 'What it would take'}: "
            f"{verdict.would_take}.")
