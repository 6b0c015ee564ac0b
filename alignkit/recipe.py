"""The recipe schema: one task, one starting policy, one evaluator, and a section per method.

A recipe names the method to run (``method: dpo``) and may hold a section for any registered method
(``dpo: {beta: 0.1}``, ``reward_model: {...}`` for PPO's reward model); each section is validated
against that method's config dataclass. Errors name the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from alignkit.artifacts import Artifact, as_artifacts
from alignkit.cache import default_cache_dir
from alignkit.config import ConfigError, apply_overrides, build, option, read_yaml, to_dict
from alignkit.data.checks import special_tokens
from alignkit.data.pairs_task import read_prompt_set
from alignkit.data.preferences import PreferenceConfig, check_heldout, preference_notices, read_preferences
from alignkit.data.task import TaskConfig
from alignkit.errors import AlignkitError, DataError, UnknownNameError, warn
from alignkit.eval.evaluator import EvalConfig
from alignkit.models.config import ModelConfig
from alignkit.models.loading import tokenizer_on_disk
from alignkit.recipes.bundled import resolve_recipe_path
from alignkit.registry import DATASETS, METHODS, REWARDS, load_plugins
from alignkit.runtime import device_problem
from alignkit.trackers import report_to_problem
from alignkit.trl_names import canonical_overrides, from_trl_config, is_trl_config


@dataclass
class Recipe:
    """A complete, validated run description."""

    method: str = option(help="registered method to run (see `alignkit list`)")
    name: str = option("run", "run name; the run directory defaults to runs/NAME")
    seed: int = option(0, "seed of the shared stages: prompts, preference pairs, reward model, reference "
                          "samples",
                       ge=0)
    train_seed: Optional[int] = option(None, "seed of this run's training (initialisation, shuffling, PPO "
                                             "rollouts) and of its evaluation samples (default: seed)", ge=0)
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under accelerate launch: auto or cpu)")
    precision: str = option("fp32",
                            "training precision: fp32, or bf16/fp16 mixed precision (autocast; fp16 with "
                                    "loss scaling); sampling and evaluation stay fp32", choices=("fp32",
                                                                                                 "bf16",
                                                                                                 "fp16"))
    plugins: list[str] = option([], "plugin modules or .py paths to load before validation")
    model: ModelConfig = option(ModelConfig(), "the SFT policy: starting point and KL reference")
    task: TaskConfig = option(TaskConfig(), "prompts, demonstrations and held-out split")
    gold_reward: str = option("imdb-sentiment", "registered ground-truth reward used to label and judge")
    gold_reward_options: dict[str, Any] = option({}, "settings of a gold reward that takes them, e.g. "
                                                     "hf-classifier's {model: "
                                                     "siebert/sentiment-roberta-large-english}")
    preferences: PreferenceConfig = option(PreferenceConfig(), "preference pairs for DPO and reward models")
    eval: EvalConfig = option(EvalConfig(), "held-out evaluation settings")
    report_to: list[str] = option([], "experiment trackers that get the metrics and evaluation, as trl's "
                                      "report_to: trackio, tensorboard, wandb, mlflow (or none)")
    push_to_hub: str = option("", "Hub repository (ORG/NAME) the finished run's policy, card and evaluation "
                                  "are uploaded to, as alignkit push does ('': none)")
    hub_private: bool = option(False, "push_to_hub creates the repository private")
    save_every_steps: int = option(0, "keep the trained policy's weights every N optimiser steps (PPO: "
                                      "iterations) as loadable model folders in RUN/saved/step-N (0: only "
                                      "the final model)",
                                   ge=0)
    methods: dict[str, Any] = dataclasses.field(
        default_factory=dict, init=False, metadata={"help": "per-method sections, keyed by method name"}
    )

    def check(self):
        try:
            REWARDS.entry(self.gold_reward)
        except UnknownNameError as exc:
            yield "gold_reward", str(exc)
        judge = self.eval.judge if self.eval is not None else "gold"  # None: eval itself failed to validate
        if self.gold_reward in REWARDS and REWARDS.entry(self.gold_reward).meta.get("pairwise"):
            yield "gold_reward", (f"{self.gold_reward} is a pairwise judge (it compares two responses, it "
                                  "gives no "
                                  f"score to label pairs with): choose it with eval.judge")
        if judge not in ("gold",
                         self.gold_reward) and judge in REWARDS and REWARDS.entry(judge).meta.get("options"):
            yield "eval.judge", (f"{judge} takes its settings from gold_reward_options, so it can judge only "
                                 "as the "
                                 f"gold_reward itself (set gold_reward: {judge})")
        problem = device_problem(self.device)
        if problem:
            yield "device", problem
        if self.push_to_hub and (self.push_to_hub.count("/") > 1 or " " in self.push_to_hub):
            yield "push_to_hub", f"expected a Hub repository id ORG/NAME, got {self.push_to_hub!r}"
        if self.hub_private and not self.push_to_hub:
            yield "hub_private", "applies to push_to_hub, which is not set"
        problem = report_to_problem(self.report_to)
        if problem:
            yield "report_to", problem

    def method_config(self, name: str) -> Any:
        """The validated settings of a method (its defaults when the recipe has no section for it)."""
        if name not in self.methods:
            self.methods[name] = build(METHODS.entry(name).meta["config"], {}, where=name)
        return self.methods[name]


def load_recipe(path: str | Path | None, overrides: Iterable[str] = (), plugins: Iterable[str] = (),
                defaults: dict | None = None) -> Recipe:
    """Read, override, and validate a recipe; plugins load first so their names validate. ``path`` may
    also name a recipe bundled with alignkit (``dpo_imdb``; see :func:`bundled_recipe`)."""
    path = resolve_recipe_path(path) if path else None
    raw = read_yaml(path) if path else {}
    raw = {**(defaults or {}), **raw}
    apply_overrides(raw, canonical_overrides(raw, overrides))
    if is_trl_config(raw):  # trl's flat TrainingArguments keys, as trl's docs write a config
        raw = from_trl_config(raw, str(path or "recipe"), Path(path).stem if path else "")
    return recipe_from_data(raw, str(path) if path else "recipe", Path(path).parent if path else Path.cwd(),
                            plugins)


MAX_NAME = 100  # characters of a run name (a folder name, with room for alignkit's temporary prefixes)
MAX_VALUE = 4096  # characters of any one string in a recipe


def check_run_name(name: str) -> str:
    """A recipe ``name`` is a plain folder name (runs go to ``runs/NAME``): no separators, ``..`` or
    absolute paths that would escape the runs folder, no control characters, at most ``MAX_NAME`` long."""
    if not isinstance(name, str) or len(name) > MAX_NAME or len(name.encode("utf-8",
                                                                            "replace")) > 2 * MAX_NAME:
        shown = f"{name[:40]!r}... ({len(name)} characters)" if isinstance(name, str) else repr(name)
        raise AlignkitError(f"name: {shown} is too long for a folder name (at most {MAX_NAME} characters)")
    if (not name or name in (".", "..") or name.startswith("-") or any(c in name for c in "/\\\0")
            or any(not c.isprintable() for c in name) or Path(name).is_absolute() or name != name.strip()):
        raise AlignkitError(f"name: {name!r} is not a plain folder name (runs go to runs/NAME); "
                            "use letters, digits, '.', '_', '-', no path separators")
    return name


def _check_lengths(value: Any, source: str, key: str = "") -> None:
    """Every string (and key) in a recipe is at most ``MAX_VALUE`` characters: a runaway value stops here,
    not in a manifest of megabytes."""
    if isinstance(value, str) and len(value) > MAX_VALUE:
        raise ConfigError(f"{source}: {key or 'value'}: a value of {len(value)} characters (at most "
                          f"{MAX_VALUE}): {value[:40]!r}...")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_lengths(str(k), source, f"{key}.{str(k)[:40]}" if key else str(k)[:40])
            _check_lengths(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_lengths(v, source, f"{key}[{i}]")


def recipe_from_data(raw: dict, source: str, base: Path, plugins: Iterable[str] = (),
                     preferences_read: dict | None = None) -> Recipe:
    """Validate a recipe given as plain data; errors name ``source`` and the dotted key. ``preferences_read``:
    the caller's record of preference data already read (several recipes of one comparison share their data:
    it is read, and its notices shown, once)."""
    _check_lengths(raw, source)
    raw = copy.deepcopy(raw)
    listed = raw.get("plugins") or []
    if not isinstance(listed, list):
        raise ConfigError(f"{source}: plugins: expected a list of modules or paths")
    try:
        load_plugins([*plugins, *(_relative(p, base) for p in listed)])
    except AlignkitError as exc:
        raise ConfigError(f"{source}: plugins: {exc}") from None
    sections = {k: raw.pop(k) for k in list(raw) if k in METHODS}
    recipe = build(Recipe, raw, source=source)
    try:
        check_run_name(recipe.name)
    except AlignkitError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        METHODS.entry(recipe.method)
    except AlignkitError as exc:
        raise ConfigError(f"{source}: method: {exc}") from None
    sections.setdefault(recipe.method, {})
    recipe.methods = {name: build(METHODS.entry(name).meta["config"], section, where=name, source=source)
                      for name, section in sections.items()}
    meta = METHODS.entry(recipe.method).meta
    if recipe.save_every_steps and (meta.get("trains") is False or meta.get("trains_policy") is False):
        raise ConfigError(f"{source}: save_every_steps: {recipe.method} trains no policy whose weights could "
                          "be kept")
    if recipe.push_to_hub and (meta.get("trains") is False or meta.get("trains_policy") is False):
        raise ConfigError(f"{source}: push_to_hub: {recipe.method} trains no policy to push")
    recipe.gold_reward_options = gold_reward_options(recipe, source)
    recipe.eval.judge_options = judge_options(recipe, source)
    problem = self_judging(recipe)
    if problem and not recipe.eval.allow_self_judging:
        raise ConfigError(f"{source}: {problem}")
    check_preference_file(recipe, source, preferences_read)
    if recipe.model.trust_remote_code:
        warn(f"{source}: model.trust_remote_code is true: {recipe.model.name_or_path}'s own Python code "
             f"will run when it loads")
    return recipe


def gold_reward_options(recipe: Recipe, source: str) -> dict:
    """The gold reward's settings, validated against the options dataclass it registered
    (``register_reward(name, options=Cls)``) and with every default filled in, so that two recipes that mean
    the same judge read the same; a reward registered without one takes none."""
    entry = REWARDS.entry(recipe.gold_reward)
    given = recipe.gold_reward_options
    if entry.meta.get("options") is None:
        if given:
            raise ConfigError(f"{source}: gold_reward_options: reward {recipe.gold_reward!r} takes no "
                              "options "
                              f"(remove them, e.g. --set gold_reward_options={{}})")
        return {}
    return to_dict(build(entry.meta["options"], given, where="gold_reward_options", source=source))


def judge_options(recipe: Recipe, source: str) -> dict:
    """``eval.judge_options`` validated against the options dataclass the judge registered
    (``register_reward(name, judge_options=Cls)``), every default filled in; a judge without one
    takes none."""
    given, judge = recipe.eval.judge_options, recipe.eval.judge
    options = REWARDS.entry(judge).meta.get("judge_options") if judge in REWARDS else None
    if options is None:
        if given:
            raise ConfigError(f"{source}: eval.judge_options: judge {judge!r} takes no options (remove them, "
                              f"e.g. --set eval.judge_options={{}})")
        return {}
    return to_dict(build(options, given, where="eval.judge_options", source=source))


def method_needs(method: str, config) -> tuple[Artifact, ...]:
    """The shared artifacts a method declares it reads (built and timed before it trains)."""
    needs = METHODS.entry(method).meta.get("needs", ())
    return as_artifacts(needs(config) if callable(needs) else needs, method)


# judges that train on the reward_model settings
REWARD_MODEL_JUDGES = ("reward-model", "heldout-reward-model")


def sections_read(recipe: Recipe) -> set[str]:
    """The method sections a run of ``recipe`` reads: its method's, and ``reward_model`` when it trains a
    reward
    model (a method that needs one, or a judge that is one)."""
    needs = set(method_needs(recipe.method, recipe.method_config(recipe.method)))
    judges = {recipe.eval.judge, recipe.gold_reward}
    uses_rm = bool(needs & {Artifact.REWARD_MODEL,
                            Artifact.REWARD_MODEL_4BIT}) or bool(judges & set(REWARD_MODEL_JUDGES))
    return {recipe.method, *(["reward_model"] if uses_rm else [])}


def unread_override(recipes: list[Recipe], overrides: Iterable[str]) -> str | None:
    """The first ``--set`` naming a method section that no run of ``recipes`` reads (it would change
    nothing), as one line; None when every override lands somewhere."""
    read = set().union(*(sections_read(r) for r in recipes))
    for item in overrides:
        head = item.split("=", 1)[0].strip().split(".", 1)[0]
        if head in METHODS and head not in read:
            return (f"--set {item[:80]}: {head} settings would change nothing: no run here uses {head} "
                    "(methods: "
                    f"{', '.join(sorted({r.method for r in recipes}))}; reward_model is read by methods that "
                    "train "
                    f"on a reward model)")
    return None


def self_judging(recipe: Recipe) -> str | None:
    """Why the recipe's judge would grade its method with the very model the method optimised (a judge
    registered with ``proxy=True``, the learned reward model, judging a method that maximises it), or None."""
    judge = recipe.gold_reward if recipe.eval.judge == "gold" else recipe.eval.judge
    if judge not in REWARDS or not REWARDS.entry(judge).meta.get("proxy"):
        return None
    config = recipe.method_config(recipe.method)
    needs = set(method_needs(recipe.method, config))
    optimises = bool(needs & {Artifact.REWARD_MODEL, Artifact.REWARD_MODEL_4BIT}) or (
        getattr(config, "reward", None) == "gold" and recipe.gold_reward == judge)
    if not optimises:
        return None
    where = "eval.judge" if recipe.eval.judge != "gold" else "gold_reward"
    return (f"{where}: {judge} is the reward model that {recipe.method} optimises, so it would grade "
            f"{recipe.method} by its own objective; judge with a model it did not optimise (eval.judge: "
            "gold, "
            f"heldout-reward-model, llm-judge, endpoint-judge) or set eval.allow_self_judging=true to report "
            f"it with that caveat")


def check_preference_file(recipe: Recipe, source: str, already_read: dict | None = None) -> None:
    """Read the user's preference data (a file, a saved folder or a Hub dataset) once at load, so bad data
    fails in seconds, before the policy loads or anything is written: its shape and every row (see
    :func:`~alignkit.data.preferences.read_preferences`), whether the held-out split leaves pairs to train on,
    whether the method can learn from its kind (paired or unpaired), the task made of it and its evaluation
    prompts (see :func:`check_task_data`), and notices about dropped pairs and prompts cut to the context.
    ``already_read`` (data already read, by its settings and the model that cuts its prompts): read and
    notices once, the checks that depend on the recipe's method for every recipe."""
    cfg = recipe.preferences
    if not cfg.is_user_data:
        if DATASETS.entry(recipe.task.dataset).meta.get("from_pairs"):
            raise ConfigError(f"{source}: task.dataset: {recipe.task.dataset} takes its prompts from your "
                              "preference "
                              "data, but preferences.source is generated (sampled from the task's prompts): "
                              "set "
                              f"preferences.source to your data")
        if recipe.eval.prompts:
            try:
                read_prompt_set(recipe.eval.prompts, conversational=False)
            except DataError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        return
    key = repr((to_dict(cfg), recipe.model.name_or_path, recipe.model.prompt_limit))
    pairs = (already_read or {}).get(key)
    first, tokenizer = pairs is None, None
    if first:
        tokenizer = tokenizer_on_disk(recipe.model, default_cache_dir())  # its special tokens are refused
        try:
            pairs = read_preferences(cfg, specials=special_tokens(tokenizer))
        except DataError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if already_read is not None:
            already_read[key] = pairs
    judged = "heldout-reward-model" in (recipe.eval.judge, recipe.gold_reward)  # carves a judge split first
    problem = check_heldout(cfg, pairs.data, recipe.eval.judge_fraction if judged else 0)
    if problem:
        raise ConfigError(f"{source}: preferences.heldout_fraction: {problem}")
    entry = METHODS.entry(recipe.method)
    needs = entry.meta.get("needs", ())
    needs = needs(recipe.method_config(recipe.method)) if callable(needs) else needs
    if getattr(pairs.data, "unpaired", False) and not entry.meta.get("takes_unpaired") and \
            any(Artifact(n) in PAIRED for n in needs):
        raise ConfigError(f"{source}: preferences.source: {cfg.source}: the rows are unpaired (prompt, "
                          "completion, "
                          f"label), which only kto learns from; {recipe.method} needs pairs (prompt, chosen, "
                          "rejected)")
    check_task_data(recipe, source, pairs.data)
    notes = preference_notices(cfg, pairs, recipe.model.prompt_limit, tokenizer, recipe.model.name_or_path) \
        if first else []
    for note in notes:
        warn(note)


PAIRED = (Artifact.TRAIN_PAIRS, Artifact.REWARD_MODEL, Artifact.REWARD_MODEL_4BIT, Artifact.REFERENCE_LOGPS)


def check_task_data(recipe: Recipe, source: str, data) -> None:
    """A task made of the preference data needs held-out prompts to evaluate on (or ``eval.prompts``), and
    ``eval.prompts`` must load and share no prompt with the training side of the split."""
    from_pairs = DATASETS.entry(recipe.task.dataset).meta.get("from_pairs")
    cfg, prompts = recipe.preferences, recipe.eval.prompts
    if from_pairs and not prompts and cfg.heldout_fraction == 0:
        raise ConfigError(f"{source}: preferences.heldout_fraction: task.dataset {recipe.task.dataset} "
                          "evaluates on "
                          f"the held-out prompts of your data, and 0 holds none out: set it above 0 or give "
                          f"eval.prompts")
    if not prompts:
        return
    try:
        evaluation = read_prompt_set(prompts, conversational=data.conversational, split=cfg.split,
                                     config=cfg.config, column=cfg.columns.get("prompt", "prompt"))
    except DataError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    train, _ = data.split(cfg.heldout_fraction, recipe.seed)
    shared = set(evaluation) & set(train.prompts)
    if shared:
        raise ConfigError(f"{source}: eval.prompts: {len(shared)} of its {len(evaluation)} prompts are also "
                          "prompts "
                          f"of the training pairs (e.g. {sorted(shared)[0][:60]!r}); evaluation prompts must "
                          "be "
                          f"unseen in training")


def default_task_problem(recipe: Recipe) -> str | None:
    """Why a run on the user's own data would silently evaluate the IMDb default instead (one line naming the
    keys to set), or None: ``run`` and ``compare`` refuse before anything expensive."""
    prefs, task = recipe.preferences, recipe.task.dataset
    if prefs.is_user_data and task == "imdb":
        return (f"preferences.source is your data ({prefs.source}), but task.dataset is still the IMDb "
                "default: set "
                f"task.dataset=preferences (and gold_reward, eval.judge to judges for your task)")
    if DATASETS.entry(task).meta.get("from_pairs") and recipe.gold_reward == "imdb-sentiment":
        return (f"task.dataset is {task}, but gold_reward is still the IMDb default (imdb-sentiment), which "
                "would "
                "score your replies as movie-review sentiment on every reward axis: set gold_reward to a "
                "score "
                "judge for your task (e.g. heldout-reward-model) and eval.judge to what decides win rates "
                "(gold, "
                f"llm-judge, endpoint-judge)")
    return None


def _relative(spec: str, base: Path) -> str:
    candidate = base / spec
    return str(candidate) if (spec.endswith(".py") or "/" in spec) and candidate.exists() else spec
