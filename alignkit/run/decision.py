"""Is a finished run still current? What ``alignkit compare`` does with each run folder it finds: reuse it,
re-evaluate it, resume it or train it, and why. A finished run is only ever called current when its saved
model verifies against the checksums its manifest recorded."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import NamedTuple

from alignkit.cache import default_cache_dir
from alignkit.config import first_difference, not_identity, to_dict
from alignkit.errors import AlignkitError
from alignkit.models.config import ModelConfig
from alignkit.recipe import Recipe
from alignkit.registry import METHODS
from alignkit.runfolder import COMPARISON_MARKER, RunFolderError, live_writer, model_problem, read_run
from alignkit.runformat import ADDED_EVAL_DEFAULTS, older_default
from alignkit.runlog import jsonable
from alignkit.stages.keys import StageKeys

EVAL_ONLY = ("temperatures", "judge", "diversity", "batch_size", "judge_options", "judge_fraction",
             "agreement_pairs",
             # change no training, only its evaluation (the judge split: by its stage key)
             "allow_self_judging")
# where results are sent and what is kept on the way, not what is trained or measured
OUTPUTS = ("report_to", "push_to_hub", "hub_private", "save_every_steps")
STAGES = ("preferences", "pair_split", "reward_model", "reference_logps")


# settings that change how a step is computed, not what it is: a run trained with either is the same run
SAME_UPDATE = ("checkpoint_every", "gradient_accumulation_steps", "keep_final_state")
# older_default, ADDED_EVAL_DEFAULTS: settings added since runs were first recorded (runformat.FORMATS)


def training_identity(recipe: dict) -> dict:
    """What decides a run's trained model, as plain data: its method and settings, model, task, gold
    reward, seeds and the evaluation settings that shape its trajectory. The shared stages it used are
    checked by their cache keys instead, so a setting that only other stages read changes nothing here."""
    identity = {k: v for k, v in recipe.items() if k not in ("name", "device", "plugins", "preferences",
                                                             "methods",
                                                             *OUTPUTS)
                and not older_default(k, v)}
    # append_eos means nothing for generated pairs (PreferenceConfig.eos_identity)
    prefs = recipe["preferences"]
    identity["append_eos"] = prefs["append_eos"] and prefs["source"] != "generated"
    identity["model"] = {k: v for k, v in recipe["model"].items() if k not in not_identity(ModelConfig)}
    method_config = recipe["methods"].get(recipe["method"])
    identity["method_config"] = (
        {
            k: v
            for k, v in method_config.items()
            if k not in SAME_UPDATE and not older_default(k, v, recipe["method"])
        }
        if isinstance(method_config, dict)
        else method_config
    )
    identity["eval"] = {k: v for k, v in recipe["eval"].items()
                        if k not in EVAL_ONLY and not (k == "prompts" and not v)}  # unset: as older runs were
    return identity


class RunDecision(NamedTuple):
    """``state``: current, evaluate, resume or train; ``finished``: the folder holds a finished run (which
    training would replace); ``reason``: why a finished run is not reused (``seed: 0 -> 1``)."""

    state: str
    finished: bool = False
    reason: str | None = None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _identity_change(old: dict, new: dict) -> str | None:
    found = first_difference(training_identity(old), training_identity(new))
    if found is None:
        return None
    key, a, b = found
    if key.startswith("method_config"):
        key = new["method"] + key[len("method_config"):]
    return f"{key}: {_shown(a)} -> {_shown(b)}"


def run_decision(run_dir: Path, recipe: Recipe, cache_dir: Path | None = None, overwrite: bool = False,
                 threads: int | None = None) -> RunDecision:
    """What a comparison does with ``run_dir`` for ``recipe``. An unreadable manifest is one line naming it
    (``overwrite``: the folder is trained again instead). ``threads``: the thread count the comparison runs
    its entries with; a run trained on the CPU with another is not reused (float order moves its numbers)."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        return RunDecision("train")
    try:
        folder = read_run(run_dir, "pass --overwrite to train it again")
    except RunFolderError as exc:
        if overwrite:
            return RunDecision("train", True, str(exc))
        raise
    manifest = folder.manifest
    if folder.status != "done":
        unfinished = not live_writer(manifest) and manifest.get("recipe") == jsonable(to_dict(recipe))
        return RunDecision("resume" if unfinished else "train")
    try:
        folder.summary("pass --overwrite to train it again")
    except RunFolderError as exc:
        return RunDecision("train", True, str(exc))
    wanted = to_dict(recipe)
    changed = _identity_change(manifest["recipe"], wanted)
    if changed:
        return RunDecision("train", True, changed)
    recorded = manifest.get("threads")
    if threads and recorded and recorded != threads and manifest.get("runtime", {}).get("device") == "cpu":
        return RunDecision("train", True, f"threads: {recorded} -> {threads}")
    keys = StageKeys(recipe, cache_dir or default_cache_dir()).all()
    used = manifest.get("artifact_keys") or {}
    for k in STAGES:
        if k in used and used[k] != keys[k]:
            found = first_difference({x: y for x, y in manifest["recipe"].items() if x != "name"},
                                     {x: y for x, y in wanted.items() if x != "name"})
            detail = (
                f"{found[0]}: {_shown(found[1])} -> {_shown(found[2])}" if found else "its inputs changed"
            )
            return RunDecision("train", True, f"its {k} stage changed ({detail})")
    problem = model_problem(run_dir, manifest)
    if problem:
        return RunDecision("train", True, f"its saved model cannot be reused ({problem})")
    same = [{k: v for k, v in ev.items() if ADDED_EVAL_DEFAULTS.get(k, ...) != v}
            for ev in (manifest["recipe"]["eval"], wanted["eval"])]
    return RunDecision("current" if same[0] == same[1] else "evaluate", True)


def run_state(run_dir: Path, recipe: Recipe, cache_dir: Path | None = None) -> str:
    """``current`` (reuse as is), ``evaluate`` (trained model still valid, evaluation settings changed),
    ``resume`` (an interrupted or failed run of exactly this recipe: continue from its last checkpoint) or
    ``train`` for a run directory and the recipe it should hold."""
    return run_decision(run_dir, recipe, cache_dir).state


def in_comparison_folder(run_dir: Path) -> bool:
    """Whether ``run_dir`` is one of a comparison folder's runs (``DIR/runs/<label>``)."""
    parent = Path(run_dir).resolve().parent
    return parent.name == "runs" and ((parent.parent / COMPARISON_MARKER).is_file()
                                      or (parent.parent / "compare.json").is_file())


def check_evaluation_only(run_dir: Path, recorded: dict, wanted: dict, *, in_comparison: bool) -> None:
    """``alignkit eval`` changes how a run is evaluated, never what it recorded about its training: a setting
    outside ``eval`` (other than the device) is refused, and so is a changed ``eval`` section for a run of a
    comparison, whose runs must share it (the comparison re-evaluates them all together)."""
    training = {k: v for k, v in recorded.items() if k not in ("eval", "device", "plugins", "report_to")}
    added = sorted(set(wanted.get("methods", {})) - set(recorded.get("methods", {})))
    if added:
        raise AlignkitError(f"eval: {added[0]} is a training section that {run_dir} was not trained with; "
                            "eval takes "
                            f"evaluation settings only (eval.*)")
    found = first_difference(training, _keys_of(training, wanted))
    if found:
        key = found[0].removeprefix("methods.")
        raise AlignkitError(f"eval: {key} is a training setting ({found[1]!r} -> {found[2]!r}); {run_dir} "
                            "was trained "
                            "with the first, so eval takes evaluation settings only (eval.*): train a new "
                            "run for it")
    if in_comparison and first_difference(recorded["eval"], wanted["eval"]):
        key, old, new = first_difference(recorded["eval"], wanted["eval"])
        raise AlignkitError(f"eval: {run_dir} belongs to a comparison, whose runs share their evaluation "
                            f"(eval.{key}: {old!r} -> {new!r}); re-evaluate them together with alignkit "
                            "compare ... "
                            f"--set eval.{key}=..., which retrains nothing (or copy the run out of the "
                            "comparison)")


def free_form_keys(cls: type = Recipe) -> set[str]:
    """Names of the settings that are free-form mappings (``preferences.columns``, ``dpo.loss_params``, ...),
    found in the config dataclasses: a key added inside one is a change, not a setting added since."""
    names, hints = set(), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name]) \
            if typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType) else hints[f.name]
        if typing.get_origin(tp) is dict and f.init:
            names.add(f.name)
        elif dataclasses.is_dataclass(tp):
            names |= free_form_keys(tp)
    if cls is Recipe:
        for name in METHODS.names():
            names |= free_form_keys(METHODS.entry(name).meta["config"])
    return names


def _keys_of(recorded: dict, wanted: dict, free: frozenset = frozenset()) -> dict:
    """``wanted`` cut to the keys ``recorded`` has, at every level: a key added to recipes after a run was
    recorded is no change to it; a free-form mapping (``free``) is compared whole."""
    free = free or frozenset(free_form_keys())
    return {k: wanted.get(k) if k in free else _keys_of(v, wanted[k], free)
            if isinstance(v, dict) and isinstance(wanted.get(k), dict) else wanted.get(k) for k,
            v in recorded.items()}


def refuse_replacing(runs_dir: Path, entries: list, decisions: list[RunDecision]) -> None:
    """Stop, changing nothing, before a finished run would be retrained in place: one line naming the runs
    and what changed (the key and both values), and ``--overwrite``."""
    stale = [(e.label, d.reason) for e, d in zip(entries, decisions) if d.state == "train" and d.finished]
    if not stale:
        return
    shown = "; ".join(f"{label} ({reason})" for label, reason in stale[:4])
    more = f"; and {len(stale) - 4} more" if len(stale) > 4 else ""
    raise AlignkitError(f"compare: {runs_dir} holds {len(stale)} finished run(s) this comparison would "
                        "retrain and "
                        f"replace: {shown}{more}; pass --overwrite to replace them, or choose another --out")
