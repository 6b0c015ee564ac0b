"""Notices and warnings go through the ``alignkit`` logger (silenced or redirected like any library's, printed
in the CLI's one-line format by the CLI's handler), and progress bars honour ``TQDM_DISABLE``."""

from __future__ import annotations

import logging
from pathlib import Path

from click.testing import CliRunner

from alignkit.cli import main
from alignkit.console import CliFormatter, bar, bars_disabled, get_logger, quiet_module_bars
from alignkit.errors import warn

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_warnings_are_log_records_a_library_user_can_capture(caplog):
    with caplog.at_level(logging.INFO, logger="alignkit"):
        warn("3 pairs dropped")
        get_logger("cache").warning("models/x is corrupt; rebuilding")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("alignkit", logging.WARNING, "3 pairs dropped"),
        ("alignkit.cache", logging.WARNING, "models/x is corrupt; rebuilding")]


def test_the_cli_format_is_kept_and_a_user_can_silence_it(capsys):
    get_logger("run").info("dpo_imdb: sft ...")
    warn("prompts cut")
    get_logger("cache").warning("models/x failed its checksum; rebuilding")
    get_logger().warning("report: versions differ", extra={"notice": True})
    assert capsys.readouterr().err.splitlines() == [
        "[alignkit] dpo_imdb: sft ...", "alignkit: warning: prompts cut",
        "alignkit: cache: models/x failed its checksum; rebuilding", "[alignkit] report: versions differ"]
    logger = get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        warn("not shown")
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().err == ""


def test_formatter_prefixes():
    record = logging.LogRecord("alignkit.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    assert CliFormatter().format(record) == "[alignkit] hello you"


def test_tqdm_disable_is_read_when_a_bar_is_made(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not bars_disabled() and not bar(total=3).disable
    assert bar(total=3, main=False).disable  # one bar per process: the others' are off
    for value, off in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert bar(total=3).disable is off, value


def test_third_party_bars_are_quiet_unless_asked(monkeypatch):
    import types

    from tqdm.auto import tqdm

    module = types.SimpleNamespace(tqdm=tqdm)  # a library calling its own tqdm without disable=
    monkeypatch.delenv("ALIGNKIT_THIRD_PARTY_BARS", raising=False)
    with quiet_module_bars(module):
        assert module.tqdm(total=2).disable
    assert module.tqdm is tqdm
    monkeypatch.setenv("ALIGNKIT_THIRD_PARTY_BARS", "1")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with quiet_module_bars(module):
        assert not module.tqdm(total=2).disable


def test_tqdm_disable_run_prints_notices_but_no_bar(tmp_path, tiny_overrides, monkeypatch):
    """A tiny DPO run (SFT, preference sampling, DPO and evaluation all have bars) with TQDM_DISABLE=1."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(tmp_path / "run"),
                                       *sets, "--set", "dpo.epochs=1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "[alignkit] dpo_imdb: " in result.stderr
    assert "\r" not in result.stderr and "it/s]" not in result.stderr and "%|" not in result.stderr, \
        result.stderr[:2000]
