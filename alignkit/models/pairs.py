"""Preference pairs as batches of a policy: chosen and rejected completions encoded together, and the
reference pass over every training pair that the DPO family and KTO share (cached by the workspace)."""

from __future__ import annotations

import torch

from alignkit.runtime import Runtime


def pair_batch(policy, data, index: list[int], append_eos: bool):
    """The chosen and rejected completions of pairs ``index`` as one batch of ``policy``'s: chosen
    rows first."""
    chosen_eos, rejected_eos = data.eos_flags(index, append_eos)
    prompts = [data.prompts[i] for i in index]
    return policy.encode(prompts * 2, [data.chosen[i] for i in index] + [data.rejected[i] for i in index],
                         chosen_eos + rejected_eos)


@torch.no_grad()
def reference_logprobs(reference, data, append_eos: bool, runtime: Runtime, batch_size: int = 64):
    """Summed reference log-probs of every pair's chosen and rejected completion [N], [N] (chunks shared
    out between ``runtime``'s processes under data parallelism)."""

    def score(_, start: int):
        index = list(range(start, min(start + batch_size, len(data))))
        return reference.sequence_logprobs(pair_batch(reference.policy, data, index,
                                                      append_eos)).cpu().chunk(2)

    parts = runtime.map_chunks(score, range(0, len(data), batch_size))
    return torch.cat([c for c, _ in parts]), torch.cat([r for _, r in parts])


@torch.no_grad()
def example_logprobs(reference, data, append_eos: bool, runtime: Runtime,
                     batch_size: int = 64) -> torch.Tensor:
    """Summed reference log-probs of every completion of unpaired data (prompt, completion, label) [N]."""
    eos = data.eos_flags(range(len(data)), append_eos)

    def score(_, start: int):
        index = list(range(start, min(start + batch_size, len(data))))
        batch = reference.policy.encode([data.prompts[i] for i in index],
                                        [data.completions[i] for i in index],
                                        [eos[i] for i in index])
        return reference.sequence_logprobs(batch).cpu()

    return torch.cat(runtime.map_chunks(score, range(0, len(data), batch_size)))
