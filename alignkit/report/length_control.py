"""The report's section on length: each entry's raw and length-controlled win rates and its judge's
position bias (the model behind the length-controlled rate: :mod:`alignkit.eval.length_control`)."""

from __future__ import annotations

import math


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def length_control_lines(primary) -> list[str]:
    """Markdown lines for the primary temperature's rows (a pandas frame); none when no row has the numbers
    (runs evaluated before alignkit measured them)."""
    if "lc_win_rate" not in primary or primary["lc_win_rate"].isna().all():
        return []
    lines = ["## Win rates controlled for length", "",
             "| entry | win rate [95% CI] | length-controlled [95% CI] | length slope | mean length "
             "difference (chars) | position bias |", "|---" * 6 + "|"]
    for _, row in primary.iterrows():
        bias = row.get("judge_position_bias")
        lines.append(f"| {row['label']} | {_num(row['win_rate_vs_reference'])} "
                     f"[{_num(row['win_rate_ci_low'], 2)}, {_num(row['win_rate_ci_high'], 2)}] | "
                     f"{_num(row['lc_win_rate'])} [{_num(row['lc_win_rate_ci_low'], 2)}, "
                     f"{_num(row['lc_win_rate_ci_high'], 2)}] | {_num(row['lc_length_slope'], 2)} | "
                     f"{_num(row['mean_length_difference_chars'], 1)} | "
                     f"{_num(bias) if bias is not None and not math.isnan(bias) else 'n/a (score judge)'} |")
    return lines + ["", "Length-controlled: a logistic regression of each prompt's verdict (ties half) on "
                    "tanh(length difference / its standard deviation), read at zero difference, "
                    "AlpacaEval-style with length as the only term; interval: 1000 bootstrap resamples of "
                    "the prompts. Length slope > 0: the judge favours the longer reply. Position bias: the "
                    "share of prompts whose verdict flipped when the two replies swapped places (counted as "
                    "ties in the win rate).", ""]
