"""Run a planned comparison: phase 1 builds every shared stage once, phase 2 trains, resumes, re-evaluates or
reuses each entry (here, or on the executor: local worker processes, Ray), then the report is written from the
run folders."""

from __future__ import annotations

from pathlib import Path

import torch

from alignkit.compare.executors import Job, run_jobs
from alignkit.compare.plan import ComparisonPlan, PlannedRun
from alignkit.compare.shared_stages import SHARED_FOLDER, build_shared_stages
from alignkit.compare.worker import job_spec
from alignkit.compare.writer import ComparisonWriter
from alignkit.config import to_dict
from alignkit.console import bar as progress_bar
from alignkit.console import get_logger
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import ALPHA
from alignkit.report.build import build_report
from alignkit.run.decision import refuse_replacing, run_decision
from alignkit.runfolder import claim_comparison_dir
from alignkit.runtime import start
from alignkit.trackers import report_comparison

LOG = get_logger()


def run_comparison(plan: ComparisonPlan, *, cache_dir: Path | None = None, alpha: float = ALPHA,
                   writer: ComparisonWriter | None = None, folders: dict[str, Path] | None = None) -> dict:
    """Phase 1: build every shared stage the entries need, once, into the cache. Phase 2: train (or reuse,
    or re-evaluate) every entry as a run under ``OUT/runs/``, one after another in this process or with
    ``plan.executor`` (N local processes, Ray tasks); then write the comparison's outputs from those run
    directories (its verdicts at level ``alpha``; an entry in ``folders`` is read from its folder there, an
    extended round). One progress bar covers the whole comparison. ``OUT`` is
    claimed for this process (refused while another compare runs there) until the end, or until ``writer``'s
    owner releases it."""
    own = writer is None
    writer = writer or ComparisonWriter(plan.out)
    try:
        return _run(plan, cache_dir, writer, alpha, folders or {})
    finally:
        if own:
            writer.release()


def _run(plan: ComparisonPlan, cache_dir: Path | None, writer: ComparisonWriter, alpha: float,
         folders: dict[str, Path]) -> dict:
    settings = plan.executor
    settings.preflight(torch.get_num_threads())
    first = plan.entries[0].recipe  # one runtime for every run (a run with other settings makes its own)
    # under accelerate launch: the main process decides and writes
    runtime = start(first.device, first.precision)
    if settings.parallel and runtime.world > 1:
        raise AlignkitError("compare: --jobs/--executor start a process per entry; run alignkit compare "
                            "itself, not under accelerate launch (--gpus-per-entry K launches each entry on "
                            "K GPUs)")
    runs_dir = plan.out / "runs"
    decisions = None
    if runtime.is_main:
        try:
            writer.check()  # before anything is read or written
            decisions = [run_decision(runs_dir / e.label, e.recipe, cache_dir, plan.overwrite,
                                      threads=torch.get_num_threads()) for e in plan.entries]
            if not plan.overwrite:
                refuse_replacing(runs_dir, plan.entries, decisions)
            claim_comparison_dir(plan.out)
            writer.claim()
        except AlignkitError as exc:
            decisions = exc
    decisions = runtime.broadcast(decisions)
    if isinstance(decisions, AlignkitError):
        raise decisions
    states = [d.state for d in decisions]
    total = len(plan.entries)
    if runtime.is_main:
        LOG.info(f"compare: {total} run(s): {states.count('train')} to train, "
                 f"{states.count('resume')} to resume, {states.count('evaluate')} to re-evaluate, "
                 f"{states.count('current')} reused")
    todo = [e.recipe for e, state in zip(plan.entries, states) if state != "current"]
    if todo:  # phase 1
        build_shared_stages(todo, cache_dir, runtime, plan.out / SHARED_FOLDER)
    bar = progress_bar(total=total, desc="compare", unit="run", position=0, main=runtime.is_main)
    # an interrupted run continues from its last checkpoint; a finished one is only replaced with --overwrite
    # (refused above otherwise), and only once its new run succeeded
    jobs = [Job(e.label, _spec(plan, e, d.state, cache_dir), "resume" if d.state == "resume" or not d.finished
                else d.state, recipe=e.recipe) for e, d in zip(plan.entries, decisions)]
    try:
        failures = run_jobs(jobs, settings, plan.out, cache_dir, runtime, bar)
    finally:  # an error's line starts below the bar's, never glued to it
        bar.close()
    runtime.barrier()
    if not runtime.is_main:
        return {}
    done = [e for e in plan.entries if e.label not in failures]
    paths = [folders.get(e.label, runs_dir / e.label) for e in done]
    report = build_report(paths, plan.out, name=plan.name, argv=plan.argv,
                          states=dict(zip((e.label for e in plan.entries), states)), failed=failures,
                          margin=plan.margin, alpha=alpha)
    report_comparison(first.report_to, plan.out, plan.name, to_dict(first))
    return report


def _spec(plan: ComparisonPlan, entry: PlannedRun, state: str, cache_dir: Path | None) -> dict:
    return job_spec(entry.label, state, entry.recipe, plan.out / "runs" / entry.label, cache_dir,
                    entry.entry(comparison=plan.name), plan.plugins)
