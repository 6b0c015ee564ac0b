"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class AlignkitError(Exception):
    """An error caused by the user's input (file, key, column, name), reported as one clear line."""


class ConfigError(AlignkitError):
    """A recipe or override that fails validation; the message starts with the file and dotted key."""


class UnknownNameError(AlignkitError, KeyError):
    """A registry lookup for a name nobody registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataError(AlignkitError):
    """A dataset that is missing, empty, or lacks a required column."""


def warn(message: str) -> None:
    """A warning on the ``alignkit`` logger (the CLI prints ``alignkit: warning: ...``) about input that works
    but deserves a look: pairs dropped, prompts cut, remote model code allowed. Never an error."""
    import logging

    logging.getLogger("alignkit").warning(message)
