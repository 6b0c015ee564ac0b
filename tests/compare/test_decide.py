"""`alignkit compare --decide` (alignkit.compare.decide): the comparison rerun with more paired seeds at the
looks of a fixed schedule, each look's verdicts at its share of 0.05, stopping when every pair is decided or
the budget is spent."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.compare.decide import parse_duration, schedule
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import LOOKS, look_alpha

FAST = ["eval.every_steps=2", "eval.temperatures=[]", "eval.n_prompts=16", "dpo.max_steps=4",
        "dpo.batch_size=8"]


def test_the_looks_share_five_percent_little_of_it_early():
    shares = [look_alpha(k) for k in LOOKS]
    assert sum(shares) == pytest.approx(0.05) and shares == sorted(shares) and shares[0] < 1e-3
    assert schedule(None) == [2, 3, 5, 8] and schedule(4) == [5, 8]
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90 and parse_duration("12") == 12
    with pytest.raises(AlignkitError, match="--budget soon"):
        parse_duration("soon")


def test_decide_adds_a_seed_reusing_the_others_and_stops_at_the_budget(tmp_path, compare_overrides):
    out = tmp_path / "out"
    args = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", "dpo", "ipo=dpo:loss=ipo", "--decide", "--budget", "1s",
                                       "--out", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "decide.json").read_text())
    first, second = record["looks"]
    assert first["verdicts"][0]["verdict"] not in ("winner", "equivalent")  # else no seed would be added
    assert [look["seeds"] for look in record["looks"]] == [2, 3]
    assert [look["alpha"] for look in record["looks"]] == [look_alpha(2), look_alpha(3)]
    assert sorted(first["added"]) == ["dpo#seed0", "dpo#seed1", "ipo#seed0", "ipo#seed1"]
    assert second["added"] == ["dpo#seed2", "ipo#seed2"] and "budget (1s) was spent" in record["stopped"]
    index = json.loads((out / "compare.json").read_text())
    states = {e["label"]: e["state"] for e in index["entries"]}
    assert states == {"dpo#seed0": "current", "dpo#seed1": "current", "dpo#seed2": "train",
                      "ipo#seed0": "current", "ipo#seed1": "current", "ipo#seed2": "train"}
    assert index["alpha"] == look_alpha(3) and "--decide" in index["argv"] and "--budget 1s" in index["argv"]
    assert index["matched_kl"][0]["result"]["units"] == 3
    assert "decide: look at 3 seeds" in result.output and "added dpo#seed2, ipo#seed2" in result.output
    assert "## Decide" in (out / "report.md").read_text()
