"""Finished runs again: adopt a current run's recipe, load what it trained, and evaluate it anew under
new evaluation settings (``alignkit eval``), keeping its training record."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from dataclasses import replace
from pathlib import Path

from alignkit.config import apply_overrides, to_dict
from alignkit.context import RunContext
from alignkit.errors import AlignkitError, warn
from alignkit.eval.summary import EvalSummary
from alignkit.models.policy import Policy
from alignkit.models.scalar_head import META_FILE as SCALAR_META
from alignkit.recipe import Recipe, method_needs, recipe_from_data
from alignkit.registry import METHODS, REWARDS
from alignkit.rewards.judge_check import check_judge
from alignkit.run.decision import check_evaluation_only, in_comparison_folder
from alignkit.run.hub import write_card
from alignkit.run.pipeline import evaluate_artifact, write_outputs
from alignkit.runfolder import RunFolder, model_problem, read_run
from alignkit.runformat import CARD
from alignkit.runlog import all_or_nothing, write_json
from alignkit.runtime import Runtime, seed_everything, start
from alignkit.stages.builder import StageBuilder
from alignkit.trackers import Trackers


def adopt_recipe(run_dir: Path, recipe: Recipe, runtime: Runtime) -> None:
    """Record ``recipe`` as a current run's recipe: it would train exactly this run (same training identity
    and stage keys), and settings only other stages read (e.g. the pairs, for SFT) now match its peers'."""
    path = Path(run_dir) / "manifest.json"
    manifest = read_run(run_dir).manifest
    if manifest["recipe"] != to_dict(recipe) and runtime.is_main:
        manifest["recipe"] = to_dict(recipe)
        write_json(path, manifest)


def load_trained(ws: StageBuilder, run_dir: Path):
    """The artifact a finished run trained: its saved policy, or a sampling procedure rebuilt from the
    shared stages (Best-of-N)."""
    recipe = ws.recipe
    entry = METHODS.entry(recipe.method)
    config = recipe.method_config(recipe.method)
    if entry.meta.get("trains") is False:
        for need in method_needs(recipe.method, config):
            ws.resolve(need)
        return entry.obj(ws, config)
    folder = Path(run_dir) / "model"
    if (folder / SCALAR_META).is_file():
        raise AlignkitError(f"{run_dir}: a {recipe.method} run trained a scalar model, not a policy to "
                            "evaluate")
    return Policy.load_trained(recipe.model, folder, cache_dir=ws.cache_dir, runtime=ws.runtime)


def reevaluate(run_dir: Path, recipe: Recipe, cache_dir: Path | None = None, runtime: Runtime | None = None,
               group: str | None = None) -> EvalSummary:
    """Evaluate a finished run's model again under ``recipe``'s evaluation settings (temperatures, judge,
    ...), or finish a run that failed in evaluation (its model saved and verified); its training record
    (budget, cost, trajectory) stays as it was. The judge is checked first, and nothing is written unless
    the evaluation succeeded. The new summary goes to the
    recipe's trackers (a tracker run grouped by ``group``, the comparison)."""
    run_dir = Path(run_dir)
    hint = "rerun the run with --overwrite to train it again"
    folder = read_run(run_dir, hint)
    folder.require_trained("eval")
    manifest, (budget, training_data) = folder.manifest, _trained_record(folder, hint)
    problem = model_problem(run_dir,
                            manifest) if METHODS.entry(recipe.method).meta.get("trains") is not False \
        else None
    if problem:
        raise AlignkitError(f"{run_dir}: eval: {problem}; {hint}")
    ctx = RunContext(start(recipe.device, recipe.precision, reuse=runtime))
    ws = StageBuilder(recipe, ctx, run_dir, cache_dir)
    check_judge(ws)  # before sampling anything: one line, and nothing recorded changes
    seed_everything(ws.train_seed)
    began = time.perf_counter()
    summary, samples = evaluate_artifact(ws, load_trained(ws, run_dir))
    summary = replace(summary, budget=summary.budget if budget is None else budget,
                      training_data=summary.training_data if training_data is None else training_data)
    if not ws.runtime.is_main:  # every process evaluated its share; the main one writes
        return summary
    failed = folder.failed_in_evaluation
    with all_or_nothing([run_dir / "manifest.json", run_dir / "model" / CARD], [run_dir / "eval"]):
        _record(run_dir, recipe, ws, folder, summary, samples, began)
    if failed:  # finished now: its checkpoints go, as a finished run's do
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    trackers = Trackers(recipe.report_to, run_dir, recipe.name, group or recipe.name, to_dict(recipe))
    trackers.summary(summary.to_dict())
    trackers.finish()
    return summary


def _record(run_dir: Path, recipe: Recipe, ws: StageBuilder, folder: RunFolder, summary: EvalSummary,
            samples: dict, began: float) -> None:
    """Write a re-evaluation: samples, summary, plot, card, manifest (all or none of them: the caller's)."""
    manifest = folder.manifest
    write_outputs(run_dir, summary, samples)
    write_card(run_dir, to_dict(recipe), summary)
    manifest.update(recipe=to_dict(recipe), artifact_keys={**manifest.get("artifact_keys", {}),
                                                           **ws.artifact_keys},
                    cost={**manifest.get("cost", {}), "eval_wall_s": round(time.perf_counter() - began, 2)})
    if folder.failed_in_evaluation:  # finished now, as the run would have finished
        manifest.pop("error", None), manifest.pop("failed_in", None)
        trained_s = manifest.get("timings_s", {}).get(f"train {recipe.method}")
        manifest["cost"].setdefault("train_wall_s", trained_s)
        manifest.update(status="done", stage_keys=ws.stage_keys(), gold_reward_meta=ws.gold_meta,
                        reward_model=ws.reward_model_summary)
    write_json(run_dir / "manifest.json", manifest)


def _trained_record(folder: RunFolder, hint: str) -> tuple[dict | None, dict | None]:
    """What a re-evaluation keeps of the run's training, its budget and training data: its summary's, or for a
    run that failed in evaluation (no summary) the budget its manifest recorded."""
    if not folder.failed_in_evaluation:
        summary = folder.summary(hint)
        return summary.budget, summary.training_data
    if not isinstance(folder.manifest.get("trained_budget"), dict):
        raise AlignkitError(f"{folder.path}: eval: the run failed in evaluation, and its manifest records no "
                            f"training budget (written by an older alignkit); {hint}")
    return folder.manifest["trained_budget"], None


ENDPOINT_KEYS = ("base_url", "api_key_env")  # where a judge sends requests, and which secret goes with them


def _option_defaults(judge: str) -> dict:
    """The defaults of ``judge``'s options (``{}`` for a judge without options)."""
    options = REWARDS.entry(judge).meta.get("judge_options") if judge in REWARDS else None
    return {f.name: f.default for f in dataclasses.fields(options)} if options else {}


def recorded_endpoint(recipe: Recipe, recorded: dict, overrides: list[str]) -> dict:
    """The endpoint settings ``recipe``'s judge would take from the run folder, not from the command line: the
    recorded ``base_url`` / ``api_key_env`` the user did not name again with --set (a key variable at its
    default excepted: naming the endpoint afresh sends that one too)."""
    named = {item.split("=", 1)[0].strip() for item in overrides}
    options, defaults = recipe.eval.judge_options, _option_defaults(recipe.eval.judge)
    old = (recorded.get("eval") or {}).get("judge_options") or {}
    return {key: options[key] for key in ENDPOINT_KEYS
            if options.get(key) and options[key] == old.get(key) and options[key] != defaults.get(key)
            and not named & {"eval", "eval.judge_options", f"eval.judge_options.{key}"}}


def check_endpoint(run_dir: Path, recipe: Recipe, recorded: dict, overrides: list[str], reuse: bool) -> None:
    """A run folder names no server to contact, nor the variable whose secret goes there: refuse a recorded
    endpoint the user did not name again, unless ``reuse`` (``--reuse-recorded-endpoint``); say what is
    reused."""
    reused = recorded_endpoint(recipe, recorded, overrides)
    if not reused:
        return
    shown = ", ".join(f"{key} {value!r}" for key, value in reused.items())
    if reuse:
        warn(f"{run_dir}: eval: reusing the endpoint its recipe records ({shown})")
        return
    raise AlignkitError(f"{run_dir}: eval: the run's judge would contact the endpoint its recipe records "
                        f"({shown}); eval contacts none a run folder names: name it again (--set "
                        f"eval.judge_options.KEY=VALUE for {', '.join(reused)}) or pass "
                        f"--reuse-recorded-endpoint")


def eval_recipe(run_dir: Path, recorded: dict, overrides: list[str], plugins=()) -> Recipe:
    """The recorded recipe with ``overrides``, its ``plugins:`` list never imported: code shipped in a run
    folder runs only when the user names it again (``plugins``, ``--plugins``); a recipe that needs it
    fails in one line saying so. The record keeps the list (what trained the run)."""
    raw = copy.deepcopy({k: v for k, v in recorded.items() if k not in ("methods", "plugins")})  # a copy
    raw.update(copy.deepcopy(recorded.get("methods", {})))  # method sections back at the top level
    apply_overrides(raw, overrides)
    listed = recorded.get("plugins") if isinstance(recorded.get("plugins"), list) else []
    try:
        recipe = recipe_from_data(raw, str(Path(run_dir) / "manifest.json"), Path(run_dir), plugins)
    except AlignkitError as exc:
        if not listed:
            raise
        names = ", ".join(map(str, listed))[:200]
        raise AlignkitError(f"{exc}; the run lists plugins ({names}), which eval never imports from a run "
                            f"folder: if it needs them, name them again with --plugins PATH") from None
    if "plugins" not in raw:
        recipe.plugins = list(listed)
    return recipe


def reevaluate_run(run_dir: Path, overrides: list[str], plugins=(),
                   reuse_endpoint: bool = False) -> EvalSummary:
    """``alignkit eval``: a finished run's own recipe, with ``overrides`` (evaluation settings), evaluated
    again. Nothing the run folder records is executed or contacted unless the user names it again: neither
    its plugins (:func:`eval_recipe`) nor its judge's endpoint (:func:`check_endpoint`)."""
    return reevaluate(run_dir, eval_plan(run_dir, overrides, plugins, reuse_endpoint))


def eval_plan(run_dir: Path, overrides: list[str], plugins=(), reuse_endpoint: bool = False) -> Recipe:
    """The checked recipe :func:`reevaluate_run` evaluates ``run_dir`` with, nothing written: ``alignkit
    eval`` checks every folder it is given this way before it rewrites any."""
    folder = read_run(run_dir, "rerun the run with --overwrite to train it again")
    folder.require_trained("eval")
    resolved = folder.manifest["recipe"]
    recipe = eval_recipe(run_dir, resolved, overrides, plugins)
    check_evaluation_only(run_dir, resolved, to_dict(recipe), in_comparison=in_comparison_folder(run_dir))
    check_endpoint(run_dir, recipe, resolved, overrides, reuse_endpoint)
    return recipe
