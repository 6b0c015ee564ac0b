"""The Unlikelihood baseline: its loss against hand-computed numbers, log(1 - p) stable as p -> 1, and a short
run of the bundled recipe on the tiny fixtures that raises the chosen and lowers the rejected completions."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from tiny import cpu_runtime, make_workspace

import alignkit
from alignkit.config import ConfigError
from alignkit.losses.unlikelihood import MIN_ONE_MINUS_P, log1mexp, unlikelihood_loss
from alignkit.methods.dpo import pair_batch
from alignkit.models.policy import Policy
from alignkit.recipe import load_recipe
from alignkit.registry import LOSSES, METHODS, load_builtins
from alignkit.run.pipeline import run_recipe
from alignkit.runlog import read_jsonl

RECIPES = Path(alignkit.__file__).resolve().parent / "recipes"
RECIPE_PATH = RECIPES / "unlikelihood_imdb.yaml"
LN = math.log


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# (a) the loss, by hand


def hand_batch():
    """Two pairs, padded to 3 tokens. Padding holds log p = 0 (p = 1), as ``token_logprobs`` leaves it: it
    must count for nothing (not -log(1 - 1) = inf).
    chosen   row 0: log p = -1, -2 (2 tokens)     -> NLL 1.5, summed -3
             row 1: log p = -0.5 (1 token)        -> NLL 0.5, summed -0.5
    rejected row 0: p = 0.5, 0.75 (2 tokens)      -> -log(1 - p) = ln 2, ln 4: mean 1.5 ln 2, summed ln 0.375
             row 1: p = 0.1 (1 token)             -> -ln 0.9, summed ln 0.1"""
    chosen = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    chosen_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    rejected = torch.tensor([[LN(0.5), LN(0.75), 0.0], [LN(0.1), 0.0, 0.0]])
    rejected_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return chosen, chosen_mask, rejected, rejected_mask


def test_loss_matches_hand_computed_values():
    losses, metrics = unlikelihood_loss(*hand_batch(), alpha=0.5)
    ul = [1.5 * LN(2), -LN(0.9)]
    expected = [1.5 + 0.5 * ul[0], 0.5 + 0.5 * ul[1]]
    assert losses.shape == (2,)
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert float(metrics["nll/chosen"]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics["unlikelihood/rejected"]) == pytest.approx(sum(ul) / 2, abs=1e-6)
    assert float(metrics["logps/chosen"]) == pytest.approx(-1.75, abs=1e-6)
    assert float(metrics["logps/rejected"]) == pytest.approx((LN(0.375) + LN(0.1)) / 2, abs=1e-6)
    # the batch loss decomposes into the two logged terms
    assert float(losses.mean()) == pytest.approx(
        float(metrics["nll/chosen"]) + 0.5 * float(metrics["unlikelihood/rejected"]), abs=1e-6)
    assert all(not v.requires_grad for v in metrics.values())


def test_alpha_zero_is_chosen_only_nll():
    losses, metrics = unlikelihood_loss(*hand_batch(), alpha=0.0)
    assert losses.tolist() == pytest.approx([1.5, 0.5], abs=1e-6)
    assert float(metrics["unlikelihood/rejected"]) > 0  # still measured, just not optimised

    torch.manual_seed(0)
    logps = -torch.rand(4, 7) * 5
    mask = (torch.rand(4, 7) > 0.3).float()
    mask[:, 0] = 1
    rejected = -torch.rand(4, 7) * 5
    rejected.requires_grad_(True)
    losses, _ = unlikelihood_loss(logps, mask, rejected, torch.ones(4, 7), alpha=0.0)
    torch.testing.assert_close(losses, -(logps * mask).sum(-1) / mask.sum(-1))
    losses.sum().backward()
    assert torch.equal(rejected.grad, torch.zeros_like(rejected))


def test_padding_values_and_empty_completions_count_for_nothing():
    chosen, chosen_mask, rejected, rejected_mask = hand_batch()
    garbage = torch.tensor([[0.0, 0.0, -30.0], [0.0, -1e-9, -7.0]])  # anything outside the masks
    a, _ = unlikelihood_loss(chosen, chosen_mask, rejected, rejected_mask, alpha=2.0)
    b, _ = unlikelihood_loss(torch.where(chosen_mask.bool(), chosen, garbage), chosen_mask,
                             torch.where(rejected_mask.bool(), rejected, garbage), rejected_mask, alpha=2.0)
    torch.testing.assert_close(a, b)
    empty, _ = unlikelihood_loss(chosen, torch.zeros(2, 3), rejected, torch.zeros(2, 3), alpha=1.0)
    assert empty.tolist() == [0.0, 0.0]


def test_gradient_is_likelihood_on_chosen_and_p_over_one_minus_p_on_rejected():
    """d/d log p of -log(1 - p) is p / (1 - p); of -log p it is -1 (each divided by the token count)."""
    chosen, chosen_mask, rejected, rejected_mask = hand_batch()
    chosen.requires_grad_(True)
    rejected.requires_grad_(True)
    unlikelihood_loss(chosen, chosen_mask, rejected, rejected_mask, alpha=1.0)[0].sum().backward()
    torch.testing.assert_close(chosen.grad, torch.tensor([[-0.5, -0.5, 0.0], [-1.0, 0.0, 0.0]]))
    expected = torch.tensor([[0.5 * 1.0, 0.5 * 3.0, 0.0], [0.1 / 0.9, 0.0, 0.0]])  # p/(1-p) per token
    torch.testing.assert_close(rejected.grad, expected)


# ----------------------------------------------------------------------------------------------------------
# (b) stability as p -> 1


def test_log1mexp_is_accurate_where_the_naive_form_cancels():
    x = -torch.logspace(-7, 2, 500).double()  # log p from -1e-7 to -100, float32 values
    exact = torch.log(-torch.expm1(x))  # float64: accurate to ~1e-15 here
    ours = log1mexp(x.float()).double()
    torch.testing.assert_close(ours, exact, rtol=1e-6, atol=1e-6)
    # the branches meet at -ln 2 without a step
    around = torch.tensor([-LN(2) - 1e-6, -LN(2), -LN(2) + 1e-6]).double()
    torch.testing.assert_close(log1mexp(around.float()).double(), torch.log(-torch.expm1(around)),
                               rtol=1e-6, atol=0)
    # float32 log1p(-exp(x)) at log p = -1e-7 is off by ~0.18 nats (exp rounds to 1 - 1.19e-7)
    naive = torch.log1p(-torch.exp(torch.tensor(-1e-7)))
    assert abs(float(naive) - LN(1e-7)) > 0.1
    assert float(log1mexp(torch.tensor(-1e-7))) == pytest.approx(LN(1e-7), rel=1e-6)


@pytest.mark.parametrize("logp", [0.0, -1e-8, -1e-6])
def test_certain_rejected_tokens_give_finite_loss_and_gradients(logp):
    """p = 1 exactly (log p = 0) and p within 1e-5 of 1 hit the documented clamp 1 - p >= 1e-5: the token
    adds -log(1e-5) = 11.5 nats and no unlikelihood gradient, never inf or nan."""
    chosen = torch.tensor([[logp, -1.0]], requires_grad=True)
    rejected = torch.tensor([[logp, LN(0.5)]], requires_grad=True)
    mask = torch.ones(1, 2)
    losses, metrics = unlikelihood_loss(chosen, mask, rejected, mask, alpha=1.0)
    assert torch.isfinite(losses).all() and all(torch.isfinite(v) for v in metrics.values())
    capped = -LN(MIN_ONE_MINUS_P)
    assert float(metrics["unlikelihood/rejected"]) == pytest.approx((capped + LN(2)) / 2, rel=1e-4)
    losses.sum().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    torch.testing.assert_close(rejected.grad, torch.tensor([[0.0, 0.5]]))  # 0 past the clamp; p/(1-p)/2 = 0.5
    torch.testing.assert_close(chosen.grad, torch.tensor([[-0.5, -0.5]]))


def test_near_one_but_inside_the_clamp_is_exact():
    """p = 1 - 1e-4: -log(1 - p) = ln 1e4 = 9.21 and gradient p / (1 - p) = 9999, from log p in float32."""
    logp = torch.tensor([[math.log1p(-1e-4)]], requires_grad=True)
    losses, _ = unlikelihood_loss(torch.zeros(1, 1), torch.zeros(1, 1), logp, torch.ones(1, 1), alpha=1.0)
    assert float(losses.detach()) == pytest.approx(-LN(1e-4), rel=1e-4)
    losses.sum().backward()
    assert float(logp.grad) == pytest.approx((1 - 1e-4) / 1e-4, rel=1e-3)


# ----------------------------------------------------------------------------------------------------------
# registration, config and the recipe


def test_registered_with_its_config_but_not_as_a_preference_loss():
    load_builtins()
    entry = METHODS.entry("unlikelihood")
    assert entry.meta["needs"] == ("train_pairs",)
    cfg = load_recipe(None, ["method=unlikelihood"]).method_config("unlikelihood")
    assert (cfg.alpha, cfg.lr) == (1.0, 5e-4)
    assert "unlikelihood" not in LOSSES
    with pytest.raises(ConfigError, match="unlikelihood.alpha"):
        load_recipe(None, ["method=unlikelihood", "unlikelihood.alpha=-0.5"])


def test_recipe_shares_every_common_section_with_preferred_ft():
    """Comparisons refuse recipes that disagree on the shared sections; keep this one in step."""
    ours = yaml.safe_load(RECIPE_PATH.read_text())
    theirs = yaml.safe_load((RECIPES / "preferred_ft_imdb.yaml").read_text())
    method_keys = {"name", "method", "unlikelihood", "preferred_ft"}
    assert {k: v for k, v in ours.items() if k not in method_keys} == \
        {k: v for k, v in theirs.items() if k not in method_keys}
    recipe = load_recipe(RECIPE_PATH)
    assert recipe.method == "unlikelihood" and recipe.method_config("unlikelihood").alpha == 1.0
    assert RECIPE_PATH.read_text().splitlines()[0] == "# alignkit run recipes/unlikelihood_imdb.yaml"


# ----------------------------------------------------------------------------------------------------------
# (c) a short run of the bundled recipe


@torch.no_grad()
def mean_token_logps(path, recipe, data) -> tuple[float, float]:
    """Mean per-token log-prob of the chosen and of the rejected completions of all ``data`` pairs."""
    model_cfg = dataclasses.replace(recipe.model, name_or_path=str(path))
    policy = Policy.load(model_cfg, cache_dir=Path(path), runtime=cpu_runtime())
    batch = pair_batch(policy, data, list(range(len(data))), recipe.preferences.append_eos)
    chosen, rejected = policy.token_logprobs(batch).chunk(2)
    chosen_mask, rejected_mask = batch.target_mask.chunk(2)
    return float(chosen.sum() / chosen_mask.sum()), float(rejected.sum() / rejected_mask.sum())


def test_training_raises_chosen_and_lowers_rejected(tmp_path, tiny_overrides, imdb_model_dir):
    """The tiny fixture model is random, so every token has p ~ 1/512 and the unlikelihood gradient
    alpha * p / (1 - p) is ~alpha/500 of the likelihood one. The pairs are both samples of that one model,
    so at alpha = 1 fitting the chosen raises the rejected too (measured: -6.256 -> -6.086, chosen
    -6.255 -> -6.082 after 10 steps). alpha = 500 puts the two terms on a par; alpha = 0 is the control."""
    steps = 40

    def run(name: str, alpha: float):
        overrides = [*tiny_overrides, "unlikelihood.lr=0.01", f"unlikelihood.max_steps={steps}",
                     f"unlikelihood.alpha={alpha}"]
        recipe = load_recipe(RECIPE_PATH, overrides, ())
        run_recipe(recipe, tmp_path / name)
        return recipe

    recipe = run("run", 500.0)
    run("run_alpha0", 0.0)
    for name in ("run", "run_alpha0"):
        summary = json.loads((tmp_path / name / "eval" / "summary.json").read_text())
        assert summary["method"] == "unlikelihood"
        assert summary["budget"]["steps"] == steps

    data = make_workspace(recipe).train_pairs  # the run's training pairs, from the shared cache
    assert len(data) > 100
    chosen0, rejected0 = mean_token_logps(imdb_model_dir, recipe, data)
    chosen1, rejected1 = mean_token_logps(tmp_path / "run" / "model", recipe, data)
    _, rejected_nll_only = mean_token_logps(tmp_path / "run_alpha0" / "model", recipe, data)
    print(f"per-token log p: chosen {chosen0:.3f} -> {chosen1:.3f}, "
          f"rejected {rejected0:.3f} -> {rejected1:.3f} (alpha 0: {rejected_nll_only:.3f})")
    assert chosen1 > chosen0 + 0.3  # measured +0.70
    assert rejected1 < rejected0 - 0.3  # measured -0.77
    assert rejected_nll_only > rejected1 + 1.0  # the unlikelihood term did it (measured +3.3)

    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "unlikelihood"]
    assert records and records[-1]["step"] == steps
    for r in records:  # the logged loss is the logged likelihood term plus alpha times the unlikelihood term
        assert r["loss"] == pytest.approx(r["nll/chosen"] + 500.0 * r["unlikelihood/rejected"], rel=1e-4)
