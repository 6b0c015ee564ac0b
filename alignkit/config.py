"""Typed, validated configuration: YAML recipes become dataclasses, checked once at load time.

Every config dataclass field is declared with :func:`option`, whose ``help`` is the single source of the
schema's documentation and whose bounds (``gt``, ``ge``, ``le``, ``choices``) are checked here. Errors name
the file and the dotted key path, e.g. ``recipes/dpo.yaml: dpo.beta: must be > 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Union

import yaml

from alignkit.errors import ConfigError

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", **checks: Any) -> Any:
    """A config field with its help text and value checks (gt, ge, lt, le, choices).

    Every number read into a ``float`` field (or a list/dict of floats) must also be finite: YAML's ``.inf``
    and ``.nan`` are refused at load, since no setting of alignkit means anything at infinity."""
    meta = {"help": help, **checks}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: _copy(value), metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------------------
# building dataclasses from plain data


def build(cls: type, data: Any, *, where: str = "", source: str = "recipe") -> Any:
    """Build ``cls`` from ``data`` (a mapping), raising one :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    value = _build_dataclass(cls, data, where, problems)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return value


def _build_dataclass(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where or '<top>'}: expected a mapping, got {_kind(data)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    data = canonical_keys(cls, data, where, problems)
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        path = _join(where, key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(fields)})"
            problems.append(f"{path}: unknown key{hint}")
            continue
        kwargs[key] = _convert(hints[key], raw, path, problems)
        _check_bounds(fields[key], kwargs[key], path, problems)
    missing = [name for name, f in fields.items()
               if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING]
    for name in missing:
        problems.append(f"{_join(where, name)}: required key is missing "
                        f"({fields[name].metadata.get('help', '')})")
    if missing or (where and any(p.startswith(where) for p in problems)):
        return None
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        problems.append(f"{where or '<top>'}: {exc}")
        return None
    # every class's own check, base classes first: a subclass's check adds to its base's, never hides it
    for klass in reversed(type(obj).__mro__):
        check = klass.__dict__.get("check")
        if callable(check):
            for key, message in check(obj) or ():
                problems.append(f"{_join(where, key)}: {message}")
    return obj


def aliases(cls: type) -> dict[str, str]:
    """The other names (trl's) a config class accepts for its keys, ``{alias: canonical}``: the ``ALIASES``
    of the class and its bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        found.update(klass.__dict__.get("ALIASES", {}))
    return found


def canonical_keys(cls: type, data: dict, where: str, problems: list[str]) -> dict:
    """``data`` with every alias renamed to its canonical key (after the class's ``from_aliases`` hook, which
    converts an alias whose meaning differs); an alias given beside its canonical key is a problem."""
    hook = getattr(cls, "from_aliases", None)
    if hook is not None:
        data, problem = hook(dict(data))
        if problem:
            problems.append(f"{_join(where, problem[0])}: {problem[1]}")
    names = aliases(cls)
    out: dict = {}
    for key, value in data.items():
        name = names.get(key, key)
        if name != key and name in data:
            problems.append(f"{_join(where, key)}: is trl's name of {name}, which is also given; give one")
            continue
        out[name] = value
    return out


def _convert(tp: Any, raw: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return raw
    if origin in (Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], raw, path, problems)
        for candidate in inner:  # first type that accepts the value without complaint
            trial: list[str] = []
            value = _convert(candidate, raw, path, trial)
            if not trial:
                return value
        problems.append(f"{path}: expected {_type_name(tp)}, got {_kind(raw)}")
        return raw
    if origin is Literal:
        if raw not in args:
            problems.append(f"{path}: must be one of {', '.join(map(repr, args))}, got {raw!r}")
        return raw
    if origin is list:
        if not isinstance(raw, list):
            problems.append(f"{path}: expected a list, got {_kind(raw)}")
            return raw
        return [_convert(args[0] if args else Any, v, f"{path}[{i}]", problems) for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            problems.append(f"{path}: expected a mapping, got {_kind(raw)}")
            return raw
        value_type = args[1] if len(args) == 2 else Any
        return {k: _convert(value_type, v, _join(path, k), problems) for k, v in raw.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, raw, path, problems)
    if tp is bool:
        if not isinstance(raw, bool):
            problems.append(f"{path}: expected true or false, got {_kind(raw)}")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            problems.append(f"{path}: expected an integer, got {_kind(raw)}")
        return raw
    if tp is float:
        if isinstance(raw, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                raw = float(raw)
            except ValueError:
                pass
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            problems.append(f"{path}: expected a number, got {_kind(raw)}")
            return raw
        if not math.isfinite(raw):
            problems.append(f"{path}: must be a finite number, got {raw}")
            return None  # keeps the bounds checks quiet: one problem per key
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            problems.append(f"{path}: expected a string, got {_kind(raw)}")
        return raw
    return raw


def _check_bounds(f: dataclasses.Field, value: Any, path: str, problems: list[str]) -> None:
    problem = bound_problem(value, f.metadata)
    if problem:
        problems.append(f"{path}: {problem}")


def bound_problem(value: Any, checks: dict) -> str | None:
    """Why ``value`` breaks ``checks`` (``gt``, ``ge``, ``lt``, ``le``, ``choices``), or None; the same
    vocabulary as :func:`option`, shared with loss parameters (``register_loss(name, bounds=...)``)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if "choices" in checks and value not in checks["choices"]:
        return f"must be one of {', '.join(map(str, checks['choices']))}, got {value!r}"
    if isinstance(value, str):
        return None
    for key, test, word in (("gt", float.__gt__, ">"), ("ge", float.__ge__, ">="),
                            ("lt", float.__lt__, "<"), ("le", float.__le__, "<=")):
        if key in checks and not test(float(value), float(checks[key])):
            return f"must be {word} {checks[key]}, got {value}"
    return None


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


# --------------------------------------------------------------------------------------------------
# YAML files and --set overrides


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no Python objects are ever constructed), refusing duplicate
    mapping keys, which ``safe_load`` silently resolves to the last value."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"line {line}: duplicate key {key!r} (first set on line {seen[key]})")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML as plain data with :class:`StrictLoader` (the only way alignkit reads a recipe)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, turning a missing file, a syntax error or a duplicate key into one clear line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe: {exc}") from None
    try:
        data = load_yaml_text(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE, e.g. dpo.beta=0.5 (empty key in "
                              f"{key!r})")
        try:
            value = load_yaml_text(text) if text != "" else ""
        except ConfigError as exc:
            raise ConfigError(f"--set {item}: {exc}") from None
        except yaml.YAMLError:
            value = text
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def to_dict(obj: Any) -> Any:
    """A JSON-ready plain copy of a config object."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (in sorted order) where two nested mappings differ, with both values; None
    if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), _join(path, key))
            if found:
                return found
        return None
    return None if a == b else (path, a, b)


def identity_dict(obj: Any) -> Any:
    """:func:`to_dict` without the fields declared ``option(..., identity=False)``: settings that change how a
    result is computed (memory, speed), not the result, and so no cache key."""
    if dataclasses.is_dataclass(obj):
        return {f.name: identity_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("identity", True)}
    if isinstance(obj, dict):
        return {k: identity_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [identity_dict(v) for v in obj]
    return obj


def not_identity(cls: type) -> tuple[str, ...]:
    """The fields of a config dataclass declared ``identity=False``."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("identity", True) is False)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of config objects and upstream keys: the cache key of a stage's artifact (fields
    declared ``identity=False`` left out)."""
    blob = json.dumps([identity_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_schema(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) rows for docs and ``alignkit list``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_schema(hints[f.name], key))
            continue
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else "required")
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
