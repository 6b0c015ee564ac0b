"""Progress bars: one per process (the main one), ``TQDM_DISABLE`` honoured, other libraries' bars quiet.

tqdm reads ``TQDM_*`` variables once, when it is imported, and only as defaults that an explicit
``disable=`` overrides; :func:`bar` reads ``TQDM_DISABLE`` when the bar is made instead, so setting it at
any time turns alignkit's bars off. ``ALIGNKIT_THIRD_PARTY_BARS=1`` lets other libraries' bars (the Hub
client's downloads, datasets' maps, transformers' weight loading and GGUF dequantization) print."""
import contextlib
import os
import sys
from functools import partial
from typing import Iterator

from tqdm.auto import tqdm

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
