"""KL(pi || pi_ref) under temperature / top-p sampling, checked exactly on a model small enough to enumerate
every completion: vocab {<pad>, <eos>, <unk>, a}, prompt "a a", max_new_tokens 3, generation stopping at the
first <eos> (kept) or after 3 tokens -- 1 + 3 + 3*3*4 = 40 completions. <pad> (id 0) and <unk> are ordinary
tokens mid-completion: ``Policy._sample_chunk`` masks only what follows the first <eos>.

Exact sequence distributions P (processed policy) and Q (processed reference) come from direct forward
passes; by the chain rule sum_y P(y) * sequence_kl(y) = KL(P || Q) exactly, and samples drawn with
``Policy.sample`` must follow P.

Two references, each with KL(P || Q) finite at every setting *by construction* (top-p nuclei of two unrelated
models rarely nest, which makes the KL +inf, see ``test_nucleus_mismatch_is_inf``):
- "independent": another random GPT-2 (other seed) whose final layer-norm gain is 1/16, so every next-token
  probability stays above 0.2 and its nucleus (top_p >= 0.8) never cuts a token;
- "tempered": the policy's network with the final layer-norm gain halved, i.e. exactly logits / 2: same
  token order, flatter, so its nucleus always contains the policy's while both cut tokens.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats
from tiny import cpu_runtime, tiny_gpt2, tiny_tokenizer
from transformers import GenerationConfig

from alignkit.eval import kl as kl_module
from alignkit.eval.kl import sampled_distribution_kl, sampling_logprobs, sequence_kl
from alignkit.models.policy import Policy, Reference, Rollout, sampling_config
from alignkit.models.sequences import SequenceBatch
from alignkit.rl.ops import full_kl_from_logits

SETTINGS = [(1.0, 1.0), (0.7, 1.0), (1.5, 1.0), (1.0, 0.8), (0.7, 0.9)]
MAX_NEW = 3
N_SAMPLES = 3000
INF = float("inf")

TOK = tiny_tokenizer(["a"])
PAD, EOS, A = TOK.pad_token_id, TOK.eos_token_id, TOK.convert_tokens_to_ids("a")
V = len(TOK)
PROMPT = "a a"
PROMPT_IDS = TOK(PROMPT, add_special_tokens=False)["input_ids"]
assert (V, PAD, EOS, A, PROMPT_IDS) == (4, 0, 1, 3, [3, 3])

CPU = cpu_runtime()


def _completions() -> list[tuple[int, ...]]:
    """Every completion generate can produce: up to MAX_NEW tokens from the whole vocab, ending at the
    first <eos> (included) or at MAX_NEW."""
    out = []

    def extend(prefix):
        if len(prefix) == MAX_NEW:
            out.append(prefix)
            return
        for t in range(V):
            if t == EOS:
                out.append(prefix + (t,))
            else:
                extend(prefix + (t,))

    extend(())
    return out


SEQS = _completions()
INDEX = {s: i for i, s in enumerate(SEQS)}
assert len(SEQS) == 1 + 3 + 3 * 3 * 4


def _scale_final_norm(model, factor: float):
    """Multiply the final layer-norm gain (its bias is 0, lm_head has none): logits become exactly
    factor * logits for a power-of-two factor."""
    with torch.no_grad():
        assert torch.count_nonzero(model.transformer.ln_f.bias) == 0
        model.transformer.ln_f.weight.mul_(factor)
    return model


@pytest.fixture(scope="module")
def models():
    policy = tiny_gpt2(TOK, seed=0, initializer_range=0.2)
    independent = _scale_final_norm(tiny_gpt2(TOK, seed=1, initializer_range=0.3), 1 / 16)
    tempered = _scale_final_norm(copy.deepcopy(policy), 0.5)
    sharp = tiny_gpt2(TOK, seed=1, initializer_range=0.5)  # unrelated and peaked: nuclei that do not nest
    return {"policy": policy, "independent": independent, "tempered": tempered, "sharp": sharp}


def _policy(model) -> Policy:
    return Policy(model, TOK, torch.device("cpu"), max_length=16)


def _reference(policy: Policy, model) -> Reference:
    return Reference(policy, frozen_model=model)


def _enumerated_rollout() -> Rollout:
    """All SEQS as a rollout batch laid out like ``Policy._sample_chunk``: prompt + completion, positions
    after
    the first <eos> padded with attention 0 and completion mask 0."""
    width = len(PROMPT_IDS) + MAX_NEW
    ids = torch.full((len(SEQS), width), PAD, dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    p = len(PROMPT_IDS)
    for i, s in enumerate(SEQS):
        ids[i, :p + len(s)] = torch.tensor(PROMPT_IDS + list(s))
        attention[i, :p + len(s)] = 1
        completion[i, p:p + len(s)] = 1
    texts = TOK.batch_decode(ids[:, p:].masked_fill(completion[:, p:] == 0, PAD), skip_special_tokens=True)
    return Rollout([PROMPT] * len(SEQS), texts, SequenceBatch(ids, attention, completion),
                   [s[-1] == EOS for s in SEQS])


def _exact_logprobs(model, temperature: float, top_p: float) -> torch.Tensor:
    """log P(y) [len(SEQS)] float64 of every completion under the processed model: one plain forward pass
    per sequence (right-padded, padding after the completion cannot affect it), next-token
    ``sampling_logprobs`` multiplied along the completion."""
    p = len(PROMPT_IDS)
    ids = torch.full((len(SEQS), p + MAX_NEW), PAD, dtype=torch.long)
    for i, s in enumerate(SEQS):
        ids[i, :p + len(s)] = torch.tensor(PROMPT_IDS + list(s))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    logps = sampling_logprobs(logits, temperature, top_p).double()
    return torch.stack([sum(logps[i, p - 1 + j, t] for j, t in enumerate(s)) for i, s in enumerate(SEQS)])


def _exact_kl(logP: torch.Tensor, logQ: torch.Tensor) -> float:
    """KL(P || Q) = sum_y P(y) log(P(y) / Q(y)); +inf if some P(y) > 0 = Q(y)."""
    on = logP > -INF
    if bool((on & (logQ == -INF)).any()):
        return INF
    return float((logP[on].exp() * (logP[on] - logQ[on])).sum())


def _sampled_indices(rollout: Rollout) -> np.ndarray:
    p = len(PROMPT_IDS)
    ids, mask = rollout.batch.input_ids[:, p:], rollout.batch.completion_mask[:, p:]
    return np.array([INDEX[tuple(row[m.bool()].tolist())] for row, m in zip(ids, mask)])


def _chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson goodness of fit, outcomes with expected count < 5 pooled into one bin."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    exp = exp * obs.sum() / exp.sum()
    return float(stats.chisquare(obs, exp).pvalue)


# ------------------------------------------------------------------ sampling_logprobs vs transformers


@pytest.mark.parametrize("temperature, top_p", SETTINGS + [(0.5, 0.3), (2.0, 0.5), (1.0, 0.05)])
def test_sampling_logprobs_match_generate_processors(models, temperature, top_p):
    """The very processors ``generate`` builds from ``sampling_config`` (temperature, then top-p), on logits
    with many exact ties and some -inf: identical log-probabilities, -inf outside the nucleus."""
    torch.manual_seed(0)
    logits = (torch.randn(64, 12) * 2).round() / 2  # multiples of 0.5: plenty of ties across the cut
    logits[:4, :3] = -INF
    logits[4:8] = 0.0  # uniform: cumulative sums k/12 exactly at the cut for some top_p
    logits[8, 1:] = -200.0  # probabilities that underflow to 0: no nucleus at top_p = 1, as in generate
    config = sampling_config(TOK, max_new_tokens=MAX_NEW, temperature=temperature, top_p=top_p)
    processors = models["policy"]._get_logits_processor(generation_config=config, input_ids_seq_length=1,
                                                         device="cpu")
    names = [type(p).__name__ for p in processors]
    assert names == (["TemperatureLogitsWarper"] if temperature != 1.0 else []) + \
        (["TopPLogitsWarper"] if top_p < 1.0 else [])
    expected = torch.log_softmax(processors(torch.zeros(64, 1, dtype=torch.long), logits.clone()), dim=-1)
    got = sampling_logprobs(logits, temperature, top_p)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    # leading dims are batch dims
    assert torch.equal(sampling_logprobs(logits.view(4, 16, 12), temperature, top_p), got.view(4, 16, 12))


def test_nucleus_rule_by_hand():
    # probs 0.5, 0.3, 0.15, 0.05: ascending cumulative 0.05, 0.2, 0.5, 1.0 (top_p values keep clear of the
    # boundaries, where float rounding of the cumulative sum decides)
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda top_p, t=1.0: (sampling_logprobs(logits, t, top_p) > -INF).tolist()  # noqa: E731
    assert kept(0.97) == [True, True, True, True]
    assert kept(0.81) == [True, True, True, False]  # cumulative 0.05 <= 1 - 0.81: removed
    assert kept(0.79) == [True, True, False, False]
    assert kept(0.51) == [True, True, False, False]
    assert kept(0.49) == [True, False, False, False]
    assert kept(0.01) == [True, False, False, False]  # at least one token is always kept
    # a cumulative probability equal to 1 - top_p is removed (uniform over 4: exact sums 0.25, 0.5, 0.75)
    assert sum(sampling_logprobs(torch.zeros(4), 1.0, 0.75) > -INF) == 3
    assert sum(sampling_logprobs(torch.zeros(4), 1.0, 0.5) > -INF) == 2
    assert sum(sampling_logprobs(torch.zeros(4), 1.0, 0.25) > -INF) == 1
    assert torch.allclose(sampling_logprobs(logits, 1.0, 0.51).exp(), torch.tensor([0.625, 0.375, 0, 0]))
    # temperature first, then the nucleus: at T = 0.5 the probs are (0.25, 0.09, 0.0225, 0.0025) / 0.365, the
    # ascending cumulative reaches 0.315 <= 1 - 0.65 at the second token, so only the top token survives;
    # top-p before temperature would have kept two
    assert kept(0.65, 0.5) == [True, False, False, False]


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, 1.5)])
def test_invalid_settings(temperature, top_p):
    with pytest.raises(ValueError):
        sampling_logprobs(torch.zeros(3), temperature, top_p)
    with pytest.raises(ValueError):
        sampled_distribution_kl(torch.zeros(3), torch.zeros(3), temperature, top_p)


# ------------------------------------------------------------------ (f) T = 1, top_p = 1 is the plain KL


def test_plain_kl_at_temperature_one(models):
    torch.manual_seed(0)
    logits, ref_logits = torch.randn(3, 5, 50) * 3, torch.randn(3, 5, 50) * 3
    assert torch.allclose(sampled_distribution_kl(logits, ref_logits, 1.0, 1.0),
                          full_kl_from_logits(logits, ref_logits), rtol=1e-5, atol=1e-6)
    assert torch.equal(sampled_distribution_kl(logits, logits, 1.0, 1.0), torch.zeros(3, 5))
    batch = _enumerated_rollout().batch
    with torch.no_grad():
        a = models["policy"](input_ids=batch.input_ids).logits
        b = models["independent"](input_ids=batch.input_ids).logits
    assert torch.allclose(sampled_distribution_kl(a, b, 1.0, 1.0), full_kl_from_logits(a, b), rtol=1e-5,
                          atol=1e-6)


def test_sampled_distribution_kl_by_hand():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    ref_logits = torch.tensor([0.25, 0.25, 0.25, 0.25]).log()
    # top_p 0.6: p = (0.625, 0.375, 0, 0); q cuts one of its four tied tokens (cumulative 0.25 <= 0.4) --
    # which one is decided by torch.sort, as in generate
    p = torch.tensor([0.625, 0.375])
    q = sampling_logprobs(ref_logits, 1.0, 0.6).exp()
    assert int((q > 0).sum()) == 3
    got = sampled_distribution_kl(logits, ref_logits, 1.0, 0.6)
    if bool((q[:2] > 0).all()):
        assert math.isclose(float(got), float((p * (p * 3).log()).sum()), rel_tol=1e-6)
    else:
        assert got == INF
    # at top_p 0.9 the reference keeps all 4 (cumulative 0.25 > 0.1) and p keeps 3
    p3 = torch.tensor([0.5, 0.3, 0.15]) / 0.95
    want = float((p3 * (p3 / 0.25).log()).sum())
    assert math.isclose(float(sampled_distribution_kl(logits, ref_logits, 1.0, 0.9)), want, rel_tol=1e-6)


# ------------------------------------------------------------------ (e) non-nesting nuclei: +inf


def test_nucleus_mismatch_is_inf(models):
    # p keeps only token 0, q only token 3: q cannot produce what p samples
    p_logits, q_logits = torch.tensor([2.0, 1.0, 0.0, -1.0]), torch.tensor([-1.0, 0.0, 1.0, 2.0])
    assert sampled_distribution_kl(p_logits, q_logits, 1.0, 0.5) == INF
    assert math.isfinite(float(sampled_distribution_kl(p_logits, q_logits, 1.0, 1.0)))
    # q keeping more than p is fine (p = 0 terms contribute nothing): flatter, same order, nucleus {0, 1}
    assert (sampling_logprobs(p_logits / 2, 1.0, 0.5) > -INF).tolist() == [True, True, False, False]
    assert math.isfinite(float(sampled_distribution_kl(p_logits, p_logits / 2, 1.0, 0.5)))

    # the enumerated model pair: at top_p 0.3 each nucleus is its argmax, and they differ after the prompt
    top_p = 0.3
    policy = _policy(models["policy"])
    reference = _reference(policy, models["sharp"])
    prompt = torch.tensor([PROMPT_IDS])
    with torch.no_grad():
        first_p = sampling_logprobs(models["policy"](input_ids=prompt).logits[0, -1], 1.0, top_p)
        first_q = sampling_logprobs(models["sharp"](input_ids=prompt).logits[0, -1], 1.0, top_p)
    assert bool(((first_p > -INF) & (first_q == -INF)).any()), "premise: nuclei differ after the prompt"
    logP, logQ = _exact_logprobs(models["policy"], 1.0, top_p), _exact_logprobs(models["sharp"], 1.0, top_p)
    assert _exact_kl(logP, logQ) == INF
    seq = sequence_kl(policy, reference, _enumerated_rollout(), CPU, temperature=1.0, top_p=top_p)
    assert np.all(np.isinf(seq[(logP > -INF).numpy()]))  # every sequence passes through the first position


# ------------------------------------------------------------------ (a) + (b) exact unbiasedness


@pytest.mark.parametrize("ref_name", ["independent", "tempered"])
@pytest.mark.parametrize("temperature, top_p", SETTINGS)
def test_sequence_kl_is_exactly_unbiased(models, ref_name, temperature, top_p):
    """sum_y P(y) sequence_kl(y) = KL(P || Q) over every possible completion (the chain rule)."""
    logP = _exact_logprobs(models["policy"], temperature, top_p)
    logQ = _exact_logprobs(models[ref_name], temperature, top_p)
    assert math.isclose(float(logP.exp().sum()), 1.0, rel_tol=1e-5)  # the enumeration covers everything
    assert math.isclose(float(logQ.exp().sum()), 1.0, rel_tol=1e-5)
    if top_p < 1:  # the nuclei do cut completions: the policy's, and the tempered reference's too
        assert int((logP == -INF).sum()) > 0
        assert bool((logQ == -INF).any()) == (ref_name == "tempered")
    exact = _exact_kl(logP, logQ)
    assert math.isfinite(exact) and exact > 0.05

    policy = _policy(models["policy"])
    seq = sequence_kl(policy, _reference(policy, models[ref_name]), _enumerated_rollout(), CPU,
                      temperature=temperature, top_p=top_p)
    assert seq.dtype == np.float64 and seq.shape == (len(SEQS),)
    assert np.all(seq >= 0)
    estimate = float((logP.exp().numpy() * seq).sum())
    assert math.isclose(estimate, exact, rel_tol=1e-5), (estimate, exact)


def test_sequence_kl_chunking(models, monkeypatch):
    policy = _policy(models["policy"])
    reference = _reference(policy, models["independent"])
    rollout = _enumerated_rollout()
    whole = sequence_kl(policy, reference, rollout, CPU, temperature=0.7, top_p=0.9)
    monkeypatch.setattr(kl_module, "CHUNK_ROWS", 7)
    assert np.allclose(sequence_kl(policy, reference, rollout, CPU, temperature=0.7, top_p=0.9), whole,
                       rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ (c) Policy.sample follows P


@pytest.mark.parametrize("temperature, top_p", SETTINGS)
def test_samples_follow_enumerated_distribution(models, temperature, top_p):
    """Completions sampled by ``Policy.sample`` at (T, top_p) follow P (chi-square p > 1e-3 with rare outcomes
    pooled, and never a completion of probability 0); the mean sampled sequence_kl is within 4 standard
    errors of the exact KL for both references."""
    policy = _policy(models["policy"])
    logP = _exact_logprobs(models["policy"], temperature, top_p)
    P = logP.exp().numpy()
    torch.manual_seed(1000 + SETTINGS.index((temperature, top_p)))
    rollout = policy.sample([PROMPT] * N_SAMPLES, max_new_tokens=MAX_NEW, temperature=temperature,
                            top_p=top_p, runtime=CPU,
                            batch_size=1000)
    counts = np.bincount(_sampled_indices(rollout), minlength=len(SEQS))
    assert counts[P == 0].sum() == 0, "sampled a completion outside the nucleus"
    assert _chi_square_pvalue(counts, P) > 1e-3
    assert 0.5 * np.abs(counts / N_SAMPLES - P).sum() < 0.05  # total variation
    for ref_name in ("independent", "tempered"):
        exact = _exact_kl(logP, _exact_logprobs(models[ref_name], temperature, top_p))
        seq = sequence_kl(policy, _reference(policy, models[ref_name]), rollout, CPU, temperature=temperature,
                          top_p=top_p)
        sem = seq.std(ddof=1) / math.sqrt(len(seq))
        assert abs(seq.mean() - exact) < 4 * sem, (ref_name, seq.mean(), exact, sem)


# ------------------------------------------------------------------ (d) the model's generation_config is
# ignored


def test_model_generation_config_does_not_leak():
    model = tiny_gpt2(TOK, seed=0, initializer_range=0.2)  # the "policy" network, owned by this test
    hostile = GenerationConfig(repetition_penalty=2.0, min_new_tokens=2, top_k=2, no_repeat_ngram_size=1,
                               bad_words_ids=[[A]], min_p=0.3, do_sample=True,
                               temperature=0.3, top_p=0.5, eos_token_id=EOS, pad_token_id=PAD)
    model.generation_config = hostile
    P = _exact_logprobs(model, 1.0, 1.0).exp().numpy()
    p_eos_first = P[INDEX[(EOS,)]]
    p_has_a = sum(P[i] for i, s in enumerate(SEQS) if A in s)
    assert 0.05 < p_eos_first and 0.2 < p_has_a < 0.8  # both statistics are informative

    enc = TOK([PROMPT] * N_SAMPLES, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(7)
    with torch.no_grad():  # power check: generate left to the model's own config is visibly different
        leaked = model.generate(**enc, max_new_tokens=MAX_NEW)[:, len(PROMPT_IDS):]
    assert not (leaked[:, 0] == EOS).any() and not (leaked == A).any()

    torch.manual_seed(8)
    rollout = _policy(model).sample([PROMPT] * N_SAMPLES, max_new_tokens=MAX_NEW, temperature=1.0, top_p=1.0,
                                    runtime=CPU,
                                    batch_size=1000)
    assert model.generation_config is hostile  # restored afterwards
    index = _sampled_indices(rollout)
    eos_first = np.mean(index == INDEX[(EOS,)])
    has_a = np.mean([A in SEQS[i] for i in index])
    for freq, prob in ((eos_first, p_eos_first), (has_a, p_has_a)):
        assert abs(freq - prob) < 4 * math.sqrt(prob * (1 - prob) / N_SAMPLES), (freq, prob)
    assert _chi_square_pvalue(np.bincount(index, minlength=len(SEQS)), P) > 1e-3
