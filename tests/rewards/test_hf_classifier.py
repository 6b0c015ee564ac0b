"""The ``hf-classifier`` gold reward and the ``recipes/paper/`` recipes, offline.

A tiny random BERT sequence classifier (labels NEGATIVE, POSITIVE) is built here and saved to a folder, then
loaded through the registered reward exactly as a recipe loads it (``gold_reward: hf-classifier`` with
``gold_reward_options``). Its scores must be the log-odds computed directly with the model, one text at a
time; the paper recipes must validate without the Hub and without writing anything."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import assert_method_section_applied, make_workspace, tiny_tokenizer
from transformers import BertConfig, BertForSequenceClassification

from alignkit.compare.plan import plan_comparison, resolved_recipe
from alignkit.config import ConfigError
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe
from alignkit.recipes.bundled import BUNDLED, resolve_recipe_path
from alignkit.registry import REWARDS, load_builtins
from alignkit.report.records import check_shared
from alignkit.rewards.hf_classifier import HFClassifier, HFClassifierOptions

load_builtins()

PAPER = sorted((BUNDLED / "paper").glob("*.yaml"))
SIEBERT = "siebert/sentiment-roberta-large-english"
PROMPTS = ["the movie was", "i hated this", "a wonderful cast", "the plot", "review : what"]
COMPLETIONS = [" great and the acting was superb", " story it was dull and dreadful", " a terrible ending",
               " was boring", " did you think of it ?"]


def save_classifier(folder: Path, labels: dict[int, str], seed: int = 0, max_positions: int = 32) -> Path:
    """A random 1-layer BERT classifier over ``tests/tiny.py``'s word-level tokenizer, saved like a
    Hub model."""
    tokenizer = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=max_positions, pad_token_id=0,
                        num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()},
                        initializer_range=0.5)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("classifier"), {0: "NEGATIVE", 1: "POSITIVE"})


def gold_of(folder: Path | str, *options: str):
    """The gold reward of a bundled recipe switched to ``hf-classifier`` on ``folder``, built as a run
    builds it."""
    recipe = load_recipe("dpo_imdb", ["gold_reward=hf-classifier", f"gold_reward_options.model={folder}",
                                      *(f"gold_reward_options.{o}" for o in options)])
    workspace = make_workspace(recipe)
    return workspace.gold, workspace


def direct_logits(folder: Path, texts: list[str]) -> torch.Tensor:
    """The classifier's logits, one unpadded text at a time, with the model and tokenizer loaded by hand."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts]).double()


def test_scores_are_the_log_odds_of_positive_on_prompt_plus_completion(classifier_dir):
    gold, workspace = gold_of(classifier_dir)
    scores = gold(PROMPTS, COMPLETIONS)
    logits = direct_logits(classifier_dir, [p + c for p, c in zip(PROMPTS, COMPLETIONS)])
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64 and scores.shape == (len(PROMPTS),)
    np.testing.assert_allclose(scores, (logits[:, 1] - logits[:, 0]).numpy(), rtol=0, atol=1e-5)
    probability = torch.softmax(logits, -1)[:, 1].numpy()
    # sigmoid(score) = P(POSITIVE)
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), probability, atol=1e-6)
    assert np.ptp(scores) > 0.1  # the random model tells these texts apart: the checks above are not vacuous
    assert workspace.gold_meta["model"] == str(classifier_dir) and workspace.gold_meta["label"] == "POSITIVE"
    assert workspace.gold_meta["max_length"] == 32  # no tokenizer limit: the model's position embeddings
    assert workspace.artifact_keys["gold_reward"]


def test_choosing_the_other_label_flips_the_sign(classifier_dir):
    positive = gold_of(classifier_dir)[0](PROMPTS, COMPLETIONS)
    negative = gold_of(classifier_dir, "label=negative")[0](PROMPTS, COMPLETIONS)  # names match in any case
    np.testing.assert_allclose(negative, -positive, rtol=0, atol=1e-6)


def test_batches_give_the_numbers_of_one_batch(classifier_dir):
    one = gold_of(classifier_dir, "batch_size=64")[0](PROMPTS, COMPLETIONS)
    for size in (1, 2, 3):
        np.testing.assert_allclose(gold_of(classifier_dir, f"batch_size={size}")[0](PROMPTS, COMPLETIONS),
                                   one,
                                   rtol=0, atol=1e-5)
    assert gold_of(classifier_dir)[0]([], []).shape == (0,)


def test_long_texts_are_cut_to_the_model_limit(classifier_dir):
    """200 words on a model with 32 positions: truncated, not an index error; max_length cuts
    shorter still."""
    words = " ".join(["great"] * 200)
    gold = gold_of(classifier_dir)[0]
    np.testing.assert_allclose(gold(["the movie"], [" " + words]), gold(["the movie"],
                                                                        [" " + words + " awful"]),
                               atol=1e-6)
    short = gold_of(classifier_dir, "max_length=3")[0]
    logits = direct_logits(classifier_dir, ["the movie was"])
    np.testing.assert_allclose(short(["the movie was"], [" great fun"]),
                               (logits[:, 1] - logits[:, 0]).numpy(),
                               atol=1e-5)


def test_three_labels_give_log_p_over_one_minus_p(tmp_path):
    folder = save_classifier(tmp_path / "three", {0: "negative", 1: "neutral", 2: "positive"}, seed=1)
    scores = gold_of(folder)[0](PROMPTS, COMPLETIONS)
    p = torch.softmax(direct_logits(folder, [a + b for a, b in zip(PROMPTS, COMPLETIONS)]), -1)[:, 2].numpy()
    np.testing.assert_allclose(scores, np.log(p / (1 - p)), rtol=0, atol=1e-5)


def test_a_one_output_head_scores_its_logit(tmp_path):
    folder = save_classifier(tmp_path / "one", {0: "LABEL_0"}, seed=2)
    logits = direct_logits(folder, [a + b for a, b in zip(PROMPTS, COMPLETIONS)])
    for options in ((), ("label=label_0",)):
        np.testing.assert_allclose(gold_of(folder, *options)[0](PROMPTS, COMPLETIONS), logits[:, 0].numpy(),
                                   rtol=0, atol=1e-5)


def test_a_bad_label_is_one_line_naming_the_key_and_the_labels(classifier_dir):
    with pytest.raises(ConfigError) as err:
        gold_of(classifier_dir, "label=happy")
    message = str(err.value)
    assert "\n" not in message and "dpo_imdb.yaml: gold_reward_options.label:" in message
    assert "no label 'happy' (its labels: NEGATIVE, POSITIVE)" in message
    # a Hub model's labels are known only once it is loaded: the same line then comes from the reward itself
    with pytest.raises(AlignkitError, match=r"^gold_reward_options\.label: .*no label 'happy' \(its labels: "
                                            r"NEGATIVE, POSITIVE\)"):
        HFClassifier(HFClassifierOptions(model=str(classifier_dir), label="happy"), torch.device("cpu"))


def test_missing_model_is_one_line_naming_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError,
                       match=r"gold_reward_options\.model: cannot load '\./nowhere/model' as a local "
                                          r"folder: it does not exist"):
        gold_of("./nowhere/model")
    with pytest.raises(ConfigError, match=r"gold_reward_options\.model: required key is missing"):
        load_recipe("dpo_imdb", ["gold_reward=hf-classifier"])
    with pytest.raises(ConfigError, match=r"gold_reward_options: reward 'imdb-sentiment' takes no options"):
        load_recipe("dpo_imdb", [f"gold_reward_options.model={SIEBERT}"])
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine without the Hub
    with pytest.raises(AlignkitError,
                       match=rf"^gold_reward_options\.model: cannot load '{SIEBERT}' as a Hub id "
                                            r"\(no Hub access, or no such model\?\)"):
        HFClassifier(HFClassifierOptions(model=SIEBERT), torch.device("cpu"))


def test_it_judges_only_as_the_gold_reward(classifier_dir):
    """Its settings live in gold_reward_options, so as a separate eval.judge it would have none: refused
    at load."""
    with pytest.raises(ConfigError,
                       match=r"eval\.judge: hf-classifier takes its settings from gold_reward_options"):
        load_recipe("dpo_imdb", ["eval.judge=hf-classifier"])
    recipe = load_recipe("dpo_imdb", ["gold_reward=hf-classifier",
                                      f"gold_reward_options.model={classifier_dir}",
                                      "eval.judge=hf-classifier"])
    workspace = make_workspace(recipe)
    assert workspace.judge is workspace.gold


def test_registered_with_its_options():
    entry = REWARDS.entry("hf-classifier")
    assert entry.meta["options"] is HFClassifierOptions and entry.source == "builtin"


def test_a_run_labels_and_judges_with_the_classifier(classifier_dir, tiny_overrides, tmp_path):
    """End to end on the tiny policy: the pairs are ranked by the classifier and the manifest names it."""
    from alignkit.run.pipeline import run_recipe

    recipe = load_recipe("dpo_imdb", [*tiny_overrides, "gold_reward=hf-classifier",
                                      f"gold_reward_options.model={classifier_dir}",
                                      "preferences.n_prompts=8",
                                      "eval.n_prompts=8", "eval.temperatures=[]", "eval.every_steps=0",
                                      "dpo.max_steps=1", "dpo.batch_size=4"])
    workspace = make_workspace(recipe)
    pairs = workspace.preferences
    chosen = workspace.gold(pairs.prompts, pairs.chosen)
    rejected = workspace.gold(pairs.prompts, pairs.rejected)
    assert len(pairs) and np.all(chosen >= rejected)
    run_recipe(recipe, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["gold_reward_meta"]["model"] == str(classifier_dir)
    # defaults filled in: the same judge reads the same
    assert manifest["recipe"]["gold_reward_options"]["label"] is None


def test_comparisons_refuse_entries_judged_by_different_classifiers(classifier_dir):
    a = load_recipe("dpo_imdb", ["gold_reward=hf-classifier", f"gold_reward_options.model={classifier_dir}"])
    b = load_recipe("ppo_imdb", ["gold_reward=hf-classifier", f"gold_reward_options.model={classifier_dir}",
                                 "gold_reward_options.label=NEGATIVE"])
    with pytest.raises(AlignkitError, match="disagree on shared key gold_reward_options.label"):
        check_shared([("a", *resolved_recipe(a)), ("b", *resolved_recipe(b))])


# --------------------------------------------------------------------------------------------------
# recipes/paper/


def paper_overrides() -> list[str]:
    """Nothing where this machine has CUDA; elsewhere device=cpu, so that the rest of the recipe validates."""
    return [] if torch.cuda.is_available() else ["device=cpu"]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_recipe_validates_offline_without_writing(path, monkeypatch, tmp_path):
    """Validation reads no weights and asks the Hub nothing: gpt2-large and the classifier are Hub ids."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = load_recipe(path, paper_overrides())
    assert recipe.model.name_or_path == "gpt2-large" and recipe.model.lora is None
    assert recipe.gold_reward == "hf-classifier"
    assert (
        recipe.gold_reward_options["model"] == SIEBERT and recipe.gold_reward_options["label"] == "POSITIVE"
    )
    assert_method_section_applied(recipe, path)
    assert (recipe.task.prompt_min_tokens, recipe.task.prompt_max_tokens) == (2, 8)
    text = path.read_text()
    assert text.splitlines()[0] == f"# alignkit run recipes/paper/{path.name}"
    assert "NEEDS THE HUGGING FACE HUB AND A GPU" in text and "GB of GPU memory" in text
    assert "device: cuda" in text
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_paper_recipe_without_cuda_stops_at_load_saying_so():
    with pytest.raises(ConfigError,
                       match=r"paper/dpo_imdb\.yaml: device: 'cuda' requested but CUDA is not available"):
        load_recipe("paper/dpo_imdb")


def test_paper_settings_follow_the_paper():
    dpo = load_recipe("paper/dpo_imdb", paper_overrides())
    cfg = dpo.method_config("dpo")
    assert (cfg.loss, cfg.beta, cfg.batch_size, cfg.lr, cfg.warmup_steps) == ("sigmoid", 0.1, 64, 1e-6, 150)
    assert dpo.preferences.completions_per_prompt == 4
    ppo = load_recipe("paper/ppo_imdb", paper_overrides()).method_config("ppo")
    assert ppo.target_kl in (3, 6, 9, 12) and ppo.reward == "reward_model"
    assert load_recipe("paper/ppo_imdb", paper_overrides()).method_config("reward_model").epochs == 3


def test_paper_dpo_and_ppo_can_be_compared():
    pair = [p for p in PAPER if p.stem in ("dpo_imdb", "ppo_imdb")]
    assert len(pair) == 2
    check_shared([(p.name, *resolved_recipe(load_recipe(p, paper_overrides()))) for p in pair])


def test_documented_commands_validate(monkeypatch, tmp_path):
    """The SFT hand-over and the Figure 2 sweep named in the headers are valid as written."""
    monkeypatch.chdir(tmp_path)
    sft_model = tmp_path / "runs" / "paper_sft_imdb" / "model"  # what paper/sft_imdb writes (a tiny stand-in)
    save_classifier(sft_model, {0: "NEGATIVE", 1: "POSITIVE"})
    recipe = load_recipe("paper/dpo_imdb", [*paper_overrides(),
                                            "model.name_or_path=runs/paper_sft_imdb/model"])
    assert recipe.model.name_or_path == "runs/paper_sft_imdb/model"
    header = " ".join(line.lstrip("#").strip() for line in (BUNDLED / "paper" / "dpo_imdb.yaml").read_text()
                      .splitlines() if line.startswith("#"))
    args = shlex.split(header[header.index("alignkit compare"):].split(")")[0])
    entries = [a for a in args[2:] if not a.startswith("--") and "=" not in a]
    sweeps = [args[i + 1] for i, a in enumerate(args) if a == "--sweep"]
    monkeypatch.chdir(BUNDLED.parent.parent)
    plan = plan_comparison(entries, sweeps=sweeps, overrides=paper_overrides(), out=tmp_path / "cmp")
    assert sorted({e.method for e in plan.entries}) == ["dpo", "ppo"] and len(plan.entries) == 5


def test_paper_recipes_resolve_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("paper/dpo_imdb", "recipes/paper/dpo_imdb.yaml", "alignkit/recipes/paper/dpo_imdb.yaml"):
        assert resolve_recipe_path(spec) == BUNDLED / "paper" / "dpo_imdb.yaml"
    assert resolve_recipe_path("paper/kto_imdb") == Path("paper/kto_imdb")  # no fallback to the tiny recipe
