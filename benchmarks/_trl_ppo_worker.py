"""The trl side of ``benchmarks/ppo_vs_trl.py``: runs trl 1.12's ``trl.experimental.ppo.PPOTrainer`` on the
models and prompts that script saved, one PPO iteration at a time, when the script says go.

It runs under the benchmark-only virtual environment (``benchmarks/.venv-trl112``, trl 1.12, which alignkit
itself does not accept), never under alignkit's own, and imports nothing from alignkit:

    benchmarks/.venv-trl112/bin/python benchmarks/_trl_ppo_worker.py SETUP.json

``SETUP.json`` (written by ppo_vs_trl.py) names the policy and reward model folders, the prompts and the
settings. :class:`Lockstep` (also used by alignkit's side) is the protocol: the worker loads everything
(untimed), says it is ready, then runs each iteration only after reading ``go`` on stdin and reports the
wall and CPU time it took, so the script can interleave the two sides iteration by iteration.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

# before torch, transformers and trl are imported: offline, quiet, no progress bars
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")


class Lockstep:
    """A worker's side of the protocol (standard library only: both environments import it).

    Messages are JSON lines on the process's original stdout; everything libraries print goes to stderr
    instead. ``begin`` blocks until the script writes ``go`` on stdin and starts the clocks; ``end`` reports
    the iteration's wall time and CPU time (user + system, all threads of this process)."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # library prints (trl's "===training policy===", warnings) go to stderr
        self.wall = self.cpu = 0.0

    def send(self, **message) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def begin(self) -> None:
        line = sys.stdin.readline()
        if line.strip() != "go":
            sys.exit(f"expected 'go' from ppo_vs_trl.py, got {line!r}")
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def end(self, **extra) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.send(wall=wall, cpu=cpu, **extra)


def main(setup_path: str) -> None:
    lock = Lockstep()
    setup = json.loads(open(setup_path).read())
    s = setup["settings"]
    import torch

    torch.set_num_threads(s["threads"])
    warnings.filterwarnings("ignore")
    import datasets
    import transformers
    import trl
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    datasets.disable_progress_bars()
    assert trl.__version__.startswith("1.12."), f"expected trl 1.12, got {trl.__version__}"

    # --- untimed: models, tokenizer, prompts (the same folders and prompt texts alignkit reads)
    load_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(setup["policy"], padding_side="left")  # trl's PPO needs left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    fp32 = dict(dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(setup["policy"], **fp32)
    ref_policy = AutoModelForCausalLM.from_pretrained(setup["policy"], **fp32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(setup["reward"], num_labels=1, **fp32)
    value_model = AutoModelForSequenceClassification.from_pretrained(setup["reward"], num_labels=1, **fp32)
    for model in (reward_model, value_model):
        model.config.pad_token_id = tokenizer.pad_token_id
    ids = tokenizer(setup["prompts"], add_special_tokens=False)["input_ids"]
    dataset = datasets.Dataset.from_dict({"input_ids": ids})
    iterations = s["warmup_iterations"] + s["iterations"]
    config = PPOConfig(
        output_dir=setup["output_dir"], seed=s["seed"],
        # one rollout of `rollout_size` prompts per iteration, generated and scored in one batch, optimised
        # in rollout_size / minibatch_size minibatches (one optimiser step each, no accumulation) per epoch
        per_device_train_batch_size=s["rollout_size"], gradient_accumulation_steps=1,
        num_mini_batches=s["rollout_size"] // s["minibatch_size"], num_ppo_epochs=s["ppo_epochs"],
        local_rollout_forward_batch_size=s["rollout_size"], total_episodes=iterations * s["rollout_size"],
        response_length=s["max_new_tokens"], temperature=s["temperature"], stop_token="eos",
        kl_coef=s["kl_coef"], kl_estimator="k1", cliprange=s["clip_range"],
        cliprange_value=s["clip_range_value"], vf_coef=s["vf_coef"], gamma=s["gamma"], lam=s["lam"],
        whiten_rewards=False, learning_rate=s["lr"], num_sample_generations=0, use_cpu=True, bf16=False,
        fp16=False, gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
    )

    # completion tokens sampled per iteration, EOS included: trl cuts each response after its first stop
    # token with this function, once per rollout (alignkit's sampler keeps the same tokens)
    generated: list[int] = []
    truncate = ppo_module.truncate_response

    def counting_truncate(stop_token_id, pad_token_id, responses):
        is_stop = responses == stop_token_id
        first = torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, responses.shape[1])
        generated.append(int(first.sum()))
        return truncate(stop_token_id, pad_token_id, responses)

    # the rollout's sampling: one batch_generation call per iteration (the whole rollout is one chunk)
    generation_s: list[float] = []
    batch_generation = ppo_module.batch_generation

    def timed_generation(*a, **k):
        start = time.perf_counter()
        try:
            return batch_generation(*a, **k)
        finally:
            generation_s.append(time.perf_counter() - start)

    ppo_module.truncate_response, ppo_module.batch_generation = counting_truncate, timed_generation

    class Step(TrainerCallback):
        """trl calls on_step_end once per PPO iteration (rollout + optimisation): report, wait for go."""

        done = 0

        def on_step_end(self, args, state, control, **kwargs):
            lock.end(tokens=generated[-1], sampling_s=generation_s[-1])
            self.done += 1
            if self.done < iterations:
                lock.begin()

    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, value_model=value_model, train_dataset=dataset,
                         eval_dataset=dataset.select(range(min(8, len(dataset)))), callbacks=[Step()])
    trainer.remove_callback(PrinterCallback)  # it prints every iteration's metrics when tqdm is off
    optimizer_steps = [0]
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    inner.register_step_post_hook(lambda *_: optimizer_steps.__setitem__(0, optimizer_steps[0] + 1))
    lock.send(ready=True, load_s=time.perf_counter() - load_start, threads=torch.get_num_threads(),
              optim=str(getattr(config.optim, "value", config.optim)),
              versions={"trl": trl.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__, "python": sys.version.split()[0]})

    lock.begin()
    trainer.train()
    lock.send(finished=True, optimizer_steps=optimizer_steps[0], iterations_run=trainer.state.global_step)


if __name__ == "__main__":
    main(sys.argv[1])
