"""Phase 2 of a comparison, one entry: ``python -m alignkit.compare.worker SPEC.json`` trains, resumes or
re-evaluates one run directory from the entry's resolved recipe and the cache path alone (its shared stages
are in the cache already, :mod:`alignkit.compare.shared_stages`). The local-process and Ray executors start
it; a sequential
comparison calls :func:`run_job` in its own process. Exit status 0 done, 2 one-line error, else a crash."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from alignkit.config import to_dict
from alignkit.console import install_cli_handler, quiet_third_party
from alignkit.errors import AlignkitError
from alignkit.recipe import Recipe, recipe_from_data
from alignkit.run.pipeline import run_recipe
from alignkit.run.reevaluate import adopt_recipe, reevaluate
from alignkit.runfolder import ComparisonEntry
from alignkit.runlog import jsonable
from alignkit.runtime import Runtime
from alignkit.threads import configure_threads, launched_rank


def job_spec(label: str, state: str, recipe: Recipe, run_dir: Path, cache_dir: Path | None,
             entry: ComparisonEntry, plugins: list[str]) -> dict:
    """What a worker needs, as JSON: the resolved recipe, the run folder, the cache, what to do, the plugins
    to load (absolute paths, or module names), and the folder relative paths are read from (its cwd)."""
    return {"label": label, "state": state, "recipe": jsonable(to_dict(recipe)), "run_dir": str(run_dir),
            "cache_dir": str(cache_dir) if cache_dir else None, "entry": jsonable(entry.to_dict()),
            "plugins": list(plugins), "cwd": str(Path.cwd())}


def recipe_of(spec: dict) -> Recipe:
    """The entry's recipe rebuilt from its resolved form (method sections back at the top level)."""
    resolved = spec["recipe"]
    raw = {k: v for k, v in resolved.items() if k != "methods"}
    raw.update(resolved.get("methods", {}))
    return recipe_from_data(raw, f"compare entry {spec['label']}", Path(spec["cwd"]), spec.get("plugins", ()))


def check_round_trip(spec: dict, recipe: Recipe) -> None:
    """Refuse, before anything runs, an entry whose recipe a worker would not rebuild exactly."""
    if jsonable(to_dict(recipe_of(spec))) != jsonable(to_dict(recipe)):
        raise AlignkitError(f"compare: entry {spec['label']}: its recipe does not survive being written for "
                            "a worker process; run this comparison without --jobs/--executor")


def run_job(spec: dict, recipe: Recipe | None = None, runtime: Runtime | None = None) -> None:
    """Do what ``spec`` says with its run folder: train (replacing a finished run only once the new one
    succeeded), resume from the last checkpoint, re-evaluate, or adopt a current run's recipe."""
    recipe = recipe or recipe_of(spec)
    run_dir, state, entry = Path(spec["run_dir"]), spec["state"], ComparisonEntry.from_dict(spec["entry"])
    cache_dir = Path(spec["cache_dir"]) if spec.get("cache_dir") else None
    if state in ("train", "resume"):
        run_recipe(recipe, run_dir, overwrite=state == "train", cache_dir=cache_dir, entry=entry,
                   runtime=runtime)
    elif state == "evaluate":
        reevaluate(run_dir, recipe, cache_dir, runtime, group=entry.comparison)
    else:
        adopt_recipe(run_dir, recipe, runtime)


def watch_parent(every_s: float = 1.0) -> None:
    """Exit when the process that started this one dies (it is then adopted by another): a worker never goes
    on as an orphan after its ``alignkit compare`` was killed. Its run folder is left ``running`` for a dead
    pid, which the next compare resumes."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="alignkit-parent-watch").start()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m alignkit.compare.worker SPEC.json", file=sys.stderr)
        return 2
    watch_parent()
    quiet_third_party()
    install_cli_handler()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    spec = json.loads(Path(argv[0]).read_text())
    try:
        configure_threads(spec.get("threads"))  # the entry's recorded thread count, whatever the executor
        run_job(spec)
    except AlignkitError as exc:
        if launched_rank() == 0:  # on a line of its own, below any progress bar still drawn
            tqdm.write(f"alignkit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
