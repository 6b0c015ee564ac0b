"""No setting is accepted and then ignored. Every key of every config section, read from the recipe's
dataclasses
(so a key added later is swept too), is set to another valid-looking value through each command that takes
``--set``: it fails at load with one line, or (a method section no run of the command reads) is named in a
one-line warning, or it reaches the recipe the command would run and record
(the manifest's ``recipe``) and changes what is trained (the training identity), a shared stage (its cache
key),
or is one of the declared kinds that change neither: evaluation-only, where results go, how a step is
computed.
Nothing trains here: the recipe each command would use is checked, not its run."""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.config import ConfigError, not_identity, to_dict
from alignkit.errors import AlignkitError
from alignkit.models.config import ModelConfig
from alignkit.recipe import Recipe, load_recipe, unread_override
from alignkit.registry import METHODS, load_builtins
from alignkit.run.decision import EVAL_ONLY, OUTPUTS, SAME_UPDATE, check_evaluation_only, training_identity
from alignkit.stages.keys import StageKeys

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
load_builtins()
# keys that change neither the training identity nor a cache key, and why that is right
DECLARED = {
    "name": "the run folder's name (runs/NAME)", "device": "where it runs, not what",
    "plugins": "what is importable",
    **{k: "where results go, what is kept on the way" for k in OUTPUTS},
    **{f"eval.{k}": "evaluation only (alignkit eval changes it without retraining)" for k in EVAL_ONLY},
    **{f"model.{k}": "memory/speed, not the result" for k in not_identity(ModelConfig)},
}


def _inner(tp):
    """``Optional[X]`` -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")) and \
        len(args) == 1 else tp


def leaf_keys(cls, prefix: str = "") -> list[tuple[str, dataclasses.Field, object]]:
    """(dotted key, field, type) of every settable leaf of a config dataclass; an optional section
    (``model.lora``) is a key itself and its fields are keys too."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, key = _inner(hints[f.name]), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            if f.default is None:
                out.append((key, f, tp))
            out.extend(leaf_keys(tp, key + "."))
        else:
            out.append((key, f, tp))
    return out


def other_value(f: dataclasses.Field, tp, current):
    """A value for the key that differs from ``current`` and respects its declared bounds where it can."""
    meta = f.metadata
    if "choices" in meta:
        return next(c for c in meta["choices"] if c != current)
    if dataclasses.is_dataclass(tp):
        return {} if current is None else None
    origin = typing.get_origin(tp)
    if tp is bool:
        return not current
    if tp is int:
        value = (current or 0) + 1
        return value if "le" not in meta or value <= meta["le"] else (current or 0) - 1
    if tp is float:
        base = current if current is not None else 0.5
        value = base + 0.05 if base + 0.05 < meta.get("lt", meta.get("le", 1e9)) else base * 0.5
        return round(value, 6)
    if tp is str:
        return (current or "x") + "-other"
    if origin is list:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return (
            [0.5]
            if inner is float
            else [1]
            if inner is int
            else ["tensorboard"]
            if f.name == "report_to"
            else ["c_attn"]
            if f.name == "target_modules"
            else ["other"]
        )
    if origin is dict:
        return {"prompt": "question"} if f.name == "columns" else {"other": 1}
    return "other"


def at(data: dict, key: str):
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def resolved(method: str, extra: list[str]) -> Recipe:
    recipe = load_recipe(None, [f"method={method}", *extra])
    recipe.method_config("reward_model")  # what compare and the manifest resolve too
    return recipe


def sweep_cases():
    """(method whose run reads the key, dotted key) for every key of every section."""
    cases = [("dpo", key) for key, _, _ in leaf_keys(Recipe) if key not in ("method",)]
    for method in sorted(METHODS.names()):
        cases += [(method, f"{method}.{key}") for key, _,
                  _ in leaf_keys(METHODS.entry(method).meta["config"])]
    cases += [("ppo", f"reward_model.{key}") for key, _,
              _ in leaf_keys(METHODS.entry("reward_model").meta["config"])]
    return cases


def field_of(key: str):
    head, _, rest = key.partition(".")
    cls = METHODS.entry(head).meta["config"] if head in METHODS else Recipe
    found = {k: (f, tp) for k, f, tp in leaf_keys(cls)}
    return found[rest if head in METHODS else key]


def applied_or_refused(method: str, key: str, tmp_path: Path, base: list[str] = ()) -> str:
    """'refused' (one line) or 'applied' (reached the recipe and changed what is run or is declared); fails
    the
    test otherwise. ``base`` sets up what a key depends on (``model.lora`` for its fields)."""
    f, tp = field_of(key)
    setup = [*base, "model.lora={r: 4}"] if key.startswith("model.lora.") else list(base)
    before = resolved(method, setup)
    current = at(to_dict(before), key if not key.split(".")[0] in METHODS else f"methods.{key}")
    value = other_value(f, tp, current)
    override = f"{key}={json.dumps(value)}"
    try:
        after = resolved(method, [*setup, override])
    except (ConfigError, AlignkitError) as exc:
        msg, names = str(exc), (key.split(".")[-1], key.split(".")[0])  # its own name or its section's
        assert "\n" not in msg and any(name in msg for name in names), msg
        return "refused"
    problem = unread_override([after], [override])
    if problem:  # a section no run here reads: run refuses it in one line (compare warns: see below)
        assert "\n" not in problem and f"{key.split('.')[0]} settings would change nothing" in problem
        return "refused"
    recorded = to_dict(after)
    path = f"methods.{key}" if key.split(".")[0] in METHODS else key
    assert at(recorded, path) == value or (value == {} and at(recorded, path) is not None), \
        f"--set {override}: accepted but the recipe records {at(recorded, path)!r}"
    if key in DECLARED or (key.split(".")[0] == method and key.split(".")[-1] in SAME_UPDATE):
        return "applied"
    keys_before, keys_after = StageKeys(before, tmp_path).all(), StageKeys(after, tmp_path).all()
    assert training_identity(to_dict(before)) != training_identity(recorded) or keys_before != keys_after, \
        f"--set {override}: accepted, recorded, yet it changes neither what is trained nor any shared stage"
    return "applied"


@pytest.mark.parametrize("method, key", sweep_cases(), ids=lambda v: str(v))
def test_run_applies_or_refuses_every_key(method, key, tmp_path):
    applied_or_refused(method, key, tmp_path)


def test_the_sweep_covers_every_section():
    keys = {key for _, key in sweep_cases()}
    for section in ("model.lora.r", "task.heldout_fraction", "preferences.source", "eval.judge", "report_to",
                    "save_every_steps", "dpo.beta", "ppo.target_kl", "reward_model.lr",
                    "grpo.num_generations"):
        assert section in keys
    assert len(keys) > 150


@pytest.mark.parametrize("section", sorted({"ppo", "grpo", "kto", "sft"}))
def test_run_refuses_a_section_it_does_not_read_in_one_line(section, tmp_path, monkeypatch):
    monkeypatch.setattr("alignkit.run.pipeline.run_recipe", lambda recipe, run_dir, overwrite=False: {})
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(tmp_path / "o"),
                                       "--set", f"{section}.lr=0.001", "--set", "dpo.beta=0.2"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"alignkit: error: --set {section}.lr=0.001: {section} settings would change nothing: no run here "
        "uses "
        f"{section} (methods: dpo; reward_model is read by methods that train on a reward model)"]
    assert not (tmp_path / "o").exists()


def test_reward_model_settings_apply_only_where_a_reward_model_trains(tmp_path):
    assert applied_or_refused("ppo", "reward_model.lr", tmp_path) == "applied"
    assert applied_or_refused("dpo", "reward_model.lr", tmp_path) == "refused"
    assert applied_or_refused("dpo", "reward_model.lr", tmp_path,
                              ["eval.judge=heldout-reward-model"]) == "applied"


def test_compare_warns_of_a_setting_no_entry_reads(capsys):
    """compare warns instead of refusing: one list of fast overrides for every method of a comparison is a
    common idiom, and the entries that read a section do take it."""
    from alignkit.compare.plan import plan_comparison
    plan_comparison(["dpo", "ipo=dpo:loss=ipo"], overrides=["ppo.kl_coef=0.3"])
    assert "alignkit: warning: compare: --set ppo.kl_coef=0.3: ppo settings would change nothing" in \
        capsys.readouterr().err
    plan_comparison(["dpo", "ppo"], overrides=["reward_model.lr=0.001", "ppo.kl_coef=0.3"])
    assert "would change nothing" not in capsys.readouterr().err


@pytest.mark.parametrize("key", [*(k for k, _, _ in leaf_keys(Recipe) if k not in ("method",)),
                                 *(f"dpo.{k}" for k, _, _ in leaf_keys(METHODS.entry("dpo").meta["config"]))])
def test_eval_takes_evaluation_keys_and_refuses_the_rest(key, tmp_path):
    """``alignkit eval`` on a recorded dpo run: an eval.* key (or report_to, device) is accepted and reaches
    the recipe it evaluates with; every other key is refused in one line (never written into the record)."""
    f, tp = field_of(key)
    setup = ["model.lora={r: 4}"] if key.startswith("model.lora.") else []
    recorded = to_dict(resolved("dpo", setup))
    path = f"methods.{key}" if key.startswith("dpo.") else key
    value = other_value(f, tp, at(recorded, path))
    try:
        wanted = to_dict(resolved("dpo", [*setup, f"{key}={json.dumps(value)}"]))
    except (ConfigError, AlignkitError) as exc:
        assert "\n" not in str(exc)
        return
    evaluation = key.startswith("eval.") or key in ("device", "plugins", "report_to")
    if evaluation:
        check_evaluation_only(tmp_path, copy.deepcopy(recorded), wanted, in_comparison=False)
        assert at(wanted, path) == value
    elif at(wanted, path) == at(recorded, path):  # the value did not reach the recipe: only a no-op may
        assert key.split(".")[-1] in SAME_UPDATE or value == {}
    else:
        with pytest.raises(AlignkitError, match="eval: .* (is a training setting|training section)") as info:
            check_evaluation_only(tmp_path, copy.deepcopy(recorded), wanted, in_comparison=False)
        assert "\n" not in str(info.value)
    # a run of a comparison takes no evaluation change at all: its peers share the evaluation
    if key.startswith("eval.") and at(wanted, key) != at(recorded, key):
        with pytest.raises(AlignkitError, match="belongs to a comparison"):
            check_evaluation_only(tmp_path, copy.deepcopy(recorded), wanted, in_comparison=True)


def test_eval_refuses_a_new_method_section(tmp_path):
    recorded = to_dict(resolved("dpo", []))
    wanted = to_dict(resolved("dpo", ["ppo.kl_coef=0.3"]))
    with pytest.raises(AlignkitError, match="eval: ppo is a training section"):
        check_evaluation_only(tmp_path, recorded, wanted, in_comparison=False)


def test_report_takes_no_settings():
    """``alignkit report`` rebuilds tables from finished runs: it has no --set to ignore."""
    result = CliRunner().invoke(main, ["report", "--help"])
    assert "--set" not in result.output
    assert CliRunner().invoke(main, ["report", "x", "--out", "y", "--set", "eval.n_prompts=3"]).exit_code == 2
