"""Runs made with different package versions are named in one warning line (alignkit.report.versions)."""

from __future__ import annotations

from pathlib import Path

from alignkit.eval.summary import EvalSummary
from alignkit.report.records import RunRecord
from alignkit.report.versions import version_differences, version_warning


def _run(label: str, **versions) -> RunRecord:
    return RunRecord(Path(label), {"compare_entry": {"label": label}, "versions": versions}, EvalSummary())


def test_differing_versions_are_named_with_a_run_that_had_each():
    runs = [_run("dpo", torch="2.13.0", transformers="5.25.0"), _run("ipo", torch="2.13.0",
                                                                     transformers="5.25.0"),
            _run("ppo", torch="2.13.0", transformers="5.23.0", accelerate="1.15.0")]
    found = version_differences(runs)
    # torch agrees; accelerate
    assert found == {"transformers": {"5.25.0": ["dpo", "ipo"], "5.23.0": ["ppo"]}}
    line = version_warning(found)                                                   # recorded by one run only
    assert "\n" not in line and "transformers 5.25.0 (dpo +1) vs 5.23.0 (ppo)" in line
    assert version_warning(version_differences(runs[:2])) is None
