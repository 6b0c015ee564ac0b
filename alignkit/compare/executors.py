"""Where a comparison's entries run once its shared stages exist (phase 2): N worker processes on this
machine (``--jobs N``, each with its own GPU(s) or its share of the CPU threads), or one Ray task per entry
(``--executor ray``). Each entry is ``python -m alignkit.compare.worker SPEC.json``
(:mod:`alignkit.compare.worker`), its
output in ``OUT/logs/<label>.log``. A failed entry is retried once (resuming its checkpoint), then reported
by name; the others go on. :func:`run_jobs` is the one dispatch every caller uses (a comparison, each
``--until-converged`` round): sequentially in this process, or on the executor. Every entry runs with the
command's thread count (``--threads``, recorded in its job spec and manifest) whatever the executor, so
sequential, ``--jobs N`` and Ray runs of an entry compute in one float order and give the same numbers."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from alignkit.cache import default_cache_dir
from alignkit.compare.ray_entry import UNSEEN, exit_with_parent, last_error, run_entry, worker_command
from alignkit.compare.worker import check_round_trip, run_job
from alignkit.console import get_logger
from alignkit.errors import AlignkitError
from alignkit.runlog import write_json

LOG = get_logger()

EXECUTORS = ("local", "ray")
JOBS_FOLDER, LOGS_FOLDER = ".alignkit-jobs", "logs"
RAY_INSTALL = "pip install 'alignkit[ray]'"


@dataclass
class ExecutorSettings:
    """How phase 2 runs: ``local`` with ``jobs`` processes at once, or ``ray`` (``ray_address``: a running
    cluster, else a local one); ``gpus_per_entry``: None means one GPU each when there are GPUs, else none."""

    kind: str = "local"
    jobs: int = 1
    gpus_per_entry: int | None = None
    ray_address: str | None = None

    @property
    def parallel(self) -> bool:
        return self.kind != "local" or self.jobs > 1

    def check(self) -> None:
        if self.kind not in EXECUTORS:
            raise AlignkitError(f"--executor {self.kind}: expected one of {', '.join(EXECUTORS)}")
        if self.jobs < 1:
            raise AlignkitError(f"--jobs {self.jobs}: expected 1 or more")
        if self.gpus_per_entry is not None and self.gpus_per_entry < 0:
            raise AlignkitError(f"--gpus-per-entry {self.gpus_per_entry}: expected 0 or more")
        if self.ray_address and self.kind != "ray":
            raise AlignkitError("--ray-address is for --executor ray")

    def preflight(self, threads: int) -> None:
        """Refuse, before anything is built or written, what phase 2 could not start: bad options, more GPUs
        than are visible, Ray not installed."""
        self.check()
        if self.kind == "local" and (self.jobs > 1 or self.gpus_per_entry):  # GPUs asked for must be here
            local_slots(self.jobs, self.gpus_per_entry, threads)
        if self.kind == "ray":
            _import_ray()


@dataclass
class Job:
    """One entry for a worker: its spec (:func:`alignkit.compare.worker.job_spec`), what a retry does
    (``resume`` a fresh run's checkpoint; a replacement is built aside, so it is trained again) and its recipe
    as built here (the sequential path runs it as is; a worker rebuilds it from the spec)."""

    label: str
    spec: dict
    retry_state: str
    attempt: int = 1
    recipe: Any = None


Done = Callable[[str, "str | None"], None]  # (label, None when it succeeded, else why it failed)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU torch sees."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def local_slots(jobs: int, gpus_per_entry: int | None, threads: int) -> list[tuple[dict[str, str], int]]:
    """One (environment, GPU count) per concurrent worker: disjoint GPUs, and ``threads`` each (every entry's
    thread count, not a share of it: the numbers must not depend on how many run at once)."""
    gpus = visible_gpus()
    per = (1 if gpus else 0) if gpus_per_entry is None else gpus_per_entry
    if per and jobs * per > len(gpus):
        raise AlignkitError(f"--jobs {jobs} with --gpus-per-entry {per} needs {jobs * per} GPU(s); "
                            f"{len(gpus)} visible ({','.join(gpus) or 'none'}); lower --jobs, or "
                            "--gpus-per-entry 0 for CPU")
    return [({"ALIGNKIT_THREADS": str(threads),
              "CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per:(i + 1) * per])}, per) for i in range(jobs)]


def write_spec(job: Job, out: Path) -> Path:
    """The job's spec as ``OUT/.alignkit-jobs/<label>.json`` (in the comparison folder: every node
    sees it)."""
    path = (out / JOBS_FOLDER / f"{job.label}.json").resolve()
    write_json(path, job.spec)
    return path


def _retry(job: Job, reason: str, queue: deque, failures: dict[str, str], done: Done) -> None:
    """Queue a failed entry once more (first in line), or give it up and report it."""
    if job.attempt == 1:
        LOG.info("compare: %s failed (%s); retrying it once", job.label, reason)
        job.attempt, job.spec = 2, {**job.spec, "state": job.retry_state}
        queue.appendleft(job)
        return
    failures[job.label] = reason
    LOG.info("compare: %s failed again (%s); the others go on", job.label, reason)
    done(job.label, reason)


def run_local(jobs: list[Job], settings: ExecutorSettings, out: Path, threads: int,
              done: Done) -> dict[str, str]:
    """Run the jobs ``settings.jobs`` at a time as worker processes; returns {label: why} of those
    that failed."""
    slots = local_slots(settings.jobs, settings.gpus_per_entry, threads)
    queue, failures = deque(jobs), {}
    running: dict[int, tuple[Job, subprocess.Popen, Path]] = {}
    try:
        while queue or running:
            for slot in [s for s in range(len(slots)) if s not in running]:
                if not queue:
                    break
                job = queue.popleft()
                spec = write_spec(job, out)
                log = out / LOGS_FOLDER / f"{job.label}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                env, gpus = slots[slot]
                with open(log, "ab") as handle:
                    process = subprocess.Popen([*worker_command(gpus, 29500 + slot), str(spec)],
                                               stdout=handle,
                                               stderr=subprocess.STDOUT, env={**os.environ, **env},
                                               preexec_fn=exit_with_parent())
                running[slot] = (job, process, log)
            time.sleep(0.2)
            for slot, (job, process, log) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                if process.returncode == 0:
                    done(job.label, None)
                else:
                    _retry(job, last_error(str(log), process.returncode), queue, failures, done)
    finally:
        for _, process, _ in running.values():  # interrupted: stop the workers this command started
            process.terminate()
        for _, process, _ in running.values():
            process.wait()
    return failures


def _import_ray():
    try:
        import ray
    except ImportError:
        raise AlignkitError(f"--executor ray: the ray package is not installed; {RAY_INSTALL}") from None
    return ray


def run_ray(jobs: list[Job], settings: ExecutorSettings, out: Path, cache: Path, threads: int,
            done: Done) -> dict[str, str]:
    """One Ray task per entry, asking for its CPUs (its thread count) and GPUs; a node that cannot see the
    comparison folder or the cache stops the comparison with one line."""
    ray = _import_ray()
    # a cluster this command connected to (or started) is left again at the end
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=settings.ray_address, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise AlignkitError(f"--executor ray: cannot reach the Ray cluster "
                                f"{settings.ray_address or '(local)'}: {str(exc).splitlines()[0]}") from None
    gpus = settings.gpus_per_entry
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    cpus = threads
    token = secrets.token_hex(8)
    markers = []
    for folder in (out / JOBS_FOLDER, cache):
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f".alignkit-ray-{token}"
        marker.write_text(token)
        markers.append((str(marker.resolve()), token))
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_entry)
    env = {"ALIGNKIT_THREADS": str(cpus)}
    queue, failures, pending = deque(jobs), {}, {}
    try:
        while queue or pending:
            while queue:
                job = queue.popleft()
                spec = write_spec(job, out)
                log = (out / LOGS_FOLDER / f"{job.label}.log").resolve()
                ref = task.remote(str(spec), markers, {**env, "ALIGNKIT_JOB_CWD": job.spec["cwd"]},
                                  str(log), gpus)
                pending[ref] = job
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                status, reason = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                status, reason = 1, f"Ray task failed: {str(exc).splitlines()[0]}"
            if status == UNSEEN:
                raise AlignkitError(f"--executor ray: {reason}")
            if status == 0:
                done(job.label, None)
            else:
                _retry(job, reason, queue, failures, done)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        for path, _ in markers:
            Path(path).unlink(missing_ok=True)
        if started:
            ray.shutdown()
    return failures


def run_entries(jobs: list[Job], settings: ExecutorSettings, out: Path, cache: Path, threads: int,
                done: Done) -> dict[str, str]:
    """Phase 2 with ``settings``' executor; returns {label: why} of the entries that failed twice."""
    if not jobs:
        return {}
    if settings.kind == "ray":
        return run_ray(jobs, settings, out, cache, threads, done)
    return run_local(jobs, settings, out, threads, done)


def run_jobs(jobs: list[Job], settings: ExecutorSettings, out: Path, cache_dir: Path | None, runtime, bar,
             what: str = "compare") -> dict[str, str]:
    """Phase 2's one dispatch: every job's spec run by :func:`~alignkit.compare.worker.run_job`, one after
    another in this process, or on ``settings``' executor (a ``current`` run is only adopted, here); ``bar``
    counts the jobs, its description led by ``what``. Every job runs with this process's thread count,
    recorded in its spec. Returns {label: why} of the jobs that failed twice."""
    threads = torch.get_num_threads()
    for job in jobs:
        job.spec = {**job.spec, "threads": threads}
    if not settings.parallel:
        for number, job in enumerate(jobs, start=1):
            bar.set_description(f"{what} [{number}/{len(jobs)}] {job.label} ({job.spec['state']})")
            run_job(job.spec, job.recipe, runtime)
            bar.update(1)
        return {}
    cache = Path(cache_dir or default_cache_dir()).resolve()  # a worker's cwd may differ: absolute paths
    remote = []
    for job in jobs:
        job.spec = {**job.spec, "run_dir": str(Path(job.spec["run_dir"]).resolve()), "cache_dir": str(cache)}
        if job.spec["state"] == "current":
            run_job(job.spec, job.recipe, runtime)
            bar.update(1)
            continue
        check_round_trip(job.spec, job.recipe)
        remote.append(job)

    def done(label: str, error: str | None) -> None:
        bar.set_description(f"{what} {label} {'failed' if error else 'done'}")
        bar.update(1)

    return run_entries(remote, settings, out, cache, threads, done)
