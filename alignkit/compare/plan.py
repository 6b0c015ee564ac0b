"""``alignkit compare``: several methods on one task, as ordinary runs that share every shared stage.

A comparison is a list of entries (a method name, a recipe file, or a labelled variant
``LABEL=BASE:k=v,...``), expanded by sweeps and training seeds into runs under ``DIR/runs/<label>/``. Every
entry must agree on the shared sections (task, model/reference, gold judge, pairs, evaluation), so the
comparison is fair by construction; the shared stages are cached once and reused. A finished run whose
training inputs match is reused (re-evaluated only when just its evaluation settings changed). The outputs are
built from the run directories alone (:mod:`alignkit.report`), exactly as ``alignkit report`` builds them.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from alignkit.artifacts import Artifact
from alignkit.compare.executors import ExecutorSettings
from alignkit.config import ConfigError, apply_overrides, load_yaml_text, read_yaml, to_dict
from alignkit.errors import AlignkitError, warn
from alignkit.eval.verdict import MARGIN
from alignkit.recipe import Recipe, default_task_problem, recipe_from_data, unread_override
from alignkit.recipes.bundled import BUNDLED, bundled_recipe, resolve_recipe_path
from alignkit.registry import METHODS, load_plugins
from alignkit.report.records import SHARED, check_shared
from alignkit.run.pipeline import method_needs
from alignkit.runfolder import ComparisonEntry

DEFAULT_TASK = "imdb"
# the last: alignkit.compare.until_converged
COMPARE_KEYS = ("name", "entries", "sweep", "seeds", "plugins", "until_converged")


@dataclass
class PlannedRun:
    """One run of a comparison: an entry at one sweep point and one training seed."""

    label: str            # unique, also the run folder's name
    group: str            # the entry it came from: one colour, one frontier
    method: str
    raw: dict             # the recipe as plain data
    sweep: dict[str, Any] = field(default_factory=dict)
    seed_index: int = 0
    recipe: Recipe | None = None

    def entry(self, comparison: str | None = None, round: int | None = None) -> ComparisonEntry:
        """Its place in the comparison, as the worker, the run's manifest and the report see it."""
        return ComparisonEntry(self.label, self.group, self.sweep, self.seed_index, comparison, round)


def _method_of(raw: dict, source: str) -> str:
    method = raw.get("method")
    if not isinstance(method, str):
        raise ConfigError(f"{source}: method: required key is missing (a registered method, see `alignkit "
                          "list`)")
    return method


def default_recipe(method: str, dataset: str = DEFAULT_TASK) -> dict:
    """A method's (or a named variant's, e.g. ``simpo``) default recipe for a task: the bundled
    ``<name>_<dataset>.yaml`` (the one place its defaults for that task live), else the method's config
    defaults."""
    path = bundled_recipe(f"{method}_{dataset}")
    return read_yaml(path) if path else {"method": method}


def named_recipes(dataset: str = DEFAULT_TASK) -> list[str]:
    """The entry names with a bundled recipe for ``dataset``: methods and variants such as ipo or simpo."""
    suffix = f"_{dataset}.yaml"
    return sorted(
        p.name[: -len(suffix)] for p in BUNDLED.glob(f"*{suffix}") if not p.name.startswith("compare_")
    )


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key),
                                                                                          dict) \
            else copy.deepcopy(value)
    return out


def _parse_value(text: str) -> Any:
    try:
        return load_yaml_text(text)
    except yaml.YAMLError:
        return text


VARIANT = re.compile(r"^(?P<label>[A-Za-z0-9_.@-]+)=(?P<base>[^:=]+)(?::(?P<sets>.*))?$")


def parse_entry(spec: str, dataset: str = DEFAULT_TASK) -> tuple[str, dict]:
    """An ENTRY as (label, recipe data): ``dpo`` (a method's default recipe), ``path.yaml`` (a recipe file),
    or ``LABEL=BASE:key=value,key=value`` (BASE a method or recipe file; a key without a dot belongs to
    BASE's method section, e.g. ``ipo=dpo:loss=ipo`` or ``ppo_gt=ppo:reward=gold,value_init=policy``)."""
    match = VARIANT.match(spec)
    label, base, sets = (match["label"], match["base"], match["sets"]) if match else (None, spec, None)
    named = base in METHODS or bundled_recipe(f"{base}_{dataset}") is not None  # a method, or ipo, simpo, ...
    if named:
        raw = default_recipe(base, dataset)
    else:
        path = resolve_recipe_path(base)
        if not path.is_file():
            raise ConfigError(f"compare: entry {spec!r}: not a registered method "
                              f"({', '.join(METHODS.names())}), a bundled recipe name "
                              f"({', '.join(named_recipes(dataset))}) nor a recipe file")
        raw = read_yaml(path)
        if "entries" in raw:
            raise ConfigError(f"compare: entry {spec!r}: {path} is a whole comparison; pass it as the only "
                              "entry")
    method = _method_of(raw, base)
    overrides = []
    for item in filter(None, (sets or "").split(",")):
        if "=" not in item:
            raise ConfigError(f"compare: entry {spec!r}: expected KEY=VALUE after ':', got {item!r}")
        key, value = item.split("=", 1)
        overrides.append(f"{key if '.' in key else f'{method}.{key}'}={value}")
    apply_overrides(raw, overrides)
    return label or (base if named else str(raw.get("name") or Path(base).stem)), raw


# sections of shared stages: they reach every entry (each entry that uses the stage reads them; it is one
# stage)
SHARED_STAGE_SECTIONS = ("reward_model",)


def _scoped(key: str, method: str) -> bool:
    """A dotted key whose first part is a method's section applies only to that method's entries; a shared
    stage's section (``reward_model``) and every other key apply to all entries."""
    head = key.split(".", 1)[0]
    return head not in METHODS or head == method or head in SHARED_STAGE_SECTIONS


def _sweep_values(spec: str) -> tuple[str, list]:
    if "=" not in spec:
        raise ConfigError(f"--sweep {spec}: expected KEY=V1,V2,...")
    key, values = spec.split("=", 1)
    parsed = [_parse_value(v) for v in values.split(",") if v != ""]
    if not parsed:
        raise ConfigError(f"--sweep {spec}: no values")
    return key.strip(), parsed


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(groups: list[tuple[str, dict, dict[str, list]]], seeds: int) -> list[PlannedRun]:
    """Every entry at every point of its sweeps (cartesian product over its keys) and every training seed."""
    entries = []
    for group, raw, sweeps in groups:
        method = raw["method"]
        keys = [k for k in sweeps if _scoped(k, method)]
        for point in itertools.product(*(sweeps[k] for k in keys)):
            swept = dict(zip(keys, point))
            data = copy.deepcopy(raw)
            apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in swept.items()])
            suffix = "".join(f"@{k.split('.')[-1]}={_format(v)}" for k, v in swept.items())
            for s in range(seeds):
                run = copy.deepcopy(data)
                if seeds > 1:
                    run["train_seed"] = int(run.get("seed", 0)) + s
                label = group + suffix + (f"#seed{s}" if seeds > 1 else "")
                entries.append(PlannedRun(label, group, method, run, swept, s))
    return entries


@dataclass(frozen=True)
class ComparisonPlan:
    """What ``alignkit compare`` will run, validated and complete when made: entries, the shared sections,
    where it writes, how, and the command line that asked for it (recorded in compare.json and report.md)."""

    name: str
    entries: list[PlannedRun]
    out: Path
    argv: list[str]
    overwrite: bool = False  # replace finished runs whose training identity changed
    # what a worker process loads (absolute paths or modules)
    plugins: list[str] = field(default_factory=list)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)  # phase 2: sequential, --jobs N, ray
    margin: float = MARGIN  # the verdicts' equivalence margin in gold reward (--margin)


def command_line(specs: Iterable[str], *, sweeps: Iterable[str] = (), seeds: int | None = None,
                 temperatures: list[float] | None = None, overrides: Iterable[str] = (),
                 plugins: Iterable[str] = (), out: Path | None = None, overwrite: bool = False,
                 replicates: int | None = None, until_converged: bool = False,
                 executor: ExecutorSettings | None = None, threads: str | None = None,
                 margin: float | None = None, decide: bool = False, budget: str | None = None) -> list[str]:
    """``alignkit compare`` with every option given, rebuilt in one order (the trl-style flags as the
    ``--set`` they stand for): the one command line a comparison records."""
    executor = executor or ExecutorSettings()
    return ["alignkit", "compare", *specs, *(f"--sweep {s}" for s in sweeps),
            *([f"--seeds {seeds}"] if seeds else []),
            *([f"--temperatures {','.join(f'{t:g}' for t in temperatures)}"] if temperatures else []),
            *([f"--replicates {replicates}"] if replicates else []), *([f"--out {out}"] if out else []),
            *(f"--set {o}" for o in overrides), *(f"--plugins {p}" for p in plugins),
            *(["--overwrite"] if overwrite else []), *(["--until-converged"] if until_converged else []),
            *([f"--executor {executor.kind}"] if executor.kind != "local" else []),
            *([f"--jobs {executor.jobs}"] if executor.jobs != 1 else []),
            *([f"--gpus-per-entry {executor.gpus_per_entry}"] if executor.gpus_per_entry is not None else []),
            *([f"--ray-address {executor.ray_address}"] if executor.ray_address else []),
            *([f"--threads {threads}"] if threads else []),
            *([f"--margin {margin:g}"] if margin is not None else []), *(["--decide"] if decide else []),
            *([f"--budget {budget}"] if budget else [])]


def plan_comparison(specs: Iterable[str], *, sweeps: Iterable[str] = (), seeds: int | None = None,
                    temperatures: list[float] | None = None, overrides: Iterable[str] = (),
                    plugins: Iterable[str] = (), out: Path | None = None, overwrite: bool = False,
                    executor: ExecutorSettings | None = None, margin: float | None = None,
                    argv: list[str] | None = None) -> ComparisonPlan:
    """Turn the command line (or a comparison YAML) into validated entries; refuse unfair comparisons.
    ``argv``: the command line to record (default: :func:`command_line` of these options)."""
    specs, sweeps, overrides, plugins = list(specs), list(sweeps), list(overrides), list(plugins)
    executor = executor or ExecutorSettings()
    if argv is None:
        argv = command_line(specs, sweeps=sweeps, seeds=seeds, temperatures=temperatures, overrides=overrides,
                            plugins=plugins, out=out, overwrite=overwrite, executor=executor, margin=margin)
    load_plugins(plugins)
    plugins = [str(Path(p).resolve()) if Path(p).exists() else p for p in plugins]
    compare_file = None
    if len(specs) == 1 and not VARIANT.match(specs[0]) and specs[0] not in METHODS:
        path = resolve_recipe_path(specs[0])
        if path.is_file() and "entries" in (data := read_yaml(path)):
            compare_file = (path, data)
    if compare_file:
        groups, name, file_seeds = _groups_from_file(*compare_file)
        plugins += _file_plugins(*compare_file)
    else:
        groups = [(label, raw, {}) for label, raw in (parse_entry(s) for s in specs)]
        name, file_seeds = "compare", 1
    if not groups:
        raise ConfigError("compare: no entries (name methods, recipe files or LABEL=BASE:key=value variants)")
    cli_sweeps = dict(_sweep_values(s) for s in sweeps)
    _check_sweeps_match(groups, cli_sweeps, sweeps)
    extra = list(overrides) + (
        [f"eval.temperatures={json.dumps(temperatures)}"] if temperatures is not None else []
    )
    for _, raw, entry_sweeps in groups:
        apply_overrides(raw, [o for o in extra if _scoped(o.split("=", 1)[0], raw["method"])])
        entry_sweeps.update(cli_sweeps)
    entries = expand(groups, seeds or file_seeds)
    _check_labels(entries)
    preferences_read: dict = {}  # the entries share their preference data: read it (and say what of it) once
    for entry in entries:
        entry.raw["name"] = entry.label
        entry.recipe = recipe_from_data(entry.raw, f"compare entry {entry.label}", Path.cwd(),
                                        preferences_read=preferences_read)
    problem = unread_override([e.recipe for e in entries], overrides)
    if problem:  # a warning, not an error: one list of fast overrides for every method is a common idiom
        warn(f"compare: {problem}")
    pushed = next((e for e in entries if e.recipe.push_to_hub), None)
    if pushed:  # one repository cannot hold every entry's policy
        raise ConfigError(f"compare entry {pushed.label}: push_to_hub: a comparison does not push; push a "
                          "run "
                          "of it with alignkit push "
                          f"{Path(out or Path('runs') / name) / 'runs' / pushed.label} REPO_ID")
    check_shared([(e.label, *resolved_recipe(e.recipe)) for e in entries])
    problem = default_task_problem(entries[0].recipe)  # every entry shares the task, pairs and judge
    if problem:
        raise AlignkitError(f"compare: {problem}")
    return ComparisonPlan(name, entries, Path(out or Path("runs") / name), list(argv), overwrite, plugins,
                          executor, MARGIN if margin is None else margin)


def _check_sweeps_match(groups: list, cli_sweeps: dict[str, list], specs: Iterable[str]) -> None:
    """A sweep that applies to no entry is an error, not a silently dropped axis."""
    methods = sorted({raw["method"] for _, raw, _ in groups})
    given = {s.split("=", 1)[0].strip(): s for s in specs}
    keys = {**{k: f"--sweep {given.get(k, k)[:80]}" for k in cli_sweeps},
            **{k: f"sweep {k}" for _, _, own in groups for k in own}}
    for key, where in keys.items():
        if not any(_scoped(key, raw["method"]) for _, raw, _ in groups):
            raise ConfigError(f"compare: {where}: applies to no entry ({key.split('.', 1)[0]} is not the "
                              "method of "
                              f"any; the entries' methods: {', '.join(methods)})")


def _groups_from_file(path: Path, data: dict) -> tuple[list, str, int]:
    """A comparison YAML: shared sections once, ``entries`` (each a method name, a recipe file, or a mapping
    with ``label``, ``method``, its own sections and an optional ``sweep``), a top-level ``sweep`` and
    ``seeds``."""
    if not isinstance(data["entries"], list):
        raise ConfigError(f"{path}: entries: expected a list")
    shared = {k: v for k, v in data.items() if k not in COMPARE_KEYS}
    top_sweep = data.get("sweep") or {}
    seeds = data.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"{path}: seeds: expected a positive integer, got {seeds!r}")
    if not isinstance(top_sweep, dict):
        raise ConfigError(f"{path}: sweep: expected a mapping of KEY: [values]")
    load_plugins(_file_plugins(path, data))
    dataset = (shared.get("task") or {}).get("dataset", DEFAULT_TASK)
    groups = []
    for i, item in enumerate(data["entries"]):
        where = f"{path}: entries[{i}]"
        if isinstance(item, str):
            label, raw = parse_entry(item, dataset)
            own_sweep = {}
        elif isinstance(item, dict):
            item = dict(item)
            method = _method_of(item, where)
            label, own_sweep = str(item.pop("label", method)), item.pop("sweep", {}) or {}
            if not isinstance(own_sweep, dict):
                raise ConfigError(f"{where}.sweep: expected a mapping of KEY: [values]")
            raw = default_recipe(method, dataset) if method in METHODS else {"method": method}
            raw = _deep_merge({k: v for k, v in raw.items() if k == "method" or k in METHODS}, item)
        else:
            raise ConfigError(f"{where}: expected a method name, a recipe file or a mapping")
        raw = _deep_merge(raw, {k: v for k, v in shared.items() if k not in raw or k in SHARED})
        raw = _deep_merge(raw, {k: v for k, v in shared.items() if k in METHODS and k != raw["method"]})
        sweep = {**{str(k): _as_list(v, f"{path}: sweep.{k}") for k, v in top_sweep.items()},
                 **{str(k if "." in str(k) else f"{raw['method']}.{k}"): _as_list(v, f"{where}.sweep.{k}")
                    for k, v in own_sweep.items()}}
        groups.append((label, raw, sweep))
    return groups, str(data.get("name") or path.stem), seeds


def _file_plugins(path: Path, data: dict) -> list[str]:
    """A comparison file's plugins: paths relative to the file (made absolute for worker processes)
    or modules."""
    return [
        str((path.parent / p).resolve()) if (path.parent / p).exists() else p
        for p in data.get("plugins") or []
    ]


def _as_list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of values")
    return value


def _check_labels(entries: list[PlannedRun]) -> None:
    seen: dict[str, PlannedRun] = {}
    for entry in entries:
        if not re.fullmatch(r"[A-Za-z0-9_.@=#-]+", entry.label):
            raise ConfigError(f"compare: entry label {entry.label!r}: use letters, digits and _ . - only")
        if entry.label in seen:
            raise ConfigError(f"compare: two entries are labelled {entry.label!r}; label variants with "
                              f"LABEL=BASE:key=value")
        seen[entry.label] = entry


def resolved_recipe(recipe: Recipe) -> tuple[dict, bool]:
    """A recipe as plain data with its reward-model settings filled in, and whether its method uses them."""
    recipe.method_config("reward_model")
    uses = Artifact.REWARD_MODEL in method_needs(recipe.method, recipe.method_config(recipe.method))
    return to_dict(recipe), uses
