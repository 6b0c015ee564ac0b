"""The calling convention of plugin callables, checked by inspecting signatures alone (no torch): a preference
loss is ``loss(logps, *, beta, name=default, ...)``. The registry checks it when a loss registers."""

from __future__ import annotations

import inspect
from typing import Callable


def loss_parameters(loss: Callable) -> dict[str, object]:
    """The extra keyword parameters a loss accepts (beyond ``logps`` and ``beta``), with defaults."""
    params = inspect.signature(loss).parameters
    return {name: p.default for name, p in params.items()
            if name not in ("logps", "beta") and p.kind is inspect.Parameter.KEYWORD_ONLY}


# --------------------------------------------------------------------------------------------------
# the loss contract, checked before anything trains: the signature when a loss registers, and the
# output on a tiny synthetic batch when a recipe selects it (so a plugin's bug is one line, not a traceback
# twenty minutes into a run)

_P = inspect.Parameter


def loss_signature_problem(loss: Callable) -> str | None:
    """Why ``loss`` does not have the shape ``loss(logps, *, beta, name=default, ...)``, or None."""
    try:
        params = list(inspect.signature(loss).parameters.values())
    except (TypeError, ValueError):
        return "is not a function with a signature"
    usage = "(write def loss(logps, *, beta, my_param=default))"
    if not params or params[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
        return f"must take logps as its first positional parameter {usage}"
    beta = next((p for p in params if p.name == "beta"), None)
    if beta is None or beta.kind is not _P.KEYWORD_ONLY:
        return f"must take beta as a keyword-only parameter {usage}"
    for p in params[1:]:
        if p.name == "beta":
            continue
        if p.kind is not _P.KEYWORD_ONLY or p.default is _P.empty:
            return f"parameter {p.name!r} must be keyword-only with a default {usage}"
    return None
