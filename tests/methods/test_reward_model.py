"""The reward model: Bradley-Terry loss values and gradients, per-prompt averaging of K-choose-2 pairs,
training to high held-out accuracy on a learnable synthetic preference set, mean-0 normalisation, and a
save/reload round trip. Everything is built offline from ``tests/tiny.py`` (a word-level tokenizer and a
random 2-layer GPT-2) and runs in a few seconds on CPU."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from tiny import make_workspace, tiny_gpt2, tiny_tokenizer  # tests/tiny.py (pytest puts tests/ on sys.path)
from torch.testing import assert_close

import alignkit.methods.reward_model as rm  # registers "reward_model" (also listed in BUILTIN_MODULES)
from alignkit.errors import ConfigError
from alignkit.losses.bradley_terry import bradley_terry_loss
from alignkit.models.scalar_head import ScalarModel, Scorer
from alignkit.recipe import load_recipe
from alignkit.registry import METHODS

# ----------------------------------------------------------------------------------------------------------
# the loss


def test_bt_loss_known_value():
    """Scores 2 vs 0: -log sigma(2) = log(1 + e^-2) = 0.126928; a tie: log 2 = 0.693147."""
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(0.126928, abs=1e-6)
    assert bradley_terry_loss(torch.tensor([3.0]), torch.tensor([3.0])).item() == pytest.approx(math.log(2),
                                                                                                abs=1e-6)
    # shifting both scores changes nothing: only the margin matters
    assert bradley_terry_loss(torch.tensor([12.0]), torch.tensor([10.0])).item() == pytest.approx(0.126928,
                                                                                                  abs=1e-6)


def test_bt_loss_averages_per_prompt():
    """Prompt 7 has three pairs with margins 2, 0, -1 (losses 0.126928, 0.693147, 1.313262; mean 0.711112),
    prompt 3 one pair with margin 1 (loss 0.313262). Per prompt: (0.711112 + 0.313262) / 2 = 0.512187;
    the flat mean over the four pairs would be 2.446599 / 4 = 0.611650. Group ids need not be contiguous
    or sorted."""
    chosen = torch.tensor([2.0, 0.5, 1.0, 0.0])
    rejected = torch.tensor([0.0, 0.5, 0.0, 1.0])
    group = torch.tensor([7, 7, 3, 7])
    assert bradley_terry_loss(chosen, rejected, group).item() == pytest.approx(0.512187, abs=1e-6)
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(0.611650, abs=1e-6)
    # one pair per group is the plain mean
    assert_close(bradley_terry_loss(chosen, rejected, torch.arange(4)), bradley_terry_loss(chosen, rejected))


def test_bt_loss_gradient_signs():
    """d loss / d r_w = -sigma(-(r_w - r_l)) / N < 0 and d loss / d r_l = +sigma(-(r_w - r_l)) / N > 0."""
    chosen = torch.tensor([2.0, -1.0, 0.3], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0, 0.3], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    expected = torch.sigmoid(-(chosen - rejected)).detach() / 3
    assert_close(rejected.grad, expected)
    assert_close(chosen.grad, -expected)


def test_bt_loss_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))


# ----------------------------------------------------------------------------------------------------------
# training on a learnable synthetic preference set

FILLER = ["the", "movie", "was", "and", "film", "plot", "story", "it", "this", "a", "cast", "ending",
          "really"]
N_PROMPTS = 200


def _completion(rng: random.Random, word: str | None) -> str:
    words = rng.choices(FILLER, k=rng.randint(3, 6))
    if word:
        words.insert(rng.randint(0, len(words)), word)
    return " " + " ".join(words)


def _write_preferences(path, seed: int = 0) -> None:
    """K=3 completions per prompt (with "good", neutral, with "bad"), ranked into 3 pairs sharing a group;
    the gold score of a completion is #good - #bad."""
    rng = random.Random(seed)
    rows = []
    for group in range(N_PROMPTS):
        words = " ".join(rng.choices(["review", ":", "what", "did", "you", "think", "of", "it", "?"], k=3))
        prompt = f"{words} #{group}"  # one prompt per group: a prompt's rows are never split across groups
        ranked = [(_completion(rng, "good"), 1.0), (_completion(rng, None), 0.0), (_completion(rng, "bad"),
                                                                                   -1.0)]
        for a, b in [(0, 1), (0, 2), (1, 2)]:
            rows.append({"prompt": prompt, "chosen": ranked[a][0], "rejected": ranked[b][0], "group": group,
                         "chosen_score": ranked[a][1], "rejected_score": ranked[b][1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(root / "sft")
    tiny_gpt2(tokenizer, seed=0).save_pretrained(root / "sft")
    _write_preferences(root / "prefs.jsonl")
    recipe = load_recipe(None, overrides=[
        "method=reward_model", "device=cpu", f"model.name_or_path={root / 'sft'}", "model.max_length=32",
        f"preferences.source={root / 'prefs.jsonl'}", "preferences.heldout_fraction=0.2",
        "reward_model.lr=0.003", "reward_model.batch_size=8", "reward_model.epochs=2",
        "reward_model.warmup_steps=5",
    ])
    ws = make_workspace(recipe, root / "run", cache_dir=root / "cache")
    cfg = recipe.method_config("reward_model")
    return root, ws, cfg, METHODS.get("reward_model")(ws, cfg)


def test_registered_with_config():
    entry = METHODS.entry("reward_model")
    assert entry.obj is rm.train_reward_model and entry.meta["config"] is rm.RewardModelConfig
    assert entry.meta["needs"] == ("train_pairs",)  # held-out pairs are never trained on, by any method


def test_learns_synthetic_preferences(setup):
    _, ws, cfg, trained = setup
    summary, samples = trained.evaluate(ws)
    assert summary["method"] == "reward_model"
    assert summary["n_heldout_pairs"] == 120 and summary["n_train_pairs"] == 480  # 40 of 200 groups held out
    assert summary["heldout_pairwise_accuracy"] >= 0.9
    assert summary["train_pairwise_accuracy"] >= 0.9
    assert summary["spearman_vs_gold"] > 0.8
    assert len(samples) == 120 and set(samples[0]) == {"prompt", "chosen", "rejected", "rm_chosen",
                                                       "rm_rejected",
                                                      "gold_chosen", "gold_rejected"}
    accuracy = sum(s["rm_chosen"] > s["rm_rejected"] for s in samples) / len(samples)
    assert accuracy == pytest.approx(summary["heldout_pairwise_accuracy"])
    records = [r for r in ws.ctx.log.records if r["stage"] == "reward_model" and "loss" in r]
    assert {"loss", "accuracy", "margin"} <= set(records[-1])
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["margin"] > records[0]["margin"]


def test_rewards_have_mean_zero_on_training_prompts(setup):
    _, ws, cfg, trained = setup
    train, heldout = ws.train_pairs, ws.heldout_pairs
    assert set(train.group).isdisjoint(heldout.group)
    *_, scores = rm.score_pairs(trained.scorer, train, ws.recipe.preferences.append_eos)
    assert len(scores) == 3 * len(set(train.group))  # each distinct completion scored once
    assert abs(trained.scalar.bias) > 1e-3  # the shift actually did something
    assert abs(scores.double().mean().item()) < 1e-4


def test_save_and_reload(setup):
    root, ws, cfg, trained = setup
    trained.save(root / "saved")
    loaded = ScalarModel.from_backbone(ws.recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime,
                                       path=str(root / "saved"))
    assert loaded.bias == trained.scalar.bias
    scorer = Scorer(loaded, ws.recipe.model, batch_size=16)
    chosen, rejected, _, scores = rm.score_pairs(scorer, trained.heldout, False)
    expected_chosen, expected_rejected, _, expected = rm.score_pairs(trained.scorer, trained.heldout, False)
    assert_close(scores, expected, rtol=0, atol=1e-5)  # float32 noise of another batching
    assert_close(chosen, expected_chosen, rtol=0, atol=1e-5)


def test_workspace_trains_and_caches(setup):
    """``ws.reward_model`` (what PPO uses) trains through the registry once, then loads from the cache."""
    root, ws, _, _ = setup
    recipe = load_recipe(None, overrides=[
        "method=reward_model", "device=cpu", f"model.name_or_path={root / 'sft'}", "model.max_length=32",
        f"preferences.source={root / 'prefs.jsonl'}", "reward_model.max_steps=2"])
    first_ws = make_workspace(recipe, root / "run2", cache_dir=root / "cache2")
    first = first_ws.reward_model
    assert len(list((root / "cache2" / "reward_models").iterdir())) == 1
    assert any(r["stage"] == "reward_model" for r in first_ws.ctx.log.records)  # trained
    second_ws = make_workspace(recipe, root / "run3", cache_dir=root / "cache2")
    second = second_ws.reward_model
    assert not second_ws.ctx.log.records  # loaded, not retrained
    assert second.bias == first.bias != 0.0


def test_needs_two_prompt_groups(setup, tmp_path):
    """A split that would hold out every prompt group is refused when the recipe loads, before any run."""
    root, *_ = setup
    (tmp_path / "one.jsonl").write_text(json.dumps({"prompt": "review :", "chosen": " good",
                                                    "rejected": " bad"}) + "\n")
    with pytest.raises(ConfigError, match="at least 2 prompts"):
        load_recipe(None, overrides=["method=reward_model", "device=cpu",
                                     f"model.name_or_path={root / 'sft'}",
                                     f"preferences.source={tmp_path / 'one.jsonl'}"])
