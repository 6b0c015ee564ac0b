"""report.html of a tiny trained comparison (DPO and PPO): written by compare and by report, everything
else the report writes byte-for-byte as without it, its data equal to the run folders' samples; in headless
Chromium (skipped in one line without one) the table, plots, curves and samples render, filters and the
head-to-head links work, and a screenshot is taken."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import chromium, missing, open_report
from click.testing import CliRunner
from test_compare import compare, sets

import alignkit.report.build as build
from alignkit.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, compare_overrides, cache_dir):
    import os

    os.environ["ALIGNKIT_CACHE"] = str(cache_dir)
    out = tmp_path_factory.mktemp("html") / "cmp"
    result = compare("dpo", "ppo", "--out", out, *sets(compare_overrides))
    assert result.exit_code == 0, result.output
    return out


def embedded(page: Path) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(found.group(1))


def samples(out: Path, label: str) -> list[dict]:
    return [json.loads(x) for x in (out / "runs" / label / "eval" / "samples.jsonl").read_text().splitlines()]


def test_report_html_is_added_and_nothing_else_changes(tiny, tmp_path, monkeypatch):
    assert (tiny / "report.html").is_file()
    report = ["report", str(tiny), "--out", str(tmp_path / "out")]  # one --out: compare.json records it
    assert CliRunner().invoke(main, report, catch_exceptions=False).exit_code == 0
    (tmp_path / "out").rename(tmp_path / "with")
    monkeypatch.setattr(build, "write_html", lambda *args: None)  # the report as it was before report.html
    assert CliRunner().invoke(main, report, catch_exceptions=False).exit_code == 0
    (tmp_path / "out").rename(tmp_path / "without")
    written = sorted(p.name for p in (tmp_path / "with").iterdir())
    assert written == sorted([*(p.name for p in (tmp_path / "without").iterdir()), "report.html"])
    for name in written:
        if name.endswith((".csv", ".json", ".md")):
            assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes(), name
    data = embedded(tmp_path / "with" / "report.html")
    for label in ("dpo", "ppo"):
        rows, columns = samples(tiny, label), data["samples"]["entries"][label]
        assert columns["text"] == [r["completion"] for r in rows]
        assert columns["kl"] == pytest.approx([r["kl"] for r in rows], rel=1e-3)
        assert [data["samples"]["prompts"][i] for i in columns["at"]] == [r["prompt"] for r in rows]
    assert "proxy" in data["samples"]["entries"]["ppo"] and "proxy" not in data["samples"]["entries"]["dpo"]
    assert "judge" not in data["samples"]["entries"]["ppo"]  # the judge is gold: its scores are the gold
    assert [r["label"] for r in data["results"]] == ["dpo", "ppo"] and data["head_to_head"]["n"] == 16


@pytest.mark.skipif(missing() is not None, reason=f"no headless browser: {missing()}")
def test_the_report_renders_and_its_filters_work_in_chromium(tiny, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    css = lambda selector: browser.find_elements(By.CSS_SELECTOR, selector)  # noqa: E731
    with chromium() as browser:
        timing = open_report(browser, tiny / "report.html")
        assert timing["drawn"] < 2000
        assert [td.text for td in css("#results-table tbody td:first-child")] == ["dpo", "ppo"]
        css('#results-table th[data-key="kl_mean"]')[0].click()
        css('#results-table th[data-key="kl_mean"]')[0].click()  # descending: the larger KL first
        kl = {r["label"]: r["kl_mean"] for r in embedded(tiny / "report.html")["results"]}
        assert css("#results-table tbody td")[0].text == max(kl, key=kl.get)
        assert len(css("#figures img")) == 3
        width = "return arguments[0].naturalWidth"
        widths = [browser.execute_script(width, img) for img in css("#figures img")]
        assert min(widths) > 100  # decoded, drawn pictures
        assert len(css("#curves svg polyline")) == 2  # each entry's convergence curve
        assert len(css("#sample-list .prompt")) == 10 and len(css('.sample[data-label="ppo"]')) == 10
        first = samples(tiny, "ppo")[0]
        assert css('[data-prompt="0"] [data-label="ppo"] .body')[0].text == first["completion"].strip()
        css('#entry-boxes input[value="dpo"]')[0].click()  # by entry: PPO's samples only
        assert not css('.sample[data-label="dpo"]') and len(css('.sample[data-label="ppo"]')) == 10
        Select(css("#order")[0]).select_by_value("gap")  # largest proxy-gold gap first
        assert "proxy-gold gap" in css(".sample[data-label=ppo] .scores")[0].text
        browser.save_screenshot(str(tmp_path / "samples.png"))
        css('#entry-boxes input[value="dpo"]')[0].click()
        css('#h2h-table a[data-a="ppo"][data-b="dpo"]')[0].click()  # the prompts behind a head-to-head cell
        pairs = zip(samples(tiny, "ppo"), samples(tiny, "dpo"))
        wins = sum(p["gold_reward"] > d["gold_reward"] for p, d in pairs)
        assert css("#match-count")[0].text.startswith(f"{wins} of 16 prompts")
        assert not css("#pair-banner")[0].get_attribute("hidden")
    assert (tmp_path / "samples.png").stat().st_size > 10_000
