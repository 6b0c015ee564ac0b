"""``alignkit compare ... --check-against TABLE``: does this run reproduce a published table? Entry by entry,
its headline gold reward and KL against those of a ``comparison.csv`` or a ``report.md`` (the README's tables
come from one), each within a stated spread; one line per entry and an exit status (0: every entry
reproduces)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from alignkit.errors import AlignkitError

# three times the largest replicate-to-replicate sd the README publishes (0.017 gold, 0.22 nats KL)
DEFAULT_SPREAD = (0.051, 0.66)
_CELL = re.compile(r"^\s*(-?[0-9.]+(?:e-?[0-9]+)?)")


def parse_spread(text: str | None) -> tuple[float, float]:
    """``GOLD,KL`` as the largest differences still called a reproduction; None gives the default."""
    if text is None:
        return DEFAULT_SPREAD
    try:
        gold, kl = (float(t) for t in text.split(","))
    except ValueError:
        gold = kl = -1.0
    if not (gold >= 0 and kl >= 0):
        raise AlignkitError(f"--check-spread {text}: expected two numbers 0 or more, GOLD,KL "
                            "(e.g. 0.051,0.66)")
    return gold, kl


def headline(path: Path) -> dict[str, tuple[float, float]]:
    """{entry: (gold reward, KL)} of a comparison's headline evaluation, read from its ``comparison.csv``
    (each label's first row) or its ``report.md`` (the table of gold reward and KL); any problem is one line
    naming the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise AlignkitError(f"--check-against {path}: no such file (a comparison.csv or report.md)")
    if path.suffix == ".csv":
        try:
            table = pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as exc:
            raise AlignkitError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        missing = [c for c in ("label", "gold_reward_mean", "kl_mean") if c not in table.columns]
        if missing:
            raise AlignkitError(f"{path}: no column {missing[0]} (expected a comparison.csv)")
        first = table.drop_duplicates("label")
        return {str(r.label): (float(r.gold_reward_mean), float(r.kl_mean)) for r in first.itertuples()}
    return _markdown(path)


def _markdown(path: Path) -> dict[str, tuple[float, float]]:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == "entry" and any(c.startswith("gold reward") for c in cells):
            gold = next(j for j, c in enumerate(cells) if c.startswith("gold reward"))
            kl = next((j for j, c in enumerate(cells) if c.startswith("KL [") or c == "KL"), None)
            if kl is None:
                break
            rows = {}
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = [c.strip() for c in row.strip("|").split("|")]
                rows[values[0]] = (_number(values[gold]), _number(values[kl]))
            if rows:
                return rows
    raise AlignkitError(f"{path}: no table with columns entry, gold reward and KL (expected a report.md)")


def _number(cell: str) -> float:
    found = _CELL.match(cell)
    return float(found.group(1)) if found else math.nan


def check_against(run: Path, published: Path, spread: tuple[float, float]) -> tuple[list[str], bool]:
    """Lines saying, entry by entry, whether ``run``'s comparison.csv reproduces ``published`` within
    ``spread`` (gold, KL), and whether every entry of either did."""
    ours, theirs = headline(Path(run) / "comparison.csv"), headline(published)
    lines = [f"check against {published} (a reproduction: gold within {spread[0]:g}, "
             f"KL within {spread[1]:g}):"]
    ok = True
    for label in [*ours, *(k for k in theirs if k not in ours)]:
        if label not in theirs or label not in ours:
            ok = False
            lines.append(f"  {label}: {'not in the published table' if label in ours else 'not run here'}")
            continue
        (gold, kl), (gold0, kl0) = ours[label], theirs[label]
        same_kl = abs(kl - kl0) <= spread[1] or (math.isnan(kl) and math.isnan(kl0))  # both unmeasured
        close = abs(gold - gold0) <= spread[0] and same_kl
        ok &= close
        lines.append(f"  {label}: gold {gold:.3f} vs {gold0:.3f} ({gold - gold0:+.3f}), "
                     f"KL {kl:.2f} vs {kl0:.2f} ({kl - kl0:+.2f}): {'reproduces' if close else 'differs'}")
    return lines, ok
