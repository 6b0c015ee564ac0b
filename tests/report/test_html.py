"""report.html of a made-up comparison (tests/synthetic_report.py): the data it embeds equals the samples on
disk, hostile text stays text, nothing is fetched from elsewhere; in headless Chromium (skipped in one line
without one) the "judge disagrees with gold" filter finds exactly the prompts counted here; the size
benchmark runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium, missing, open_report
from synthetic_report import HOSTILE, disagreements, synthetic_report, synthetic_runs

ROOT = Path(__file__).resolve().parents[2]


def embedded(page: Path) -> dict:
    """The page's JSON blob, as the page parses it."""
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    page = synthetic_report(folder, 4, 12, judge="a-judge")
    return page, synthetic_runs(folder / "again", 4, 12, judge="a-judge")  # the same seed: the same runs


def test_the_page_embeds_every_sample_and_fetches_nothing(synthetic):
    page, runs = synthetic
    html, data = page.read_text(), embedded(page)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # no CDN, no server: data URIs and anchors only
    assert [f["src"][:22] for f in data["figures"]] == ["data:image/png;base64,"] * 3
    assert HOSTILE not in html and "\\u003c/script>" in html  # escaped in the blob, still the same string
    assert data["samples"]["prompts"] == [r["prompt"] for r in runs[0].samples()]
    for run in runs:
        rows, columns = run.samples(), data["samples"]["entries"][run.label]
        assert columns["text"] == [r["completion"] for r in rows]
        assert columns["gold"] == pytest.approx([r["gold_reward"] for r in rows], rel=1e-3)
        assert columns["judge"] == pytest.approx([r["judge_score"] for r in rows], rel=1e-3)
        assert ("proxy" in columns) == ("proxy_reward" in rows[0])
        assert "reference" not in columns  # one shared reference, sent once
    assert data["samples"]["reference"]["text"] == [r["reference_completion"] for r in runs[0].samples()]
    assert len(data["head_to_head"]["labels"]) == 4
    assert data["caveats"] == ["Made-up data: every number is random."]


needs_browser = pytest.mark.skipif(missing() is not None, reason=f"no headless browser: {missing()}")


@needs_browser
def test_the_disagreement_filter_finds_the_prompts_counted_here(synthetic, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page, runs = synthetic
    with chromium() as browser:
        open_report(browser, page)
        assert browser.title == "Comparison: synthetic 4 x 12"  # the hostile completion did not run
        hostile = f'[data-prompt="0"] [data-label="{runs[0].label}"] .body'
        assert browser.find_element(By.CSS_SELECTOR, hostile).text == HOSTILE
        browser.find_element(By.ID, "entries-none").click()
        assert browser.find_element(By.ID, "match-count").text.startswith("0 of 12 prompts")
        for run in runs:
            box = browser.find_element(By.CSS_SELECTOR, f'#entry-boxes input[value="{run.label}"]')
            box.click()
            Select(browser.find_element(By.ID, "filter")).select_by_value("disagree")
            count = browser.find_element(By.ID, "match-count").text
            assert count.startswith(f"{disagreements(run)} of 12 prompts"), (run.label, count)
            cards = browser.find_elements(By.CSS_SELECTOR, ".sample.disagree")
            assert len(cards) == min(disagreements(run), 10)
            Select(browser.find_element(By.ID, "filter")).select_by_value("all")
            box.click()
        browser.save_screenshot(str(tmp_path / "synthetic.png"))


def test_the_size_benchmark_runs(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/report_html.py", "--entries", "3", "--prompts", "6",
                           "--repeats", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 entries x 6 prompts" in done.stdout and (tmp_path / "report.html").is_file()
    assert ("median of 1 loads" in done.stdout) == (missing() is None)


def test_a_pairwise_judges_verdicts_are_sent_in_place_of_scores(tmp_path):
    from alignkit.report.samples import sample_data

    runs = synthetic_runs(tmp_path, 2, 5, judge="a-judge")
    for run in runs:  # as a pairwise judge writes them: a verdict against the reference per prompt, no scores
        rows = run.samples()
        for r in rows:
            r["judge_preference"] = float(r.pop("judge_score") > r.pop("reference_judge_score"))
        (run.run_dir / "eval" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = sample_data(runs)
    for run in runs:
        columns = data["entries"][run.label]
        assert columns["pref"] == [r["judge_preference"] for r in run.samples()] and "judge" not in columns
    assert "judge" not in data["reference"] and len(data["reference"]["text"]) == 5
