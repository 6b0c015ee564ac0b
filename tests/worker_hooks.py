"""Test-only plugin (loaded with ``--plugins``): a comparison's worker process dies with ``os._exit`` right
after
it checkpoints step STEP or later of the entry named by ``$ALIGNKIT_TEST_KILL=LABEL:STEP``, as a killed or
preempted worker would: no cleanup, its manifest left ``running``."""

from __future__ import annotations

import os
from pathlib import Path

from alignkit.checkpoint import Checkpointer

_save = Checkpointer.save


def _save_then_die(self, step, state, extra=None):
    path = _save(self, step, state, extra)
    label, _, at = os.environ.get("ALIGNKIT_TEST_KILL", "").partition(":")
    if label and Path(self.folder).parent.name == label and step >= int(at):
        os._exit(9)
    return path


if Checkpointer.save is not _save_then_die and getattr(Checkpointer.save, "__name__", "") != "_save_then_die":
    Checkpointer.save = _save_then_die
