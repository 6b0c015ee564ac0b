"""Who is running a comparison folder: ``OUT/.alignkit-writer.json`` names the ``alignkit compare`` process
writing it (pid, host, a heartbeat every minute), as a run's manifest names the process writing the run. A
second compare into a folder whose writer is alive is refused in one line before it plans anything; a writer
that died (``kill -9``, a lost node) leaves the file behind, and it is taken for dead as a run's writer is
(:func:`alignkit.runfolder.live_writer`: its pid gone on this host, its heartbeat stale on another)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.runfolder import live_writer

WRITER_FILE = ".alignkit-writer.json"
BEAT_EVERY_S = 60.0


class ComparisonWriter:
    """This process's claim on a comparison folder: :meth:`check` refuses a live other writer (changing
    nothing), :meth:`claim` writes the file (once the folder is alignkit's) and keeps its heartbeat,
    :meth:`release` removes it. One writer object is passed down to nested steps (a comparison inside
    ``--until-converged``), so the folder stays claimed from the first check to the last report."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / WRITER_FILE
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                "heartbeat_at": time.time()}

    def holder(self) -> str | None:
        """Who else is writing the folder (``pid N on HOST``), or None."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return live_writer(data) if isinstance(data, dict) else None

    def check(self) -> None:
        """One line when another live ``alignkit compare`` is writing this folder."""
        holder = self.holder()
        if holder:
            raise AlignkitError(f"{self.path.parent}: a comparison is still being run there ({holder}); "
                                "wait for it to finish or stop it, or choose another --out")

    def claim(self) -> None:
        """Write the file, atomically refusing one a live writer wrote meanwhile; then beat its heartbeat."""
        if self._stop is not None:
            return
        for _ in range(3):
            self.check()
            spare = self.path.with_name(f"{WRITER_FILE}.{os.getpid()}")
            spare.write_text(json.dumps(self._record()) + "\n")
            try:
                os.link(spare, self.path)  # fails when the file exists: never two claims at once
                break
            except FileExistsError:
                if not self.holder():  # left by a writer that died: replace it
                    self.path.unlink(missing_ok=True)
            finally:
                spare.unlink(missing_ok=True)
        else:
            self.check()
            raise AlignkitError(f"{self.path}: cannot be claimed; remove it if no compare runs there")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(self._stop,), daemon=True,
                                        name="alignkit-writer")
        self._thread.start()

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(BEAT_EVERY_S):
            spare = self.path.with_name(f"{WRITER_FILE}.{os.getpid()}")
            try:
                spare.write_text(json.dumps(self._record()) + "\n")
                os.replace(spare, self.path)
            except OSError:  # a heartbeat is best effort; the pid still names the writer on this host
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the file (nothing when this object never claimed the folder)."""
        if self._stop is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._stop = self._thread = None
        self.path.unlink(missing_ok=True)
