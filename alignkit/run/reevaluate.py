"""Finished runs again: adopt a current run's recipe, load what it trained, and evaluate it anew under
new evaluation settings (``alignkit eval``), keeping its training record."""

from __future__ import annotations

import copy
import time
from pathlib import Path


from alignkit.config import apply_overrides, to_dict
from alignkit.context import RunContext
from alignkit.errors import AlignkitError
from alignkit.run.hub import write_card
from alignkit.models.policy import Policy
from alignkit.models.scalar_head import META_FILE as SCALAR_META
from alignkit.recipe import Recipe, method_needs, recipe_from_data
from alignkit.registry import METHODS
from alignkit.run.decision import check_evaluation_only, in_comparison_folder
from alignkit.runfolder import model_problem, read_run
from alignkit.runlog import write_json
from alignkit.runtime import Runtime, start
from alignkit.trackers import Trackers
from alignkit.stages.builder import StageBuilder
from alignkit.runtime import seed_everything
from alignkit.run.pipeline import evaluate_artifact, write_outputs

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
        raise AlignkitError(f"{run_dir}: a {recipe.method} run trained a scalar model, not a policy to evaluate")
    return Policy.load_trained(recipe.model, folder, cache_dir=ws.cache_dir, runtime=ws.runtime)


def reevaluate(run_dir: Path, recipe: Recipe, cache_dir: Path | None = None, runtime: Runtime | None = None,
               group: str | None = None) -> dict:
    """Evaluate a finished run's model again under ``recipe``'s evaluation settings (temperatures, judge,
    ...); its training record (budget, cost, trajectory) stays as it was. The new summary goes to the
    recipe's trackers (a tracker run grouped by ``group``, the comparison)."""
    run_dir = Path(run_dir)
    hint = "rerun the run with --overwrite to train it again"
    folder = read_run(run_dir, hint)
    folder.require_finished("eval")
    manifest, old = folder.manifest, folder.summary(hint)
    problem = model_problem(run_dir, manifest) if METHODS.entry(recipe.method).meta.get("trains") is not False \
        else None
    if problem:
        raise AlignkitError(f"{run_dir}: eval: {problem}; {hint}")
    ctx = RunContext(start(recipe.device, recipe.precision, reuse=runtime))
    ws = StageBuilder(recipe, ctx, run_dir, cache_dir)
    seed_everything(ws.train_seed)
    began = time.perf_counter()
    summary, samples = evaluate_artifact(ws, load_trained(ws, run_dir))
    for key in ("budget", "training_data"):
        summary[key] = old.get(key, summary.get(key))
    if not ws.runtime.is_main:  # every process evaluated its share; the main one writes
        return summary
    write_outputs(run_dir, summary, samples)
    write_card(run_dir, to_dict(recipe), summary)
    manifest.update(recipe=to_dict(recipe), artifact_keys={**manifest.get("artifact_keys", {}), **ws.artifact_keys},
                    cost={**manifest.get("cost", {}), "eval_wall_s": round(time.perf_counter() - began, 2)})
    write_json(run_dir / "manifest.json", manifest)
    trackers = Trackers(recipe.report_to, run_dir, recipe.name, group or recipe.name, to_dict(recipe))
    trackers.summary(summary)
    trackers.finish()
    return summary


def reevaluate_run(run_dir: Path, overrides: list[str], plugins=()) -> dict:
    """``alignkit eval``: a finished run's own recipe, with ``overrides`` (evaluation settings), evaluated again."""
    path = Path(run_dir) / "manifest.json"
    folder = read_run(run_dir, "rerun the run with --overwrite to train it again")
    folder.require_finished("eval")
    resolved = folder.manifest["recipe"]
    raw = copy.deepcopy({k: v for k, v in resolved.items() if k != "methods"})  # never the record itself
    raw.update(copy.deepcopy(resolved.get("methods", {})))  # method sections back at the top level
    apply_overrides(raw, overrides)
    recipe = recipe_from_data(raw, str(path), Path(run_dir), plugins)
    check_evaluation_only(run_dir, resolved, to_dict(recipe), in_comparison=in_comparison_folder(run_dir))
    return reevaluate(run_dir, recipe)
