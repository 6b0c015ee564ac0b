"""A method's KL knob: the one setting that moves its points along KL, declared where the method registers
(``register_method(..., kl_knob=fn)``, ``fn(settings) -> KLKnob | None``), and the rule for the value that
reaches past a sweep when a verdict needs a method's points at a higher KL (``compare --decide``).

**The rule.** The new setting is the method's highest-KL run with its knob moved past the extreme of every
value the method has run: a knob that is itself a KL in nats (PPO's ``target_kl``) goes past its top value by
the KL still missing (the KL needed minus the highest the method reached), at least by its sweep's top step
(the top value itself when only one was run); any other knob by a factor of 2 (beta, ``kl_coef`` halved, N
doubled). A knob already at 0 has nowhere to go. Methods that declare no knob (SFT, Preferred-FT,
Unlikelihood, reference-free losses) cannot be moved, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable

from alignkit.registry import METHODS

FACTOR = 2


@dataclass(frozen=True)
class KLKnob:
    """A setting of a method's section that moves its KL: ``rises`` when a larger value gives a higher KL,
    ``nats`` when the value is itself a KL target, ``integer`` when only whole values exist."""

    key: str
    rises: bool
    nats: bool = False
    integer: bool = False

    def beyond(self, values: Iterable[float], needed: float, reached: float) -> float | int | None:
        """The value past ``values`` toward a higher KL (module docstring); None when there is none."""
        values = sorted(set(values))
        if self.nats:
            step = values[-1] - values[-2] if len(values) > 1 else values[-1]
            return _round(values[-1] + max(needed - reached, step))
        if self.rises:
            top = values[-1] * FACTOR
            return int(top) if self.integer else _round(top)
        return _round(values[0] / FACTOR) if values[0] > 0 else None


def _round(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class GroupRun:
    """What the rule reads of one run of a method: its method, its method section (a config or the plain
    dict a manifest records), its sweep point and its last point's KL."""

    method: str
    settings: Any
    sweep: dict
    kl: float | None


def knob_of(method: str, settings: Any) -> KLKnob | None:
    """The knob ``method`` declares for these settings (a config object or its plain dict), None without."""
    declare = METHODS.entry(method).meta.get("kl_knob") if method in METHODS else None
    if declare is None:
        return None
    return declare(SimpleNamespace(**settings) if isinstance(settings, dict) else settings)


def next_setting(group: str, runs: list[GroupRun], needed: float) -> tuple[str, dict | None]:
    """The setting that moves ``group`` toward ``needed`` nats, as (phrase, setting): ``setting`` names the
    group, the dotted key, the value and the sweep point it starts from; without one, the phrase says why."""
    runs = [r for r in runs if r.kl is not None]
    if not runs:
        return f"{group} has no evaluated run to move", None
    base = max(runs, key=lambda r: r.kl)
    knob = knob_of(base.method, base.settings)
    if knob is None:
        return f"{group} has no KL setting to add", None
    values = [_value(r.settings, knob.key) for r in runs if knob_of(r.method, r.settings) == knob]
    value = knob.beyond([v for v in values if v is not None], needed, base.kl)
    if value is None:
        return f"{group}'s {knob.key} is already 0", None
    setting = {"group": group, "key": f"{base.method}.{knob.key}", "value": value, "from": dict(base.sweep),
               "kl": needed}
    return f"a {group} setting at {knob.key} {value:g}", setting


def _value(settings: Any, key: str) -> Any:
    return settings.get(key) if isinstance(settings, dict) else getattr(settings, key, None)
