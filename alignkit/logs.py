"""alignkit's notices and warnings go through ``logging.getLogger("alignkit")`` and its children.

A library user silences or redirects them like any other library's (``logging.getLogger("alignkit")
.setLevel(logging.ERROR)``, or a handler of their own); without any configuration Python prints the
warnings bare on stderr. The CLI and the compare workers call :func:`install_cli_handler`, which prints
them as the CLI always has: ``[alignkit] ...`` for notices, ``alignkit: warning: ...`` for warnings and
``alignkit: cache: ...`` for the cache, written around any progress bar."""
import logging
import sys

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
    """Print alignkit's records in the CLI's format (once, however often it is called); returns the handler."""
    logger = get_logger()
    for handler in logger.handlers:
        if isinstance(handler, CliHandler):
            return handler
    handler = CliHandler()
    handler.setFormatter(CliFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def remove_cli_handler() -> None:
    """Undo :func:`install_cli_handler` (tests; an application embedding the CLI)."""
    logger = get_logger()
    for handler in [h for h in logger.handlers if isinstance(h, CliHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
