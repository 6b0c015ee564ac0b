"""``alignkit compare --until-converged``: extend every entry that has not converged, in rounds, until the
stated convergence test (:mod:`alignkit.eval.convergence`) says converged or the rounds run out.

The first round is the planned comparison, trained with ``keep_final_state`` so each run keeps its last
training state. Round r of an entry whose first budget was B steps (PPO: iterations) is a new run folder
``runs/<label>.round<r>``: a copy of the previous round's folder resumed from that state and trained to
B + r * ceil(B * round_fraction) steps, its learning-rate schedule still spanning the first B steps
(``lr_schedule_steps``) and every later step at the **peak rate, constant** (so a run that flattens in the
tail flattened at a rate that could still move it; "budget-limited" cannot be the reason). Its trajectory
keeps every checkpoint of the earlier rounds. A run reused from before (trained without its final state)
resumes from its newest kept checkpoint, or retrains from the start with the same schedule: slower, the same
steps. GRPO and RLOO (trl's loop) and Best-of-N are not extended. The report is built from each entry's last
round, and ``until_converged.json`` records every round's label and budget.

Comparison YAML: ``until_converged: {max_rounds: 3, round_fraction: 1.0}``.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.compare.comparison import run_comparison
from alignkit.compare.executors import Job, run_jobs
from alignkit.compare.plan import ComparisonPlan, PlannedRun
from alignkit.compare.worker import job_spec
from alignkit.compare.writer import ComparisonWriter
from alignkit.config import ConfigError, build, option, read_yaml, to_dict
from alignkit.console import bar as progress_bar
from alignkit.console import get_logger
from alignkit.errors import AlignkitError
from alignkit.eval.convergence import ConvergenceTest
from alignkit.recipe import recipe_from_data
from alignkit.recipes.bundled import resolve_recipe_path
from alignkit.report.build import EntriesFailed, build_report
from alignkit.report.records import read_record
from alignkit.report.verdicts import convergence_of
from alignkit.run.decision import run_decision
from alignkit.runfolder import ComparisonEntry, read_run
from alignkit.runlog import atomic_dir, jsonable, write_json, write_text
from alignkit.runtime import start

LOG = get_logger()

DONE = ("converged", "declining", "no training")  # a declining run only falls further


@dataclass
class UntilConverged:
    """How far ``--until-converged`` may extend an entry."""

    max_rounds: int = option(3, "rounds of extension at most (each adds round_fraction of the first budget)",
                             ge=1)
    round_fraction: float = option(1.0, "each round adds this fraction of the entry's first budget", gt=0)


def settings_from(specs, enabled: bool) -> UntilConverged | None:
    """The settings: a comparison YAML's ``until_converged`` section, or the defaults with the flag alone."""
    specs = list(specs)
    section = None
    if len(specs) == 1:
        path = resolve_recipe_path(specs[0])
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            data = read_yaml(path)
            section = data.get("until_converged") if isinstance(data, dict) else None
            if section is not None:
                return build(UntilConverged, section, where=f"{path}: until_converged")
    return UntilConverged() if enabled else None


def _budget_key(config) -> str | None:
    """The key that sets a method's length (``max_steps``; PPO: ``steps``), None when it cannot
    be extended."""
    if not hasattr(config, "keep_final_state"):
        return None
    return "max_steps" if hasattr(config, "max_steps") else "steps" if hasattr(config, "steps") else None


def not_extendable(entry: PlannedRun) -> str | None:
    """Why ``entry`` cannot be extended (no checkpoints for the convergence test to read, or a method whose
    runs are not extended), None when it can."""
    if not entry.recipe.eval.every_steps:
        return "no checkpoints to test (eval.every_steps 0)"
    if _budget_key(entry.recipe.method_config(entry.method)) is None:
        return f"{entry.method} runs are not extended"
    return None


def prepare(plan: ComparisonPlan) -> list[PlannedRun]:
    """Every extendable entry set to keep its final state; returns those entries. Refuses, in one line, a
    comparison without checkpoints to test."""
    extendable = []
    for entry in plan.entries:
        if not entry.recipe.eval.every_steps:
            raise ConfigError(f"compare --until-converged: entry {entry.label}: eval.every_steps is 0; the "
                              "convergence "
                              f"test reads checkpoints (set --set eval.every_steps=N)")
        if _budget_key(entry.recipe.method_config(entry.method)) is None:
            continue
        keep_final_state(entry)
        extendable.append(entry)
    return extendable


def keep_final_state(entry: PlannedRun) -> None:
    """The entry set to keep its last training state (not part of its identity: a finished run is reused), so
    a later round resumes from it instead of training again from the start."""
    entry.raw.setdefault(entry.method, {})["keep_final_state"] = True
    entry.recipe = recipe_from_data(entry.raw, f"compare entry {entry.label}", Path.cwd())


def first_budget(entry: PlannedRun, run_dir: Path) -> int:
    """The entry's first budget in its loop's unit: PPO's iterations, else the last step it trained."""
    config = entry.recipe.method_config(entry.method)
    if _budget_key(config) == "steps":
        return int(config.steps)
    record = read_record(run_dir)
    return int(max((p["step"] for p in record.trajectory), default=record.summary.steps or 0))


def extend(entry: PlannedRun, previous: Path, round_: int, budget: int, cfg: UntilConverged,
           plan: ComparisonPlan,
           cache_dir: Path | None) -> tuple[Path, Job | None]:
    """Round ``round_`` of ``entry`` made ready (module docstring): its folder, and the job that resumes (or
    re-evaluates) it there; None when the folder holds this round already."""
    key = _budget_key(entry.recipe.method_config(entry.method))
    data = copy.deepcopy(entry.raw)
    section = data.setdefault(entry.method, {})
    section.update({key: budget + round_ * max(1, math.ceil(budget * cfg.round_fraction)),
                    "lr_schedule_steps": budget, "keep_final_state": True})
    folder = previous.parent / f"{entry.label}.round{round_}"
    data["name"] = folder.name
    recipe = recipe_from_data(data, f"compare entry {entry.label} (round {round_})", Path.cwd())
    info = entry.entry(round=round_)
    state = run_decision(folder, recipe, cache_dir, plan.overwrite, threads=torch.get_num_threads()).state
    if state == "current":
        return folder, None
    if state == "train":
        if folder.exists() and not plan.overwrite:
            raise AlignkitError(f"compare --until-converged: {folder} holds another run; pass --overwrite to "
                                "replace it")
        copy_round(previous, folder, recipe, info)
    state = "evaluate" if state == "evaluate" else "resume"  # a copied round resumes the previous one's state
    spec = job_spec(folder.name, state, recipe, folder, cache_dir, info, plan.plugins)
    return folder, Job(folder.name, spec, state, recipe=recipe)


def copy_round(previous: Path, folder: Path, recipe, info: ComparisonEntry) -> None:
    """The previous round's folder (but its model and samples) as an interrupted run of this round's recipe,
    built aside and moved into place whole (a cut-short copy leaves no half-made round)."""
    manifest = read_run(previous).manifest
    manifest.update(recipe=jsonable(to_dict(recipe)), name=folder.name, status="interrupted",
                    compare_entry=info.to_dict(), extended_from=previous.name)
    with atomic_dir(folder) as aside:
        shutil.copytree(previous, aside, ignore=shutil.ignore_patterns("model", "samples*.jsonl"),
                        dirs_exist_ok=True)
        write_json(aside / "manifest.json", manifest)


def finish(entry: PlannedRun, previous: Path, folder: Path) -> None:
    """After a round trained: its cost carried over from the earlier rounds, and the previous round's training
    state freed (it lives on in this one) unless that round is the planned run itself."""
    carry_cost(previous, folder)
    if previous.name != entry.label:
        shutil.rmtree(previous / "checkpoints", ignore_errors=True)


SHARED_STAGES = ("train pairs", "reward model", "reference logps")


def carry_cost(previous: Path, folder: Path) -> None:
    """A resumed round measured its wall seconds from where it resumed: add the earlier rounds' (the
    previous round's training wall at that step, to its checkpoints' and to the run's ``train_wall_s``, so the
    table's train seconds are the whole run's, as its steps are), and keep the time the shared stages took
    when
    they were built, so the compute-matched view (:mod:`alignkit.report.cost`) charges the whole run."""
    old, new = (read_run(p).manifest for p in (previous, folder))
    resumed = (new.get("resumed") or [{}])[-1].get("from_step", 0)
    before = ((old.get("cost") or {}).get("training") or {}).get("wall_s") or {}
    offset = before.get(str(resumed), before.get("last") if resumed else 0.0) or 0.0
    training = new.setdefault("cost", {}).setdefault("training", {})
    walls = {k: v for k, v in before.items() if k != "last" and int(k) <= resumed}
    walls.update({k: round(v + offset, 3) for k,
                  v in (training.get("wall_s") or {}).items() if v is not None})
    training["wall_s"] = walls
    cost, earlier = new["cost"], (old.get("cost") or {}).get("train_wall_s")
    if resumed and earlier and cost.get("train_wall_s") is not None and before.get("last"):
        # the earlier rounds' training time up to where this round resumed (their share of it, by training
        # wall)
        cost["train_wall_s"] = round(cost["train_wall_s"] + earlier * min(1.0, offset / before["last"]), 3)
    timings = new.setdefault("timings_s", {})
    for stage in SHARED_STAGES:
        if stage in (old.get("timings_s") or {}):
            timings[stage] = max(timings.get(stage, 0.0), old["timings_s"][stage])
    write_json(folder / "manifest.json", new)


def run_round(plan: ComparisonPlan, todo: list[tuple[PlannedRun, int]], current: dict[str, Path],
              budgets: dict[str, int], cfg: UntilConverged, cache_dir: Path | None, runtime,
              what: str) -> dict[str, tuple[str, str]]:
    """One round of extension (:func:`extend`) for each (entry, round number) of ``todo``, dispatched as the
    comparison's runs are; ``current`` (entry label -> folder) moves to each finished round's folder.
    Returns {entry label: (round folder, why)} of those whose round failed: they stay at their last round."""
    rounds = [(entry, current[entry.label], *extend(entry, current[entry.label], round_, budgets[entry.label],
                                                     cfg, plan, cache_dir)) for entry, round_ in todo]
    jobs = [job for *_, job in rounds if job is not None]
    bar = progress_bar(total=len(jobs), desc=what, unit="run", position=0, main=runtime.is_main)
    try:
        failed = run_jobs(jobs, plan.executor, plan.out, cache_dir, runtime, bar, what=what)
    finally:
        bar.close()
    failures = {}
    for entry, previous, folder, job in rounds:
        if job is not None and job.label in failed:
            failures[entry.label] = (job.label, failed[job.label])
            continue
        if job is not None and job.spec["state"] == "resume":
            finish(entry, previous, folder)
        current[entry.label] = folder
    return failures


def run_until_converged(plan: ComparisonPlan, cfg: UntilConverged, *, cache_dir: Path | None = None) -> dict:
    """The comparison, then rounds of extension (module docstring), each round's runs dispatched as the
    comparison's are (in this process, ``--jobs N`` worker processes, Ray tasks); returns the report's index.
    A round that fails twice is named, as a failed comparison entry is; its entry stays at its last round.
    The folder stays claimed for this process (:mod:`alignkit.compare.writer`) from the first round to the
    last."""
    writer = ComparisonWriter(plan.out)
    try:
        return _rounds(plan, cfg, cache_dir, writer)
    finally:
        writer.release()


def _rounds(plan: ComparisonPlan, cfg: UntilConverged, cache_dir: Path | None,
            writer: ComparisonWriter) -> dict:
    extendable = prepare(plan)
    run_comparison(plan, cache_dir=cache_dir, writer=writer)
    runs_dir = plan.out / "runs"
    current = {e.label: runs_dir / e.label for e in plan.entries}
    budgets = {e.label: first_budget(e, current[e.label]) for e in extendable}
    looks = ConvergenceTest(looks=cfg.max_rounds + 1)  # every round looks again: Bonferroni over the looks
    history = {e.label: [_state(current[e.label], 0, looks)] for e in plan.entries}
    runtime = start(plan.entries[0].recipe.device, plan.entries[0].recipe.precision)
    failures: dict[str, str] = {}  # {round's folder: why}; its entry stays at its last finished round
    stopped: set[str] = set()
    for round_ in range(1, cfg.max_rounds + 1):
        pending = [e for e in extendable
                   if history[e.label][-1]["convergence"] not in DONE and e.label not in stopped]
        if not pending:
            break
        for entry in pending:
            LOG.info(f"until converged: round {round_}: extending {entry.label} "
                     f"({history[entry.label][-1]['convergence']})")
        failed = run_round(plan, [(e, round_) for e in pending], current, budgets, cfg, cache_dir, runtime,
                           f"round {round_}")
        for label, (folder, why) in failed.items():
            failures[folder] = why
            stopped.add(label)
        for entry in (e for e in pending if e.label not in failed):
            history[entry.label].append(_state(current[entry.label], round_, looks))
    error = None
    try:
        index = build_report([current[e.label] for e in plan.entries], plan.out, name=plan.name,
                             argv=plan.argv, failed=failures, margin=plan.margin)
    except EntriesFailed as exc:  # a failed round: the rest is written first, then the one line naming it
        index, error = None, exc
    write_json(plan.out / "until_converged.json", {"settings": to_dict(cfg), "first_budget": budgets,
                                                   "rounds": history, "rule": __doc__.split("\n\n")[1]})
    report = plan.out / "report.md"
    write_text(report, report.read_text() + render(history, budgets, cfg))
    if error:
        raise error
    return index


def _state(run_dir: Path, round_: int, test: ConvergenceTest) -> dict:
    record = read_record(run_dir)
    found = convergence_of(record, test)
    return {"round": round_, "run": run_dir.name, "steps": record.summary.steps,
            "last_step": max((p["step"] for p in record.trajectory), default=None),
            "convergence": found["label"], "rise": found.get("rise"), "gold": record.summary.gold_reward_mean}


def render(history: dict, budgets: dict, cfg: UntilConverged) -> str:
    """The report's section: each entry's rounds, with its label and gold reward after each."""
    lines = ["", "## Until converged", "",
             f"Entries not converged were extended in rounds of {cfg.round_fraction:g} x their first budget "
             "(at "
             f"most {cfg.max_rounds}), resumed from their last training state, the learning-rate schedule "
             "kept over "
             "the first budget and every later step at the peak rate (constant). GRPO, RLOO and Best-of-N "
             "are not "
             f"extended. `until_converged.json` holds every round.", "",
             "| entry | first budget | rounds: last step, convergence, gold |", "|---|---|---|"]
    for label, states in history.items():
        rounds = "; ".join(f"{s['last_step']}: {s['convergence']}, {s['gold']:.3f}" for s in states)
        lines.append(f"| {label} | {budgets.get(label, '–')} | {rounds} |")
    return "\n".join(lines) + "\n"
