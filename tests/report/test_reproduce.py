"""``compare --check-against``: entry by entry, does a run reproduce a published comparison.csv or report.md
within the stated spread (gold and KL); one line per entry, exit 1 when one does not, a bad table refused
before anything trains."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.errors import AlignkitError
from alignkit.report.reproduce import check_against, headline, parse_spread

DOCS = Path(__file__).parents[2] / "docs"


def write_csv(path: Path, rows: dict[str, tuple[float, float]]) -> Path:
    records = []
    for label, (gold, kl) in rows.items():  # the headline row first, then another temperature's
        records += [{"label": label, "temperature": 1, "gold_reward_mean": gold, "kl_mean": kl},
                    {"label": label, "temperature": 0, "gold_reward_mean": 0.99, "kl_mean": float("nan")}]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def test_the_published_report_and_csv_give_the_headline_numbers():
    assert headline(DOCS / "compare_dpo_ppo.md") == {"dpo": (0.823, 12.48), "ppo": (0.771, 5.66)}
    table = headline(DOCS / "figure2_comparison.csv")
    assert table["dpo@beta=0.05@lr=0.0005"] == pytest.approx((0.698094, 37.8593))


def test_each_entry_is_said_to_reproduce_or_differ(tmp_path):
    write_csv(tmp_path / "run" / "comparison.csv", {"dpo": (0.822, 11.24), "ppo": (0.735, 5.57)})
    lines, ok = check_against(tmp_path / "run", DOCS / "compare_dpo_ppo.md", parse_spread(None))
    assert not ok and lines[1:] == [
        "  dpo: gold 0.822 vs 0.823 (-0.001), KL 11.24 vs 12.48 (-1.24): differs",
        "  ppo: gold 0.735 vs 0.771 (-0.036), KL 5.57 vs 5.66 (-0.09): reproduces"]
    lines, ok = check_against(tmp_path / "run", DOCS / "compare_dpo_ppo.md", parse_spread("0.1,2"))
    assert ok and all(line.endswith("reproduces") for line in lines[1:])
    published = write_csv(tmp_path / "published.csv", {"dpo": (0.822, 11.24)})
    lines, ok = check_against(tmp_path / "run", published, (0.0, 0.0))
    assert not ok and lines[2] == "  ppo: not in the published table"


@pytest.mark.parametrize("content, name, fragment", [
    ("label,gold_reward_mean\ndpo,0.7\n", "t.csv", "t.csv: no column kl_mean (expected a comparison.csv)"),
    ("# a report\n\n| entry | gold |\n|---|---|\n", "r.md",
     "r.md: no table with columns entry, gold reward and KL (expected a report.md)"),
])
def test_a_table_without_the_numbers_is_one_line_before_anything_runs(content, name, fragment, tmp_path):
    (tmp_path / name).write_text(content)
    result = CliRunner().invoke(main, ["compare", "dpo", "--out", str(tmp_path / "cmp"), "--check-against",
                                       str(tmp_path / name)], catch_exceptions=False)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].endswith(fragment)
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(AlignkitError, match="--check-spread 0.1: expected two numbers"):
        parse_spread("0.1")


def test_a_finished_comparison_is_checked_after_it_runs(tmp_path, tiny_overrides):
    args = ["compare", "sft", "--out", str(tmp_path / "cmp"), "--set", "sft.max_steps=2", "--set",
            "eval.n_prompts=8", "--set", "eval.temperatures=[]",
            *[a for o in tiny_overrides for a in ("--set", o)]]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    gold, kl = headline(tmp_path / "cmp" / "comparison.csv")["sft"]
    near = write_csv(tmp_path / "near.csv", {"sft": (gold + 0.04, kl - 0.5)})
    result = CliRunner().invoke(main, [*args, "--check-against", str(near)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.strip().splitlines()[-1].endswith(": reproduces")
    far = write_csv(tmp_path / "far.csv", {"sft": (gold + 0.06, kl)})
    result = CliRunner().invoke(main, [*args, "--check-against", str(far)], catch_exceptions=False)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].endswith(": differs")
