"""Phase 1 of a comparison: every shared stage its entries will read (SFT policy, gold reward, pairs and their
split, reward model, reference log-probs, reference samples at each temperature, the judge's reward model),
built once into the cache before any entry runs, and a pairwise judge checked (alignkit.rewards.judge_check).
Phase 2 then needs only each entry's recipe and the cache
path, so entries can run side by side, in other processes or on other machines, without racing to build them.

Stages are built in the entries' order with the first entry that needs each one, exactly as a sequential
comparison used to build them on the way (the reward model is seeded by that entry's training seed), so the
numbers do not depend on the phases. What was built, and how long it took, goes to ``shared/timings.json`` of
the comparison folder and the stages' training logs to ``shared/metrics.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from alignkit.artifacts import Artifact
from alignkit.config import to_dict
from alignkit.console import get_logger
from alignkit.context import RunContext
from alignkit.recipe import Recipe, method_needs
from alignkit.registry import METHODS
from alignkit.rewards.judge_check import check_judge, checks_judge
from alignkit.runlog import MetricsLog, write_json
from alignkit.runtime import Runtime, seed_everything, start
from alignkit.stages.builder import StageBuilder
from alignkit.stages.keys import JUDGE_SPLIT_JUDGE, StageKeys

LOG = get_logger()

SHARED_FOLDER = "shared"  # in the comparison folder: timings.json and metrics.jsonl of phase 1


def _identity(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stage_plan(recipe: Recipe, cache_dir: Path) -> list[tuple[str, str, Callable[[StageBuilder], object]]]:
    """The shared stages ``recipe``'s run reads, in the order a run builds them: (stage name, what decides it,
    how to build it in a workspace). Entries that agree on the second element share the stage."""
    keys = StageKeys(recipe, cache_dir)
    model = _identity(recipe.model)
    work: list[tuple[str, str, Callable[[StageBuilder], object]]] = [
        ("load SFT policy", model, lambda ws: ws.sft),
        ("gold reward", _identity([recipe.gold_reward, recipe.gold_reward_options, model]),
         lambda ws: ws.gold)]
    if checks_judge(recipe):  # before any entry trains (alignkit.rewards.judge_check)
        work.insert(1, ("judge check", _identity([to_dict(recipe.eval), to_dict(recipe.preferences), model]),
                        check_judge))
    for need in method_needs(recipe.method, recipe.method_config(recipe.method)):
        if need is Artifact.TRAIN_PAIRS:
            work.append((need.stage, keys.split_key(), lambda ws: ws.train_pairs))
        # one folder; 4-bit only loads it so
        elif need in (Artifact.REWARD_MODEL, Artifact.REWARD_MODEL_4BIT):
            work.append((Artifact.REWARD_MODEL.stage, keys.reward_model_key(),
                         lambda ws: ws.reward_model_folder))
        elif need is Artifact.REFERENCE_LOGPS:
            work.append((need.stage, keys.reference_logps_key(), lambda ws: ws.reference_logps))
    # a reward-model run evaluates itself, without samples
    if "fit_on" not in METHODS.entry(recipe.method).meta:
        for t in recipe.eval.all_temperatures():
            work.append((f"reference samples T={t:g}", keys.reference_samples_key(t),
                         lambda ws, t=t: ws.reference_samples(t)))
    if recipe.eval.judge == JUDGE_SPLIT_JUDGE:
        work.append(("judge reward model", keys.judge_reward_model_key(),
                     lambda ws: ws.judge_reward_model_folder))
    return work


def build_shared_stages(recipes: list[Recipe], cache_dir: Path | None, runtime: Runtime,
                        folder: Path | None = None) -> dict[str, float]:
    """Build (or find in the cache) every shared stage of ``recipes`` once; returns seconds per stage. With
    ``folder`` (the comparison's ``shared/``), the main process records them there."""
    timings: dict[str, float] = {}
    done: set[tuple[str, str]] = set()
    log = MetricsLog(folder / "metrics.jsonl" if folder is not None and runtime.is_main else None)
    for recipe in recipes:
        ws = StageBuilder(recipe, RunContext(start(recipe.device, recipe.precision, reuse=runtime), log),
                       None, cache_dir)
        todo = [(name, key, build) for name, key, build in stage_plan(recipe, ws.cache_dir)
                if (name, key) not in done]
        if not todo:
            continue
        seed_everything(ws.train_seed)  # as the first run that needed these stages seeded itself
        for name, key, build in todo:
            if runtime.is_main:
                LOG.info("compare: shared stage: %s ...", name)
            began = time.perf_counter()
            build(ws)
            label = name if name not in timings else f"{name} ({recipe.name})"
            timings[label] = round(time.perf_counter() - began, 2)
            done.add((name, key))
    if folder is not None and runtime.is_main:
        write_json(folder / "timings.json", {"timings_s": timings, "total_s": round(sum(timings.values()),
                                                                                    2)})
    return timings
