"""Turn a validated recipe into a finished run directory, and re-evaluate a finished one.

Layout (the contract users script against): ``manifest.json`` (resolved recipe, versions, seeds, timings,
peak memory, the cache keys of the shared stages it used, status), ``metrics.jsonl``, ``model/``,
``eval/summary.json`` (the primary temperature's results, every temperature under ``by_temperature``, the
training budget; the measured cost, wall time and memory, is in the manifest), ``eval/samples.jsonl``
(``eval/samples_T<t>.jsonl`` for further temperatures),
``eval/trajectory.jsonl`` (checkpoints, with ``eval.every_steps``) and ``eval/summary.png``; while training,
``checkpoints/`` (see :mod:`alignkit.checkpoint`) and the ``.alignkit-run`` marker that claims the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from alignkit import __version__
from alignkit.checkpoint import Checkpointer, nonfinite_modules, numerical_error
from alignkit.config import to_dict
from alignkit.console import get_logger
from alignkit.context import Budget, RunContext
from alignkit.data.pairs_task import completions_per_prompt
from alignkit.errors import AlignkitError
from alignkit.eval.evaluator import TRAJECTORY_KEYS, evaluate_at
from alignkit.eval.judges import is_pairwise
from alignkit.eval.summary import TEMPERATURE, EvalSummary
from alignkit.memory import PeakMemory, process_peak_mb
from alignkit.models.policy import Policy
from alignkit.recipe import Recipe, default_task_problem, method_needs, self_judging
from alignkit.registry import METHODS
from alignkit.report.plots import plot_run
from alignkit.report.versions import package_versions
from alignkit.rewards.judge_check import check_judge
from alignkit.run.hub import push_run, write_card
from alignkit.run.trajectory import TrajectoryRecorder
from alignkit.runfolder import (
    RUN_MARKER,
    ComparisonEntry,
    check_run_name,
    claim_run_dir,
    folder_checksums,
    read_manifest,
)
from alignkit.runformat import RUN_FORMAT
from alignkit.runlog import (
    MetricsLog,
    WriteError,
    append_jsonl,
    atomic_dir,
    read_jsonl,
    write_json,
    write_jsonl,
)
from alignkit.runtime import Runtime, seed_everything, start
from alignkit.stages.builder import StageBuilder
from alignkit.trackers import Trackers

LOG = get_logger()

def _replace_run(recipe: Recipe, run_dir: Path, cache_dir: Path | None, entry: ComparisonEntry | None,
                 runtime: Runtime) -> EvalSummary:
    """``--overwrite``: build the new run in a sibling folder and swap it in only when it succeeded, so a
    failed run leaves the old one as it was."""
    fresh = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.alignkit-new-", dir=run_dir.parent))
    try:
        (fresh / RUN_MARKER).write_text(json.dumps({"created_by": f"alignkit {__version__}"}) + "\n")
        try:
            summary = Run(recipe, fresh, runtime, cache_dir, entry).execute()
        except WriteError as exc:  # name the file as the run will have it, not its temporary folder
            raise WriteError(str(exc).replace(str(fresh), str(run_dir))) from None
        old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.alignkit-old-", dir=run_dir.parent))
        os.replace(run_dir, old / "run")
        os.replace(fresh, run_dir)
        shutil.rmtree(old, ignore_errors=True)
        return summary
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


class Run:
    """One recipe executed into one run directory."""

    def __init__(self, recipe: Recipe, run_dir: Path, runtime: Runtime, cache_dir: Path | None = None,
                 entry: ComparisonEntry | None = None, checkpoints: Path | None = None):
        """``checkpoints``: read the checkpoints there and write none (a data-parallel process other than the
        main one, which runs in a scratch folder and resumes from the main process's checkpoints)."""
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.timings: dict[str, float] = {}
        self.stage_memory: dict[str, dict[str, float]] = {}
        log = MetricsLog(self.run_dir / "metrics.jsonl", sink=Trackers(
            recipe.report_to if runtime.is_main else (), self.run_dir, recipe.name,
            entry.comparison if entry and entry.comparison else recipe.name, to_dict(recipe), recipe.method))
        self.checkpointer = Checkpointer(checkpoints or self.run_dir / "checkpoints", log=log,
                                         heartbeat=self._write_manifest, read_only=checkpoints is not None)
        # the run's context, built once here and passed to everything that trains (alignkit.context)
        self.ctx = RunContext(runtime, log, Budget(), self.checkpointer)
        self.ws = StageBuilder(recipe, self.ctx, self.run_dir, cache_dir)
        self.trajectory = TrajectoryRecorder(self.ws)  # what training reached and cost, too
        self.ctx.trace = self.trajectory.hook  # checkpoints evaluated every eval.every_steps
        self.manifest = {"alignkit_run": RUN_FORMAT, "name": recipe.name, "method": recipe.method,
                         "seed": recipe.seed,
                         "train_seed": self.ws.train_seed, "recipe": to_dict(recipe),
                         "versions": package_versions(), "argv": sys.argv, "device": str(self.ws.device),
                         "runtime": self.ws.runtime.describe(),
                         "threads": torch.get_num_threads(),  # intra-op CPU threads (alignkit.threads)
                         "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                         **({"compare_entry": entry.to_dict()} if entry else {})}

    @contextmanager
    def stage(self, name: str):
        """Time the stage and record its own peak memory (CPU RSS, CUDA allocation) in the manifest."""
        began = time.perf_counter()
        if self.ws.runtime.is_main:
            LOG.info("%s: %s ...", self.recipe.name, name)
        with PeakMemory() as peak:
            yield
        self.timings[name] = round(time.perf_counter() - began, 2)
        self.stage_memory[name] = peak.as_dict()

    def _write_manifest(self, **extra) -> None:
        self.manifest.update(timings_s=self.timings, peak_memory=process_peak_mb(),
                             stage_peak_memory_mb=self.stage_memory,
                             artifact_keys=self.ws.artifact_keys, heartbeat_at=time.time(), **extra)
        write_json(self.run_dir / "manifest.json", self.manifest)

    def _resume_from(self) -> int:
        """Roll an unfinished run back to its newest complete checkpoint (or to before training): the
        metrics and trajectory points logged after it go, training repeats from there. Returns its step."""
        old = read_manifest(self.run_dir) or {}
        meta = self.checkpointer.latest_meta()
        self.ctx.log.truncate(meta["log_offset"] if meta else old.get("train_log_offset", 0))
        step = meta["step"] if meta else 0
        trajectory = self.run_dir / "eval" / "trajectory.jsonl"
        write_jsonl(trajectory, [r for r in read_jsonl(trajectory) if r["step"] <= step])
        self.manifest["resumed"] = [*old.get("resumed", []), {"from_step": step, "at": time.time()}]
        where = (f"its checkpoint at step {step}" if meta else
                 "the start of training (no intact checkpoint)" if self.checkpointer.skipped else
                 "the start of training (no checkpoint yet)")
        if self.ws.runtime.is_main:
            LOG.info(f"{self.recipe.name}: resuming the {old.get('status', 'interrupted')} run in "
                     f"{self.run_dir} from {where}")
        return step

    def execute(self, resume: bool = False) -> EvalSummary:
        """Train, save, evaluate; ``resume`` continues an unfinished run from its last checkpoint."""
        entry = METHODS.entry(self.recipe.method)
        seed_everything(self.ws.train_seed)
        if resume:
            self._resume_from()
        else:
            (self.run_dir / "eval" / "trajectory.jsonl").unlink(missing_ok=True)
        self._write_manifest()
        try:
            with self.stage("load SFT policy"):
                _ = self.ws.sft
            check_judge(self.ws)  # before anything trains: a judge that cannot judge fails now, in one line
            with self.stage("gold reward"):
                _ = self.ws.gold
            config = self.recipe.method_config(self.recipe.method)
            for need in method_needs(self.recipe.method, config):
                with self.stage(need.stage):
                    self.ws.resolve(need)
            train_stage = f"train {self.recipe.method}"
            self.manifest.setdefault("train_log_offset", self.ctx.log.position())
            self._write_manifest()
            with self.stage(train_stage):
                artifact = entry.obj(self.ws, config)
            self.trajectory.restored(self.checkpointer.restored_step)
            model = getattr(artifact, "model", None)
            if isinstance(model, torch.nn.Module) and nonfinite_modules(model):
                raise numerical_error(self.checkpointer.stage or self.recipe.method, self.ws.budget.steps,
                                      "trained weights are not finite (not saved)",
                                      self.checkpointer.last_good())
            with self.stage("save model"), atomic_dir(self.run_dir / "model") as tmp:
                artifact.save(tmp)
            self.manifest["model_sha256"] = folder_checksums(self.run_dir / "model")  # what reuse verifies
            self.manifest["trained_budget"] = self.ws.budget.as_dict()  # for eval, if evaluating fails
            with self.stage("evaluate"):
                summary, samples = evaluate_artifact(self.ws, artifact, trajectory=self.trajectory)
            # measured, not determined by the recipe: in the manifest, so the summary is reproducible byte for
            # byte
            self.manifest["cost"] = {"train_wall_s": self.timings[train_stage],
                                     "eval_wall_s": self.timings["evaluate"],
                                     "peak_memory": process_peak_mb(),
                                     "train_peak_memory": self.stage_memory[train_stage],
                                     # wall by checkpoint, N (alignkit.report.cost)
                                     "training": self.trajectory.training_cost}
            write_outputs(self.run_dir, summary, samples)
            write_card(self.run_dir, to_dict(self.recipe), summary)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                saved = {"failed_in": "evaluation"} if "model_sha256" in self.manifest else {}  # for eval
                self._write_manifest(status=status, error=f"{type(exc).__name__}: {exc}"[:500], **saved)
            except AlignkitError:  # the disk is full: the first error is the one to report
                pass
            self.ctx.log.sink.finish()
            raise
        self.checkpointer.clear()
        self._write_manifest(status="done", stage_keys=self.ws.stage_keys(),
                             gold_reward_meta=self.ws.gold_meta,
                             reward_model=self.ws.reward_model_summary)
        self.ctx.log.sink.summary(summary.to_dict())
        self.ctx.log.sink.finish()
        return summary


def evaluate_artifact(ws: StageBuilder, artifact, *, trajectory: TrajectoryRecorder | None = None
                      ) -> tuple[EvalSummary, dict[float, list[dict]]]:
    """Policies go through the shared evaluator at every temperature; other artifacts (reward models)
    evaluate themselves. Returns the summary and the per-prompt samples of each temperature. ``trajectory``:
    the run's recorder, whose trained policy closes its trajectory (None: a re-evaluation keeps it as is)."""
    recipe = ws.recipe
    if not isinstance(artifact, Policy):
        summary, samples = artifact.evaluate(ws)
        found = EvalSummary.from_dict(summary)
        return replace(found, budget=ws.budget.as_dict()), {recipe.eval.temperature: samples}
    cfg = recipe.eval
    reference = ws.reference_for(artifact)
    # the proxy column scores with the reward model the method used (4-bit for memory-lean PPO)
    proxy = ws.proxy_for(method_needs(recipe.method, recipe.method_config(recipe.method)))
    rows, samples = [], {}
    for temperature in cfg.all_temperatures():
        row, samples[temperature] = evaluate_at(artifact, reference, ws.reference_samples(temperature),
                                                ws.gold,
                                                cfg, temperature=temperature, seed=ws.train_seed,
                                                runtime=ws.runtime, judge=ws.judge, proxy=proxy)
        rows.append(row)
    # the trained policy closes its trajectory, on the same prompts as the checkpoints
    if cfg.every_steps and trajectory is not None:
        steps = trajectory.trained_steps
        recorded = any(p["step"] == steps for p in read_jsonl(ws.run_dir / "eval" / "trajectory.jsonl"))
        if steps and not ws.runtime.broadcast(recorded):  # the main process's trajectory file decides
            # the same prompts, seed and policy: the final row itself
            if cfg.trajectory_prompts >= cfg.n_prompts:
                append_jsonl(ws.run_dir / "eval" / "trajectory.jsonl",
                             {"step": steps, **{k: rows[0][k] for k in TRAJECTORY_KEYS},
                              **trajectory.training_compute})
            else:
                trajectory.record(artifact, steps, closing=True)
    agreement = ws.judge_agreement()  # once per run: how far the judge itself can be trusted
    gold_agreement = (
        None if ws.gold_is_judge or not ws.recipe.preferences.is_user_data else ws.judge_agreement("gold")
    )
    summary = EvalSummary(recipe.method, recipe.name, rows[0], judge=cfg.judge,
                          judge_kind="pairwise" if is_pairwise(ws.judge) else "score",
                          judge_agreement=agreement or None, gold_agreement=gold_agreement or None,
                          self_judged=True if self_judging(recipe) else None, by_temperature=rows,
                          budget=ws.budget.as_dict(), training_data=training_data(ws))
    return summary, samples


def training_data(ws: StageBuilder) -> dict:
    """What the run learned from, for the report: the pairs (shared by every method) and their split."""
    if not ws.has_pairs:
        return {}
    train, heldout = ws.train_pairs, ws.heldout_pairs
    return {"train_pairs": len(train), "train_prompts": len(set(train.prompts)),
            "heldout_pairs": len(heldout), "heldout_prompts": len(set(heldout.prompts)),
            "completions_per_prompt": completions_per_prompt(ws.preferences),
            **({"unpaired": True} if getattr(train, "unpaired", False) else {})}


def write_outputs(run_dir: Path, summary: EvalSummary, samples: dict[float, list[dict]]) -> None:
    """``eval/summary.json``, the samples of each temperature and the run's plot, each written atomically."""
    primary = summary.results.get(TEMPERATURE, next(iter(samples)))
    for temperature, rows in samples.items():
        name = "samples.jsonl" if temperature == primary else f"samples_T{temperature:g}.jsonl"
        write_jsonl(run_dir / "eval" / name, rows)
    summary.write(run_dir)
    plot_run(run_dir, summary)


def run_recipe(recipe: Recipe, run_dir: Path, *, overwrite: bool = False, cache_dir: Path | None = None,
               entry: ComparisonEntry | None = None, runtime: Runtime | None = None) -> EvalSummary:
    """Train and evaluate ``recipe`` into ``run_dir``; ``entry`` records its place in a comparison. An
    interrupted or failed run of the same recipe there resumes from its last checkpoint; ``overwrite``
    replaces a run as a whole, and only once the new one succeeded. Under data parallelism the main process
    claims and writes the run directory; the others follow its decision in a scratch folder. ``runtime``: one
    to reuse when it has the recipe's device and precision (a comparison's runs share one)."""
    check_run_name(recipe.name)
    problem = default_task_problem(recipe)
    if problem:
        raise AlignkitError(problem)
    run_dir = Path(run_dir)
    runtime = start(recipe.device, recipe.precision, reuse=runtime)
    if not runtime.is_main:
        return _follow_main(recipe, run_dir, cache_dir, entry, runtime.broadcast(None), runtime)
    try:
        action = claim_run_dir(run_dir, recipe, overwrite)
    except AlignkitError as exc:
        runtime.broadcast(exc)
        raise
    runtime.broadcast(action)
    if action == "replace":
        summary = _replace_run(recipe, run_dir, cache_dir, entry, runtime)
    else:
        summary = Run(recipe, run_dir, runtime, cache_dir, entry).execute(resume=action == "resume")
    if recipe.push_to_hub:
        LOG.info("pushed to %s", push_run(run_dir, recipe.push_to_hub, private=recipe.hub_private))
    return summary


def _follow_main(recipe: Recipe, run_dir: Path, cache_dir: Path | None, entry: ComparisonEntry | None, action,
                 runtime: Runtime) -> EvalSummary:
    """A data-parallel process other than the main one: the same run, written to a scratch folder that goes
    when it ends; a resumed run restores the main process's checkpoints."""
    if isinstance(action, BaseException):
        raise action
    scratch = Path(tempfile.mkdtemp(prefix=f"alignkit-{recipe.name}-rank{runtime.rank}-"))
    try:
        checkpoints = run_dir / "checkpoints" if action == "resume" else scratch / "checkpoints"
        return Run(recipe, scratch, runtime, cache_dir, entry, checkpoints=checkpoints).execute(
            resume=action == "resume")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
