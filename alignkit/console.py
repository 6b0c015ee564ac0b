"""What a person sees on the terminal: alignkit's notices and warnings, and its progress bars.

Notices and warnings go through ``logging.getLogger("alignkit")`` and its children: a library user silences or
redirects them like any other library's (``logging.getLogger("alignkit").setLevel(logging.ERROR)``, or a
handler of their own); without any configuration Python prints the warnings bare on stderr. The CLI and the
compare workers call :func:`install_cli_handler`, which prints them as the CLI always has: ``[alignkit] ...``
for notices, ``alignkit: warning: ...`` for warnings and ``alignkit: cache: ...`` for the cache, written
around any progress bar.

Progress bars: one per process (the main one), ``TQDM_DISABLE`` honoured, other libraries' bars quiet. tqdm
reads ``TQDM_*`` variables once, when it is imported, and only as defaults that an explicit ``disable=``
overrides; :func:`bar` reads ``TQDM_DISABLE`` when the bar is made instead, so setting it at any time turns
alignkit's bars off. ``ALIGNKIT_THIRD_PARTY_BARS=1`` lets other libraries' bars (the Hub client's downloads,
datasets' maps, transformers' weight loading and GGUF dequantization) print."""

import contextlib
import logging
import os
import sys
from functools import partial
from typing import Iterator

from tqdm.auto import tqdm

LOGGER = "alignkit"


def get_logger(name: str = "") -> logging.Logger:
    """``alignkit`` or one of its children (``alignkit.cache``)."""
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


class CliFormatter(logging.Formatter):
    """The CLI's one-line prefixes; ``extra={"notice": True}`` prints a warning as a notice."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == f"{LOGGER}.cache":
            return f"alignkit: cache: {message}"
        if record.levelno >= logging.WARNING and not getattr(record, "notice", False):
            return f"alignkit: warning: {message}"
        return f"[alignkit] {message}"


class CliHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, through ``tqdm.write`` so bars stay whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


def install_cli_handler(level: int = logging.INFO) -> logging.Handler:
    """Print alignkit's records in the CLI's format (once, however often it is called); returns
    the handler."""
    logger = get_logger()
    for handler in logger.handlers:
        if isinstance(handler, CliHandler):
            return handler
    handler = CliHandler()
    handler.setFormatter(CliFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


# progress bars

OFF = {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in OFF


def bars_disabled() -> bool:
    """True when ``TQDM_DISABLE`` is set to anything but an empty/false value."""
    return _flag("TQDM_DISABLE")


def bar(*args, main: bool = True, **kwargs) -> tqdm:
    """A tqdm bar shown only on the main process (``main``) and only while ``TQDM_DISABLE`` is unset."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, disable=kwargs.pop("disable", False) or not main or bars_disabled(), **kwargs)


def third_party_bars() -> bool:
    """Whether the user asked for other libraries' bars (``ALIGNKIT_THIRD_PARTY_BARS=1``)."""
    return _flag("ALIGNKIT_THIRD_PARTY_BARS") and not bars_disabled()


def quiet_third_party() -> None:
    """Turn off the Hub client's, datasets' and transformers' own bars unless the user asked for them: the
    variables they read when imported (a value the user set is kept), and the switches of those already
    imported (an in-process CLI call)."""
    if third_party_bars():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow the Hub's
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_module_bars(module) -> Iterator[None]:
    """Within the block, ``module``'s own ``tqdm`` (e.g. transformers' GGUF dequantization, which passes no
    ``disable=``) makes disabled bars, unless the user asked for third-party bars."""
    original = getattr(module, "tqdm", None)
    if original is None or third_party_bars():
        yield
        return
    module.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original
