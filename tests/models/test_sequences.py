"""Log-probs count completion tokens only, whatever the padding; sampled rollouts score consistently;
sequence KL is never negative and is exactly zero against itself."""

from __future__ import annotations

import torch
from tiny import cpu_runtime, tiny_gpt2, tiny_tokenizer

from alignkit.eval.kl import sequence_kl
from alignkit.models.policy import Policy, Reference
from alignkit.models.sequences import SequenceBatch, encode_pairs, sequence_logprobs, token_logprobs

CPU = cpu_runtime()


def make_policy(seed=0):
    tok = tiny_tokenizer()
    return Policy(tiny_gpt2(tok, seed=seed), tok, torch.device("cpu"))


def left_pad(batch: SequenceBatch, extra: int, pad_id: int) -> SequenceBatch:
    pad = lambda t, v: torch.cat([torch.full((t.shape[0], extra), v, dtype=t.dtype), t], dim=1)  # noqa: E731
    return SequenceBatch(pad(batch.input_ids, pad_id), pad(batch.attention_mask, 0),
                         pad(batch.completion_mask, 0))


def test_only_completion_tokens_are_scored():
    policy = make_policy()
    batch = encode_pairs(policy.tokenizer, ["the movie was", "i"], [" great", " loved this story"],
                         max_length=32)
    assert batch.target_mask.sum(-1).tolist() == [1.0, 3.0]  # prompt and padding are never targets
    logps = token_logprobs(policy.model, batch)
    assert (logps[batch.target_mask == 0] == 0).all() and (logps[batch.target_mask == 1] < 0).all()


def test_padding_side_and_amount_do_not_change_sequence_logprobs():
    policy = make_policy()
    batch = encode_pairs(policy.tokenizer, ["the movie was", "i"], [" great", " loved this story"],
                         max_length=32)
    right = sequence_logprobs(policy.model, batch)
    shifted = sequence_logprobs(policy.model, left_pad(batch, 5, policy.tokenizer.pad_token_id))
    torch.testing.assert_close(right, shifted, rtol=1e-5, atol=1e-5)
    # changing what sits in padded positions changes nothing either
    noisy = SequenceBatch(batch.input_ids.masked_fill(batch.attention_mask == 0, 7), batch.attention_mask,
                          batch.completion_mask)
    torch.testing.assert_close(sequence_logprobs(policy.model, noisy), right)


def test_sampled_tokens_are_scored_as_sampled_and_masked_after_eos():
    policy = make_policy()
    torch.manual_seed(0)
    rollout = policy.sample(["the movie", "i hated this story it was"] * 8, max_new_tokens=12, runtime=CPU)
    batch = rollout.batch
    eos = policy.tokenizer.eos_token_id
    for row_ids, row_mask in zip(batch.input_ids, batch.completion_mask):
        kept = row_ids[row_mask.bool()].tolist()
        assert eos not in kept[:-1]  # nothing is scored after the first EOS
    assert any(eos in r[m.bool()].tolist() for r, m in zip(batch.input_ids, batch.completion_mask))
    # the left-padded rollout scores exactly like the same token ids laid out right-padded
    rows = [ids[mask.bool()] for ids, mask in zip(batch.input_ids, batch.attention_mask)]
    width = max(len(r) for r in rows)
    right = SequenceBatch(torch.full((len(rows), width), policy.tokenizer.pad_token_id),
                          torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width,
                                                                                       dtype=torch.long))
    for i, (r, m, a) in enumerate(zip(rows, batch.completion_mask, batch.attention_mask)):
        right.input_ids[i, :len(r)] = r
        right.attention_mask[i, :len(r)] = 1
        right.completion_mask[i, :len(r)] = m[a.bool()]
    torch.testing.assert_close(sequence_logprobs(policy.model, batch), sequence_logprobs(policy.model, right),
                               rtol=1e-5, atol=1e-4)


def test_sequence_kl_is_zero_against_itself_and_never_negative():
    policy = make_policy(seed=0)
    torch.manual_seed(1)
    rollout = policy.sample(["the movie", "i", "a wonderful cast"] * 10, max_new_tokens=10, runtime=CPU)
    same = sequence_kl(policy, Reference(policy), rollout, CPU)
    assert (same == 0).all()
    other = Reference(make_policy(seed=3))
    kl = sequence_kl(policy, other, rollout, CPU)
    assert (kl > 0).all() and kl.shape == (30,)


def test_exact_kl_and_sampled_log_ratio_agree_on_average():
    """Both estimate the same sequence KL on the policy's own samples: E[sum log pi/pi_ref] = E[sum KL_t]."""
    policy, reference = make_policy(seed=0), Reference(make_policy(seed=5))
    torch.manual_seed(2)
    rollout = policy.sample(["the movie was"] * 400, max_new_tokens=6, runtime=CPU)
    exact = sequence_kl(policy, reference, rollout, CPU)
    with torch.no_grad():
        k1 = (policy.token_logprobs(rollout.batch) - reference.token_logprobs(rollout.batch)).sum(-1).numpy()
    sem = k1.std() / len(k1) ** 0.5
    assert abs(exact.mean() - k1.mean()) < 4 * sem, (exact.mean(), k1.mean(), sem)


def test_first_token_frequencies_match_the_scored_distribution():
    """No hidden logits processor (top-k, min_new_tokens, ...): over 3000 one-token samples, how often EOS
    comes first matches the model's own probability for it, which is what token_logprobs scores."""
    policy = make_policy(seed=0)
    eos = policy.tokenizer.eos_token_id
    batch = encode_pairs(policy.tokenizer, ["the movie"], [" was"], max_length=16)
    with torch.no_grad():
        last_prompt_position = int(batch.completion_mask[0].argmax()) - 1
        logits = policy.model(input_ids=batch.input_ids[:, :last_prompt_position + 1]).logits[0, -1]
        p_eos = torch.softmax(logits.float(), -1)[eos].item()
    torch.manual_seed(0)
    rollout = policy.sample(["the movie"] * 3000, max_new_tokens=1, batch_size=1000, runtime=CPU)
    first = rollout.batch.input_ids[:, -1]
    freq = (first == eos).float().mean().item()
    sigma = (p_eos * (1 - p_eos) / 3000) ** 0.5
    assert p_eos > 0.005 and abs(freq - p_eos) < 4 * sigma, (freq, p_eos)
