"""Run a planned comparison: phase 1 builds every shared stage once, phase 2 trains, resumes, re-evaluates or
reuses each entry (here, or on the executor: local worker processes, Ray), then the report is written from the
run folders."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alignkit.cache import default_cache_dir
from alignkit.config import to_dict
from alignkit.errors import AlignkitError
from alignkit.compare.executors import Job, run_entries
from alignkit.trackers import report_comparison
from alignkit.report.build import build_report
from alignkit.run.decision import RunDecision, refuse_replacing, run_decision
from alignkit.runfolder import claim_comparison_dir
from alignkit.runtime import start
from alignkit.compare.shared_stages import SHARED_FOLDER, build_shared_stages
from alignkit.compare.worker import check_round_trip, job_spec, run_job
from alignkit.compare.plan import ComparisonPlan, PlannedRun

def run_comparison(plan: ComparisonPlan, *, cache_dir: Path | None = None) -> dict:
    """Phase 1: build every shared stage the entries need, once, into the cache. Phase 2: train (or reuse,
    or re-evaluate) every entry as a run under ``OUT/runs/``, one after another in this process or with
    ``plan.executor`` (N local processes, Ray tasks); then write the comparison's outputs from those run
    directories. One progress bar covers the whole comparison."""
    settings = plan.executor
    settings.preflight(torch.get_num_threads())
    first = plan.entries[0].recipe  # one runtime for every run (a run with other settings makes its own)
    runtime = start(first.device, first.precision)  # under accelerate launch: the main process decides and writes
    if settings.parallel and runtime.world > 1:
        raise AlignkitError("compare: --jobs/--executor start a process per entry; run alignkit compare itself, not "
                            "under accelerate launch (--gpus-per-entry K launches each entry on K GPUs)")
    runs_dir = plan.out / "runs"
    decisions = None
    if runtime.is_main:
        try:
            decisions = [run_decision(runs_dir / e.label, e.recipe, cache_dir, plan.overwrite) for e in plan.entries]
            if not plan.overwrite:
                refuse_replacing(runs_dir, plan.entries, decisions)
            claim_comparison_dir(plan.out)
        except AlignkitError as exc:
            decisions = exc
    decisions = runtime.broadcast(decisions)
    if isinstance(decisions, AlignkitError):
        raise decisions
    states = [d.state for d in decisions]
    total = len(plan.entries)
    if runtime.is_main:
        tqdm.write(f"[alignkit] compare: {total} run(s): {states.count('train')} to train, "
                   f"{states.count('resume')} to resume, {states.count('evaluate')} to re-evaluate, "
                   f"{states.count('current')} reused", file=sys.stderr)
    todo = [e.recipe for e, state in zip(plan.entries, states) if state != "current"]
    if todo:  # phase 1
        build_shared_stages(todo, cache_dir, runtime, plan.out / SHARED_FOLDER)
    bar = tqdm(total=total, desc="compare", unit="run", dynamic_ncols=True, position=0, disable=not runtime.is_main)
    failures: dict[str, str] = {}
    if settings.parallel:
        failures = _run_parallel(plan, decisions, cache_dir, runtime, bar)
    else:
        for number, (entry, state) in enumerate(zip(plan.entries, states), start=1):
            bar.set_description(f"compare [{number}/{total}] {entry.label} ({state})")
            # an interrupted run continues from its last checkpoint; a finished one is only replaced with
            # --overwrite (refused above otherwise), and only once its new run succeeded
            run_job(_spec(plan, entry, state, cache_dir), entry.recipe, runtime)
            bar.update(1)
    bar.close()
    runtime.barrier()
    if not runtime.is_main:
        return {}
    done = [e for e in plan.entries if e.label not in failures]
    report = build_report([runs_dir / e.label for e in done], plan.out, name=plan.name, argv=plan.argv,
                          states=dict(zip((e.label for e in plan.entries), states)), failed=failures)
    report_comparison(first.report_to, plan.out, plan.name, to_dict(first))
    return report


def _spec(plan: ComparisonPlan, entry: PlannedRun, state: str, cache_dir: Path | None) -> dict:
    return job_spec(entry.label, state, entry.recipe, plan.out / "runs" / entry.label, cache_dir,
                    entry.entry(comparison=plan.name), plan.plugins)


def _run_parallel(plan: ComparisonPlan, decisions: list[RunDecision], cache_dir: Path | None, runtime,
                  bar) -> dict[str, str]:
    """Phase 2 on the executor: current runs are adopted here, the others go to worker processes or Ray
    tasks; returns {label: why} of the entries that failed twice."""
    cache = Path(cache_dir or default_cache_dir()).resolve()
    jobs = []
    for entry, decision in zip(plan.entries, decisions):
        spec = _spec(plan, entry, decision.state, cache)
        spec["run_dir"] = str(Path(spec["run_dir"]).resolve())
        if decision.state == "current":
            run_job(spec, entry.recipe, runtime)
            bar.update(1)
            continue
        check_round_trip(spec, entry.recipe)
        jobs.append(Job(entry.label, spec, "resume" if decision.state == "resume" or not decision.finished
                        else decision.state))

    def done(label: str, error: str | None) -> None:
        bar.set_description(f"compare {label} {'failed' if error else 'done'}")
        bar.update(1)

    return run_entries(jobs, plan.executor, plan.out, cache, torch.get_num_threads(), done)
