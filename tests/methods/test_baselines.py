"""The three baselines: SFT on demonstrations, Preferred-FT on chosen completions, and best-of-N sampling
(selection, the analytic KL and the measured KL estimate). Everything is offline and tiny: a word-level
tokenizer and a random 2-layer GPT-2 from ``tests/tiny.py``, saved to a temporary folder that the recipe's
``model.name_or_path`` points at, and a small synthetic "review" task registered below."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from tiny import make_workspace, tiny_gpt2, tiny_tokenizer  # tests/tiny.py (pytest puts tests/ on sys.path)

import alignkit.methods.best_of_n as bon  # the three modules register "sft", "preferred_ft", "best_of_n"
import alignkit.methods.preferred_ft as pft
import alignkit.methods.sft as sft
from alignkit.data.preferences import PreferenceData
from alignkit.data.task import Task
from alignkit.models import finetune
from alignkit.models.finetune import completion_nll
from alignkit.models.scalar_head import ScalarModel
from alignkit.models.sequences import encode_pairs, gather_logprobs
from alignkit.recipe import load_recipe
from alignkit.registry import DATASETS, METHODS, register_dataset
from alignkit.run.pipeline import Run, evaluate_artifact
from alignkit.stages.builder import StageBuilder
from alignkit.stages.workspace import Workspace

DATASET = "tiny-test-baselines"
SUBJECTS = ["the movie", "the film", "this story", "the plot", "the acting", "the cast", "the ending"]
GOOD = ["great", "superb", "brilliant", "wonderful", "moving", "good"]
BAD = ["boring", "awful", "dull", "dreadful", "terrible", "bad"]


def review(rng: random.Random, good: bool) -> str:
    """A patterned sentence: learnable, so fine-tuning on some lowers the NLL of unseen ones."""
    words = GOOD if good else BAD
    return (f"{rng.choice(SUBJECTS)} was {rng.choice(words)} and {rng.choice(SUBJECTS)} was "
            f"{rng.choice(words)} really")


def make_task() -> Task:
    rng = random.Random(0)
    texts = [review(rng, good=i % 2 == 0) for i in range(240)]
    return Task(DATASET, texts[:200], texts[200:], [1 - i % 2 for i in range(200)],
                [1 - i % 2 for i in range(40)])


TASK = make_task()
TOKENIZER = tiny_tokenizer(TASK.train_texts + TASK.heldout_texts)
if DATASET not in DATASETS:
    register_dataset(DATASET)(lambda cfg: TASK)


def letter_count(prompts: list[str], completions: list[str]) -> np.ndarray:
    """A deterministic stand-in for the gold reward: how many e's the completion has (ties are common)."""
    return np.array([c.count("e") for c in completions], dtype=np.float64)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU two threads spin against
    each other (a 100x slowdown measured here); restored afterwards for other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_ws(tmp_path):
    folder = tmp_path / "tiny-model"
    tiny_gpt2(TOKENIZER, seed=0).save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)

    def make(method: str, *overrides: str) -> StageBuilder:
        recipe = load_recipe(None, overrides=[f"method={method}", f"model.name_or_path={folder}",
                                              "device=cpu",
                                              "model.max_length=32", f"task.dataset={DATASET}", *overrides])
        ws = make_workspace(recipe, tmp_path / "run", cache_dir=tmp_path / "cache")
        ws.provide(gold=letter_count)
        return ws

    make.folder = folder
    return make


def run_method(ws: Workspace):
    return METHODS.get(ws.recipe.method)(ws, ws.recipe.method_config(ws.recipe.method))


@torch.no_grad()
def mean_nll(model, tokenizer, prompts, completions) -> float:
    return float(completion_nll(model, encode_pairs(tokenizer, prompts, completions, max_length=32)))


# ----------------------------------------------------------------------------------------------------------
# SFT


def test_sft_lowers_heldout_nll(make_ws):
    ws = make_ws("sft", "sft.lr=0.01", "sft.batch_size=16", "sft.epochs=3", "sft.warmup_steps=2")
    heldout = ws.task.heldout_texts
    before = mean_nll(ws.sft.model, ws.sft.tokenizer, [""] * len(heldout), heldout)
    train_before = mean_nll(ws.sft.model, ws.sft.tokenizer, [""] * 40, ws.task.train_texts[:40])
    policy = run_method(ws)
    after = mean_nll(policy.model, policy.tokenizer, [""] * len(heldout), heldout)
    # a random model sits near log(vocab) ~ 3.6 nats/token; the patterned sentences are learnable
    print(f"held-out NLL per token: {before:.3f} -> {after:.3f}")
    assert before > 3.0
    assert after < before - 1.5, (before, after)
    assert after < 1.6
    # training the returned policy leaves the workspace's starting policy untouched
    assert mean_nll(ws.sft.model, ws.sft.tokenizer, [""] * 40,
                    ws.task.train_texts[:40]) == pytest.approx(train_before)


def test_sft_demonstrations_subset_and_truncation():
    texts = [f"text {i} " + "word " * 100 for i in range(50)]
    picked = sft.demonstrations(texts, max_examples=10, max_length=16, seed=3)
    assert len(picked) == 10 and len(set(picked)) == 10
    assert picked == sft.demonstrations(texts, max_examples=10, max_length=16, seed=3)  # seeded
    assert picked != sft.demonstrations(texts, max_examples=10, max_length=16, seed=4)
    assert all(len(t) == 16 * sft.CHARS_PER_TOKEN for t in picked)
    assert len(sft.demonstrations(texts, max_examples=0, max_length=16, seed=3)) == 50  # 0: all


def test_sft_max_examples_limits_the_training_set(make_ws, monkeypatch):
    seen = []
    real = finetune.finetune_on_completions

    def spy(ctx, policy, prompts, completions, cfg, **kwargs):
        seen.append((list(prompts), list(completions)))
        return real(ctx, policy, prompts, completions, cfg, **kwargs)

    monkeypatch.setattr(sft, "finetune_on_completions", spy)
    run_method(make_ws("sft", "sft.max_examples=12", "sft.max_steps=1"))
    prompts, completions = seen[0]
    assert len(completions) == 12 and set(completions) <= set(TASK.train_texts)
    assert prompts == [""] * 12


# ----------------------------------------------------------------------------------------------------------
# Preferred-FT


def preference_pairs(n: int = 48) -> PreferenceData:
    """Prompt: a review's first 3 words; chosen: a positive continuation; rejected: a negative one."""
    rng = random.Random(1)
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        good, bad = review(rng, True).split(), review(rng, False).split()
        prompts.append(" ".join(good[:3]))
        chosen.append(" ".join(good[3:]))
        rejected.append(" ".join(bad[3:]))
    return PreferenceData(prompts, chosen, rejected)


def test_preferred_ft_raises_chosen_logprob_and_trains_on_completion_tokens_only(make_ws, monkeypatch):
    data = preference_pairs()
    ws = make_ws("preferred_ft", "preferred_ft.lr=0.01", "preferred_ft.batch_size=16",
                 "preferred_ft.epochs=4",
                 "preferred_ft.warmup_steps=2")
    ws.provide(preferences=data)
    tok = ws.sft.tokenizer
    pairs = encode_pairs(tok, data.prompts, data.chosen, max_length=32)
    with torch.no_grad():
        before = ws.sft.sequence_logprobs(pairs)

    batches = []
    real = finetune.completion_nll

    def spy(model, batch):
        batches.append(batch.to("cpu"))
        return real(model, batch)

    monkeypatch.setattr(finetune, "completion_nll", spy)
    policy = run_method(ws)
    with torch.no_grad():
        after = policy.sequence_logprobs(pairs)
    print(f"log pi(chosen | prompt): {before.mean():.2f} -> {after.mean():.2f}")
    assert (after - before).mean() > 5.0, (before.mean(), after.mean())
    assert (after > before).float().mean() >= 0.9

    # every training row: prompt tokens are context (mask 0), the targets are exactly a chosen completion
    # (with trl's EOS after it: preferences.append_eos, on by default)
    eos = (tok.eos_token_id,) if ws.recipe.preferences.append_eos else ()
    prompt_ids = {tuple(tok(p, add_special_tokens=False)["input_ids"]) for p in data.prompts}
    chosen_ids = {tuple(tok(c, add_special_tokens=False)["input_ids"]) + eos for c in data.chosen}
    rejected_ids = {tuple(tok(r, add_special_tokens=False)["input_ids"]) + eos for r in data.rejected}
    assert batches
    for batch in batches:
        for ids, attn, comp in zip(batch.input_ids, batch.attention_mask, batch.completion_mask):
            real_ids = ids[attn.bool()].tolist()
            start = int(comp.argmax())
            assert comp[start:].sum() == comp.sum()  # one contiguous completion span after the prompt
            assert tuple(real_ids[:start]) in prompt_ids
            assert tuple(ids[comp.bool()].tolist()) in chosen_ids - rejected_ids
        # the loss is averaged over completion tokens only
        assert batch.target_mask.sum() == batch.completion_mask.sum()


def test_completion_nll_ignores_prompt_tokens():
    """Same completion after two different prompts: the NLL averages -log p over the completion's tokens
    only (counted by hand), and differs from the all-token average, which would include the prompt."""
    model = tiny_gpt2(TOKENIZER, seed=2)
    completion = "was great and the plot was superb"
    n_completion = len(TOKENIZER(completion)["input_ids"])
    for prompt in ("the movie", "this story was dull and the film"):
        batch = encode_pairs(TOKENIZER, [prompt], [completion], max_length=32)
        assert int(batch.target_mask.sum()) == n_completion
        with torch.no_grad():
            logps = gather_logprobs(model(batch.input_ids).logits[:, :-1], batch.input_ids[:, 1:])[0]
            n_prompt = len(TOKENIZER(prompt)["input_ids"])
            by_hand = -logps[n_prompt - 1:].mean()  # predictions of tokens n_prompt .. end
            assert logps[n_prompt - 1:].numel() == n_completion
            assert float(completion_nll(model, batch)) == pytest.approx(float(by_hand), rel=1e-5)
            assert float(-logps.mean()) != pytest.approx(float(by_hand), rel=1e-3)


def test_preferred_ft_deduplicates_chosen():
    data = PreferenceData(["p", "p", "p", "q"], ["best", "best", "mid", "x"], ["mid", "low", "low", "y"])
    assert pft.chosen_examples(data, True, False) == (["p", "p", "q"], ["best", "mid", "x"], [False] * 3)
    assert pft.chosen_examples(data, False, True) == (["p", "p", "p", "q"], ["best", "best", "mid", "x"],
                                                      [True] * 4)
    # sampled: EOS where it stopped
    data.chosen_ended, data.rejected_ended = [True, False, True, False], [False] * 4
    assert pft.chosen_examples(data, True, False) == (["p", "p", "p", "q"], ["best", "best", "mid", "x"],
                                                      [True, False, True, False])


# ----------------------------------------------------------------------------------------------------------
# Best-of-N

SAMPLING = dict(max_new_tokens=8, temperature=1.0, top_p=1.0)


def spy_on_candidates(policy):
    captured = []
    real = policy.base.sample

    def sample(prompts, **kw):
        captured.append(real(prompts, **kw))
        return captured[-1]

    policy.base.sample = sample
    return captured


def test_best_of_n_gold_picks_highest_scoring_candidate(make_ws):
    ws = make_ws("best_of_n", "best_of_n.n=4", "best_of_n.reward=gold")
    policy = run_method(ws)
    assert isinstance(policy, bon.BestOfNPolicy) and policy.model is ws.sft.model
    candidates = spy_on_candidates(policy)
    prompts = ws.prompts("train", 12)
    torch.manual_seed(0)
    rollout = policy.sample(prompts, **SAMPLING, runtime=ws.runtime)
    (cand,) = candidates
    assert cand.prompts == [p for p in prompts for _ in range(4)]
    scores = letter_count(cand.prompts, cand.completions).reshape(12, 4)
    chosen = letter_count(prompts, rollout.completions)
    np.testing.assert_array_equal(chosen, scores.max(axis=1))
    assert chosen.mean() > scores.mean()  # selection did something
    for i in range(12):
        row = i * 4 + int(scores[i].argmax())
        assert rollout.completions[i] == cand.completions[row]
        assert torch.equal(rollout.batch.input_ids[i], cand.batch.input_ids[row])
        assert torch.equal(rollout.batch.completion_mask[i], cand.batch.completion_mask[row])
    assert rollout.prompts == prompts and len(rollout.batch) == 12


def test_best_of_n_reward_model_picks_highest_scoring_candidate(make_ws):
    ws = make_ws("best_of_n", "best_of_n.n=3")  # reward: reward_model (a random scalar head is enough here)
    torch.manual_seed(5)
    ws.provide(reward_model=ScalarModel.from_backbone(ws.recipe.model, cache_dir=ws.cache_dir,
                                                      runtime=ws.runtime,
                                                      path=str(make_ws.folder)))
    policy = run_method(ws)
    candidates = spy_on_candidates(policy)
    torch.manual_seed(0)
    rollout = policy.sample(ws.prompts("train", 10), **SAMPLING, runtime=ws.runtime)
    cand = candidates[0]
    all_scores = ws.proxy_reward(cand.prompts, cand.completions, cand.ended).reshape(10, 3)
    picked = ws.proxy_reward(rollout.prompts, rollout.completions, rollout.ended)
    np.testing.assert_allclose(picked, all_scores.max(axis=1), rtol=1e-6)


def test_best_of_one_is_plain_sampling_with_zero_kl(make_ws):
    ws = make_ws("best_of_n", "best_of_n.n=1", "best_of_n.reward=gold", "best_of_n.kl_reference_samples=4")
    policy = run_method(ws)
    prompts = ws.prompts("train", 8)
    torch.manual_seed(0)
    ours = policy.sample(prompts, **SAMPLING, runtime=ws.runtime)
    torch.manual_seed(0)
    plain = ws.sft.sample(prompts, **SAMPLING, runtime=ws.runtime)
    assert ours.completions == plain.completions
    assert torch.equal(ours.batch.input_ids, plain.batch.input_ids)
    summary = {"kl_mean": 0.0, "kl_sem": 0.0}
    policy.summarize_kl(summary)
    assert summary["kl_mean"] == 0.0 and summary["kl_kind"] == "analytic" and summary["best_of_n"] == 1
    np.testing.assert_array_equal(policy.sequence_kl(ws.reference_for(policy), ours, ws.runtime), np.zeros(8))


def test_best_of_n_kl_analytic_and_measured(make_ws):
    ws = make_ws("best_of_n", "best_of_n.n=4", "best_of_n.reward=gold", "best_of_n.kl_reference_samples=16")
    policy = run_method(ws)
    summary = {"kl_mean": 0.3, "kl_sem": 0.01}
    policy.summarize_kl(summary)  # the analytic KL is reported; the sampled estimate stays as a diagnostic
    assert summary["kl_mean"] == pytest.approx(math.log(4) - 3 / 4) and summary["kl_kind"] == "analytic"
    assert summary["kl_sampled_estimate"] == 0.3 and summary["best_of_n"] == 4
    prompts = ws.prompts("train", 24)
    torch.manual_seed(0)
    rollout = policy.sample(prompts, **SAMPLING, runtime=ws.runtime)
    kl = policy.sequence_kl(ws.reference_for(policy), rollout, ws.runtime)
    assert kl.shape == (24,) and np.isfinite(kl).all()
    assert kl.mean() >= 0
    assert kl.max() <= math.log(4) + 1e-9  # the ratio pi_bon / pi_ref never exceeds n


def test_log_ratio_estimate_matches_exact_kl():
    """Simulated rewards: the mean estimate over best-of-n draws approaches the exact KL, for a continuous
    reward (log n - (n-1)/n) and a discrete one with ties (sum of (F^n - F-^n) log((F^n - F-^n) / p))."""
    rng = np.random.default_rng(0)
    n, m, draws = 4, 200, 2000
    best = rng.random((draws, n)).max(axis=1)
    refs = rng.random((draws, m))
    estimate = np.mean([bon.log_ratio_estimate(r, ref, n) for r, ref in zip(best, refs)])
    assert estimate == pytest.approx(bon.analytic_kl(n), abs=0.04)

    p = np.array([0.5, 0.3, 0.2])  # rewards 0, 1, 2
    cdf = np.cumsum(p)
    mass = cdf ** n - (cdf - p) ** n
    exact = float(np.sum(mass * np.log(mass / p)))
    best = rng.choice(3, size=(draws, n), p=p).max(axis=1)
    refs = rng.choice(3, size=(draws, m), p=p)
    estimate = np.mean([bon.log_ratio_estimate(r, ref, n) for r, ref in zip(best, refs)])
    assert estimate == pytest.approx(exact, abs=0.04)
    assert exact < bon.analytic_kl(n)  # the analytic value is an upper bound
    assert bon.log_ratio_estimate(1.0, np.array([0.0, 2.0, 3.0]), 1) == 0.0


def test_best_of_n_through_the_evaluator(make_ws, tmp_path):
    """The evaluator reports Best-of-N's analytic KL, keeps the sampled estimate as a diagnostic, and counts
    all n candidates as the evaluation's generation cost."""
    ws = make_ws("best_of_n", "best_of_n.n=2", "best_of_n.reward=gold", "best_of_n.kl_reference_samples=4",
                 "eval.n_prompts=6", "eval.max_new_tokens=6")
    policy = run_method(ws)
    run = Run(ws.recipe, tmp_path / "evalrun", ws.runtime, cache_dir=tmp_path / "cache")
    run.ws.provide(gold=letter_count)
    found, samples = evaluate_artifact(run.ws, policy)
    summary = found.to_dict()
    samples = samples[1.0]
    assert summary["best_of_n"] == 2 and summary["kl_kind"] == "analytic"
    assert summary["kl_mean"] == pytest.approx(math.log(2) - 0.5)
    # a closed form has no interval
    assert summary["kl_ci_low"] == summary["kl_ci_high"] == summary["kl_mean"]
    assert math.isfinite(summary["kl_sampled_estimate"])
    assert all(k["kl"] <= math.log(2) + 1e-9 for k in samples)
    assert summary["eval_generated_sequences"] == 2 * 6 == 2 * summary["n_samples"]
    policy.save(tmp_path / "saved")
    assert (tmp_path / "saved" / bon.META_FILE).is_file()
