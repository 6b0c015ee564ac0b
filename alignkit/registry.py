"""One generic registry for methods, losses, rewards, datasets and model aliases, plus plugin discovery.

Built-ins and plugins register the same way, through the decorators below. Plugin code runs only from
places the user installed or named: the ``alignkit.plugins`` entry-point group (installed packages),
modules or paths named by ``--plugins`` or a recipe's ``plugins:`` list, and, in a source checkout of
alignkit only, the project's own example folder ``plugins/`` beside the package. The working directory
is never scanned: running alignkit inside a folder must not execute whatever ``plugins/*.py`` it holds,
and ``alignkit eval`` never loads the ``plugins:`` a run folder's manifest records (the user names them
again).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from alignkit.errors import AlignkitError, UnknownNameError
from alignkit.signatures import loss_signature_problem

ENTRY_POINT_GROUP = "alignkit.plugins"


@dataclass(frozen=True)
class Registration:
    """A registered object with its capability flags (e.g. ``config`` class, ``reference_free``)."""

    name: str
    obj: Any
    meta: dict = field(default_factory=dict)
    source: str = "builtin"

    @property
    def doc(self) -> str:
        text = (getattr(self.obj, "__doc__", None) or "").strip()
        return text.splitlines()[0] if text else ""


class Registry:
    """Maps names to objects of one kind; duplicate and unknown names are clear errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Registration] = {}

    def register(self, name: str, obj: Any = None, **meta: Any):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator."""

        def add(target: Any) -> Any:
            previous = self._entries.get(name)
            if previous is not None and previous.obj is not target:
                if _same_definition(previous.obj, target):
                    return target  # the same plugin file imported twice under different module names
                raise AlignkitError(
                    f"{self.kind} {name!r} is already registered by {previous.source}; "
                    f"choose another name (registered {self.kind}{'es' if self.kind.endswith('s') else 's'}: "
                    f"{', '.join(sorted(self._entries))})"
                )
            self._entries[name] = Registration(name, target, dict(meta), _current_source())
            return target

        return add if obj is None else add(obj)

    def entry(self, name: str) -> Registration:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Registration]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _same_definition(a: Any, b: Any) -> bool:
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is not None and code_b is not None:
        return (code_a.co_filename, code_a.co_firstlineno) == (code_b.co_filename, code_b.co_firstlineno)
    return getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None) and getattr(
        a, "__module__", None
    ) == getattr(b, "__module__", None)


METHODS = Registry("method")
LOSSES = Registry("loss")
REWARDS = Registry("reward")
DATASETS = Registry("dataset")
MODELS = Registry("model")
REGISTRIES = {"methods": METHODS, "losses": LOSSES, "rewards": REWARDS, "datasets": DATASETS,
              "models": MODELS}


def register_method(name: str, **meta: Any) -> Callable:
    """Register a training method: ``fn(workspace, config) -> artifact``; pass ``config=`` its dataclass."""
    return METHODS.register(name, **meta)


def register_loss(name: str, *, bounds: dict[str, dict] | None = None, **meta: Any) -> Callable:
    """Register a preference loss ``loss(logps, *, beta, param=default, ...) -> LossOutput`` (see
    ``alignkit.losses``). ``bounds`` gives its parameters' ranges in :func:`~alignkit.config.option`'s
    words, e.g. ``{"label_smoothing": {"ge": 0, "lt": 0.5}}``; recipes are checked against them at load.
    The signature is checked here, at registration; the output on a dry call when a recipe selects it."""

    def add(loss: Callable) -> Callable:
        problem = loss_signature_problem(loss)
        if problem:
            raise AlignkitError(f"loss {name!r} ({_current_source()}) {problem}")
        return LOSSES.register(name, bounds=dict(bounds or {}), **meta)(loss)

    return add


def register_reward(name: str, **meta: Any) -> Callable:
    """Register a reward source or judge: ``build(workspace) -> callable(prompts, completions) -> scores``
    (a gold reward may wrap it in a ``RecordedReward`` with the cache key and description the run's manifest
    records, see ``alignkit.stages.workspace``), or, with ``pairwise=True``, ``build(workspace) ->
    PairwiseJudge`` (``compare(prompts, a, b)``, see ``alignkit.eval.judges``), usable only as ``eval.judge``.
    A gold reward with settings passes ``options=`` its config dataclass
    (validated against ``gold_reward_options`` at load); a judge, ``judge_options=``
    (validated against ``eval.judge_options``). ``proxy=True`` marks the learned reward model methods
    optimise: it may not judge them unless ``eval.allow_self_judging``. ``identity=fn(recipe) -> str | None``
    adds what the reward is made of (shipped weights' checksums) to the keys of the stages it labels."""
    return REWARDS.register(name, **meta)


def register_dataset(name: str, **meta: Any) -> Callable:
    """Register a task dataset: ``build(task_config) -> Task`` (prompts, demonstrations, splits)."""
    return DATASETS.register(name, **meta)


def register_model(name: str, **meta: Any) -> Callable:
    """Register a ``builtin:NAME`` model alias: ``build(cache_dir, runtime) -> local model folder``."""
    return MODELS.register(name, **meta)


# --------------------------------------------------------------------------------------------------
# plugin discovery

# modules whose import registers alignkit's own entries (kept out of package __init__ files so that
# importing one submodule stays cheap)
BUILTIN_MODULES = (
    "alignkit.losses",
    "alignkit.data.imdb",
    "alignkit.data.pairs_task",
    "alignkit.models.builtin",
    "alignkit.rewards.builtin",
    "alignkit.rewards.hf_classifier",
    "alignkit.rewards.llm_judge",
    "alignkit.methods.dpo",
    "alignkit.methods.ppo",
    "alignkit.methods.reward_model",
    "alignkit.methods.sft",
    "alignkit.methods.preferred_ft",
    "alignkit.methods.unlikelihood",
    "alignkit.methods.kto",
    "alignkit.methods.best_of_n",
    "alignkit.methods.online_rl",
)

_source_stack: list[str] = []
_loaded: set[str] = set()
_builtins_loaded = False


def _current_source() -> str:
    return _source_stack[-1] if _source_stack else "builtin"


def load_builtins() -> None:
    """Import the modules whose decorators register alignkit's own methods, losses, rewards, ..."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def default_plugin_dirs() -> list[Path]:
    """The example ``plugins/`` folder of an alignkit source checkout (beside the package, in a folder
    whose setup.cfg or pyproject.toml names the project ``alignkit``), or nothing. An installed alignkit
    has no such folder (a ``site-packages/plugins`` belongs to some other package, so it is not scanned),
    and the working directory is never scanned."""
    root = Path(__file__).resolve().parent.parent
    folder = root / "plugins"
    return [folder] if folder.is_dir() and _is_alignkit_checkout(root) else []


def _is_alignkit_checkout(root: Path) -> bool:
    """Whether ``root`` is the alignkit project itself: its metadata names the project ``alignkit``."""
    names = {"name=alignkit", 'name="alignkit"', "name='alignkit'"}
    for metadata in (root / "setup.cfg", root / "pyproject.toml"):
        try:
            lines = metadata.read_text().splitlines()
        except OSError:
            continue
        if any(line.replace(" ", "") in names for line in lines):
            return True
    return False


def load_plugins(extra: Iterable[str] = (), *, scan_default_dirs: bool = True) -> None:
    """Load built-ins, entry-point plugins, the default ``plugins/`` folders and ``extra`` modules/paths."""
    load_builtins()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_once(f"entry point {ep.name}", lambda ep=ep: ep.load())
    if scan_default_dirs:
        for folder in default_plugin_dirs():
            for file in sorted(folder.glob("*.py")):
                if not file.name.startswith("_"):
                    load_plugin(str(file))
    for spec in extra:
        load_plugin(spec)


def load_plugin(spec: str) -> None:
    """Import one plugin given as a dotted module name, a ``.py`` file, or a folder of ``.py`` files."""
    path = Path(spec)
    if path.is_dir():
        for file in sorted(path.glob("*.py")):
            if not file.name.startswith("_"):
                load_plugin(str(file))
        return
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise AlignkitError(f"plugin file not found: {spec}")
        _load_once(str(path.resolve()), lambda: _import_file(path.resolve()))
        return
    _load_once(spec, lambda: _import_module(spec))


def _load_once(key: str, loader: Callable[[], Any]) -> None:
    if key in _loaded:
        return
    _loaded.add(key)
    _source_stack.append(f"plugin {key}")
    try:
        loader()
    except AlignkitError:
        _loaded.discard(key)  # a failed plugin fails again when named again, never silently passes
        raise
    except Exception as exc:  # a plugin's own bug: say which plugin, keep it to one line
        _loaded.discard(key)
        raise AlignkitError(f"plugin {key} failed to load: {type(exc).__name__}: {exc}") from exc
    finally:
        _source_stack.pop()


def _import_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise AlignkitError(f"plugin module not found: {name}") from exc
        raise


def _import_file(path: Path) -> None:
    module_name = f"alignkit_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)


def describe() -> dict[str, list[dict[str, str]]]:
    """Everything registered, for ``alignkit list``, each with the first line of its description."""
    return {kind: [{"name": e.name, "source": e.source, "doc": e.doc} for e in reg.entries()]
            for kind, reg in REGISTRIES.items()}
