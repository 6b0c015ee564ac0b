"""FSDP2 (accelerate's plugin, one process) against plain single-device training: the same random GPT-2, the
same batches, the same AdamW, in fp32; their loss curves must agree within ``TOLERANCE`` nats at every step.

alignkit's runtime refuses FSDP (accelerate enables it only on accelerators, so it was never seen to work);
this check is what a GPU run must pass before that refusal can be lifted. It does not use alignkit's runtime.
Without CUDA only the plain curve runs and the FSDP side reports "skipped".

    python benchmarks/gpu/fsdp_check.py [--steps 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import torch

TOLERANCE = 1e-3  # max |loss_fsdp - loss_plain| over the steps, nats (fp32 on both sides)


def build_model(seed: int = 0):
    """A small random GPT-2 (4 layers x 256), the same weights for the same seed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=4096, n_embd=256, n_layer=4, n_head=4, n_positions=128,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def batches(steps: int, batch: int = 8, length: int = 64, seed: int = 1) -> list[torch.Tensor]:
    """Fixed random token batches, the same for both sides."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 4096, (batch, length), generator=generator) for _ in range(steps)]


def train(model, optimizer, data: list[torch.Tensor], device, backward=None) -> list[float]:
    """Causal-LM loss on each batch, one optimiser step each; returns the losses."""
    losses = []
    model.train()
    for ids in data:
        ids = ids.to(device)
        loss = model(input_ids=ids, labels=ids).loss
        (backward or (lambda x: x.backward()))(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def plain_curve(data: list[torch.Tensor], device: torch.device) -> list[float]:
    model = build_model().to(device)
    return train(model, torch.optim.AdamW(model.parameters(), lr=1e-3), data, device)


def one_process_group_env() -> None:
    """What ``accelerate launch --num_processes 1`` (torchrun) would set, unless a launcher already did: a
    one-process group, so accelerate takes its multi-GPU path, where FSDP lives."""
    if "LOCAL_RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def fsdp_curve(data: list[torch.Tensor]) -> tuple[list[float], str]:
    """The same training under accelerate's FSDP2 plugin; returns the losses and the distributed type."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin

    one_process_group_env()
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["GPT2Block"],
                                            reshard_after_forward=True)
    accelerator = Accelerator(mixed_precision="no", fsdp_plugin=plugin)
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    losses = train(model, optimizer, data, accelerator.device, backward=accelerator.backward)
    kind = accelerator.distributed_type.value
    accelerator.end_training()
    return losses, kind


def check(steps: int) -> dict:
    """Both curves (the FSDP one only on CUDA) and the verdict."""
    data = batches(steps)
    cuda = torch.cuda.is_available()
    plain = plain_curve(data, torch.device("cuda" if cuda else "cpu"))
    result = {"steps": steps, "tolerance_nats": TOLERANCE, "plain_losses": plain}
    if not cuda:
        return {**result, "status": "skipped",
                "reason": "no CUDA: accelerate enables FSDP only on accelerators"}
    sharded, kind = fsdp_curve(data)
    worst = max(abs(a - b) for a, b in zip(plain, sharded))
    within = kind == "FSDP" and worst <= TOLERANCE
    return {**result, "fsdp_losses": sharded, "distributed_type": kind, "max_abs_diff": worst,
            "status": "ok" if within else "failed",
            "met": within, "loss_fell": plain[-1] < plain[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write the result to this JSON file")
    args = parser.parse_args()
    result = check(args.steps)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_losses")}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
