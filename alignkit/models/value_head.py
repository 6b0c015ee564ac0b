"""A value head on the policy's own trunk: the memory-lean PPO layout. The value function reads the
policy's last hidden state through one linear layer instead of being a second full model (and a second
optimiser state); its gradient reaches the shared trunk through the combined PPO loss. With LoRA the
reference is the adapter-disabled policy too, so policy, reference and value share one base model."""

from __future__ import annotations

import torch
from torch import Tensor

from alignkit.models.sequences import SequenceBatch, position_ids


class SharedTrunkValue:
    """``token_values(batch) -> [B, T]`` from the policy's last hidden state; only the head is its own."""

    def __init__(self, policy):
        self.policy = policy
        hidden = policy.model.get_output_embeddings().weight.shape[1]
        self.head = torch.nn.Linear(hidden, 1).to(policy.device)
        torch.nn.init.zeros_(self.head.weight)  # starts at V = 0: no prior on returns, like a fresh head
        torch.nn.init.zeros_(self.head.bias)
        self.model = self.head  # what PPO puts in train/eval mode

    def parameters(self) -> list[torch.nn.Parameter]:
        """The head only: the trunk's trainable weights belong to the policy's optimiser."""
        return list(self.head.parameters())

    def token_values(self, batch: SequenceBatch) -> Tensor:
        """V at every position [B, T], a second forward pass through the (shared) trunk."""
        batch = batch.to(self.policy.device)
        outputs = self.policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    position_ids=position_ids(batch.attention_mask), use_cache=False,
                                    output_hidden_states=True)
        return self.head(outputs.hidden_states[-1].float()).squeeze(-1)

