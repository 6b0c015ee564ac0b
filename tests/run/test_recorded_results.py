"""Nothing recorded in a run folder changes unless the new result is valid: an ``alignkit eval`` that fails
in the middle of writing (a full disk at the summary, the card, the manifest or the plot) leaves every file
of the run byte-identical (sha256 before and after) and adds none."""

from __future__ import annotations

import errno
import hashlib

import pytest
from test_cli import assert_one_line_error
from test_untrusted_runs import finished_run, invoke, run  # noqa: F401  (fixtures)

from alignkit import runlog
from alignkit.run import pipeline


def digests(run_dir) -> dict[str, str]:
    """Every file of the run folder by its sha256."""
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failing", ["summary.json", "README.md", "manifest.json", "summary.png"])
def test_an_eval_that_fails_while_writing_changes_nothing_recorded(run, failing, monkeypatch):  # noqa: F811
    before = digests(run)
    full = OSError(errno.ENOSPC, "No space left on device")
    if failing == "summary.png":
        def plot_fails(run_dir, summary):
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "eval" / failing))
        monkeypatch.setattr(pipeline, "plot_run", plot_fails)
    else:
        fill = runlog._fill

        def disk_fills(handle, text, path):
            if path.name == failing:
                raise full
            fill(handle, text, path)
        monkeypatch.setattr(runlog, "_fill", disk_fills)
    result = invoke("eval", run, "--temperatures", "0.5")
    assert_one_line_error(result, failing, "No space left on device")
    assert digests(run) == before  # the new temperature's samples too: never added
