"""DPO training throughput, alignkit against trl's ``DPOTrainer``, measured side by side in one process.

Both sides train the same model (fp32, CPU) on the same cached IMDb preference pairs, in the same order,
with the same batch size (pairs per step), loss (sigmoid), beta, learning rate, warm-up, gradient clipping,
max_length and number of steps. alignkit runs its own training path (``train_dpo``, the registered ``dpo``
method, with trajectory evaluation and checkpoints off); trl runs ``DPOTrainer.train()``.

What is timed, on each side separately:

* the reference pass: pi_ref's log-probs of every pair trained on, computed once before training
  (alignkit: ``reference_logprobs``, what its cached ``reference_logps`` stage runs; trl:
  ``precompute_ref_log_probs=True``, i.e. ``DPOTrainer._precompute_ref_logps``). Both cover exactly the
  ``steps x batch-size`` pairs trained on, with batches of ``batch-size`` pairs;
* the training loop: from the start of training (alignkit: the trainable policy is loaded; trl:
  ``on_train_begin``) to the end of the last optimiser step. Model loading is outside both timings.
  alignkit tokenizes each batch inside its loop (as in real runs); trl tokenizes its whole dataset in its
  constructor, outside the loop: that time is printed separately and not counted (a small edge to trl).

Tokens are the real (attention-mask) tokens of the batches that went through the policy forward with
gradients, chosen + rejected: alignkit's own ``Budget.add_batch`` count, and trl's collated batches counted
by a wrapper around its collator. trl appends EOS to every completion while alignkit appends it only where
the sampler stopped, and trl tokenizes prompt + completion together (a completion that continues the
prompt's last word merges with it), so trl's count is higher by about one token per sequence the sampler
cut off (printed and checked). Each side uses its own default AdamW (alignkit: ``torch.optim.AdamW``; trl:
transformers' default ``optim``, fused) and its own learning-rate decay after warm-up (neither changes the
work per step).

The two sides alternate (alignkit, trl, alignkit, trl, ...) after an untimed warm-up round, so machine
noise reaches both alike; the medians are reported. Both run in this one process under the same thread
count and OpenMP wait policy (default passive, as the alignkit CLI sets it: on a machine shared with other
busy processes, spinning idle threads slow every small op by a scheduler slice, which distorts the result
towards the side that launches fewer ops; ``--omp-wait-policy active`` measures that case).
Target: alignkit/trl tokens/s >= 1.0.

    python benchmarks/dpo_vs_trl.py [--steps 40] [--batch-size 64] [--repeats 3] [--threads N]
                                    [--device cuda] [--precision bf16] [--set KEY=VALUE]...

On a GPU (``--device cuda``) both sides run there, and ``--precision bf16`` puts both in bf16 autocast
(alignkit's ``precision: bf16``, trl's ``bf16=True``). ``--set`` overrides the recipe for both the pairs and
the training (e.g. a smaller ``preferences.n_prompts`` with a model of your own, so the pairs build fast).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

# before torch, transformers and tqdm are imported: offline, quiet, no progress bars on either side
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "alignkit" / "recipes" / "dpo_imdb.yaml"
BUILTIN = "builtin:tiny-gpt2-imdb"
TARGET = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per measurement, both sides")
    parser.add_argument("--batch-size", type=int, default=64, help="preference pairs per step (2x sequences)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed measurements per side (median reported)")
    parser.add_argument("--warmup-steps", type=int, default=3,
                        help="steps of the untimed warm-up round (0: none)")
    parser.add_argument("--model", default=BUILTIN,
                        help="model for both sides: builtin:ALIAS or a local folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--omp-wait-policy", choices=("passive", "active", "unset"), default="passive",
                        help="OMP_WAIT_POLICY for both sides: passive (idle threads sleep, as the alignkit "
                             "CLI sets), active (they spin), unset (OpenMP's default, or the caller's "
                             "environment)")
    parser.add_argument("--device", default="cpu", help="both sides' device: cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="both sides' training precision (bf16: autocast on both)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override, for the pairs and the training alike (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# shared inputs


def train_pairs(sets: list[str] = ()):
    """The cached training pairs of the bundled DPO recipe (with ``sets`` applied), read through alignkit's
    StageBuilder: built on first use, from the recipe's SFT model."""
    from alignkit.recipe import load_recipe
    from alignkit.stages.builder import StageBuilder

    return StageBuilder.for_recipe(load_recipe(RECIPE, list(sets))).train_pairs


def bench_recipe(model: str, steps: int, batch_size: int, device: str = "cpu", precision: str = "fp32",
                 sets: list[str] = ()):
    """The bundled DPO recipe with the benchmark's settings: training only (no trajectories, checkpoints)."""
    from alignkit.recipe import load_recipe

    return load_recipe(RECIPE, [*sets, f"model.name_or_path={model}", f"dpo.max_steps={steps}",
                                f"dpo.batch_size={batch_size}", "dpo.checkpoint_every=0",
                                "eval.every_steps=0", f"device={device}", f"precision={precision}"])


def trained_pairs(pairs, recipe):
    """The pairs a run of ``recipe`` trains on, and the order both sides see them in.

    Returns (subset, order): ``subset`` holds the first ``max_steps`` batches of alignkit's own shuffle of
    all training pairs; alignkit, given ``subset``, visits ``subset[i] for i in order`` (its batches over
    the subset, flattened), which is the order trl gets with sequential sampling."""
    from alignkit.training import batch_indices

    cfg = recipe.method_config("dpo")
    seed = recipe.seed if recipe.train_seed is None else recipe.train_seed
    picked = [i for batch in batch_indices(len(pairs), cfg, seed) for i in batch]
    if len(picked) < cfg.max_steps * cfg.batch_size or len(set(picked)) != len(picked):
        raise SystemExit(f"--steps x --batch-size must fit in one pass over the {len(pairs)} training pairs")
    subset = pairs.subset(picked)
    order = [i for batch in batch_indices(len(subset), cfg, seed) for i in batch]
    return subset, order


@dataclass
class Measurement:
    """One timed training run of one side."""

    side: str
    steps: int
    sequences: int
    tokens: int
    reference_s: float
    loop_s: float
    untimed_prep_s: float = 0.0  # trl's up-front dataset tokenization (alignkit's is inside its loop)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.loop_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.loop_s

    @property
    def tokens_per_s_with_reference(self) -> float:
        return self.tokens / (self.loop_s + self.reference_s)


# --------------------------------------------------------------------------------------------------
# alignkit


def alignkit_workspace(recipe, pairs):
    """A StageBuilder that trains on ``pairs`` and clocks the reference pass and the training loop."""
    from alignkit.models.pairs import reference_logprobs
    from alignkit.stages.builder import StageBuilder

    class TimedWorkspace(StageBuilder):
        """alignkit's StageBuilder, except: the pairs are given, the reference pass is computed (not read from
        the disk cache) and timed, and the loop is clocked from the policy load to the last step."""

        reference_s = loop_start = loop_end = 0.0

        @property
        def train_pairs(self):
            return pairs

        @cached_property
        def reference_logps(self):
            reference = self.reference_for(self.sft)  # the frozen SFT model, loaded before the clock starts
            start = time.perf_counter()
            logps = reference_logprobs(reference, pairs, self.recipe.preferences.append_eos, self.runtime)
            self.reference_s = time.perf_counter() - start
            return logps

        def load_policy(self):
            policy = super().load_policy()
            self.loop_start = time.perf_counter()
            return policy

        def step_done(self, step: int) -> None:
            self.loop_end = time.perf_counter()

    ws = TimedWorkspace.for_recipe(recipe)
    ws.ctx.trace = lambda policy: ws.step_done  # the training loop calls it after every optimiser step
    return ws


def run_alignkit(recipe, subset, steps: int) -> Measurement:
    """One alignkit DPO run through ``train_dpo``: reference pass, then ``steps`` optimiser steps."""
    from alignkit.methods.dpo import train_dpo

    cfg = recipe.method_config("dpo")
    ws = alignkit_workspace(recipe, subset)
    _ = ws.sft  # model loading is outside the timings, as on trl's side
    _ = ws.reference_logps
    train_dpo(ws, cfg)
    assert ws.budget.steps == steps, f"alignkit ran {ws.budget.steps} steps, expected {steps}"
    return Measurement("alignkit", ws.budget.steps, ws.budget.train_sequences, ws.budget.train_tokens,
                       ws.reference_s, ws.loop_end - ws.loop_start)


# --------------------------------------------------------------------------------------------------
# trl


class CountingCollator:
    """Wraps trl's collator: counts the sequences and real (attention-mask) tokens of each training batch."""

    def __init__(self, inner):
        self.inner = inner
        self.sequences = 0
        self.tokens = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        self.sequences += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())
        return batch


def trl_classes():
    """trl's DPOTrainer with its reference precompute timed, and a callback clocking the training loop."""
    import trl
    from transformers import TrainerCallback

    class TimedDPOTrainer(trl.DPOTrainer):
        reference_s = prepare_s = 0.0

        def _prepare_dataset(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._prepare_dataset(*args, **kwargs)
            finally:
                self.prepare_s += time.perf_counter() - start

        def _precompute_ref_logps(self, dataset, name, batch_size):
            start = time.perf_counter()
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                self.reference_s += time.perf_counter() - start

    class LoopClock(TrainerCallback):
        start = end = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    return TimedDPOTrainer, LoopClock


def trl_dataset(subset, order):
    """The pairs as trl's prompt/chosen/rejected dataset, in the order alignkit trains on them."""
    import datasets

    return datasets.Dataset.from_dict({"prompt": [subset.prompts[i] for i in order],
                                       "chosen": [subset.chosen[i] for i in order],
                                       "rejected": [subset.rejected[i] for i in order]})


def trl_config(recipe, output_dir: str):
    """trl's settings matching alignkit's recipe (device, precision, sigmoid loss, precomputed pi_ref
    log-probs)."""
    import trl

    cfg = recipe.method_config("dpo")
    return trl.DPOConfig(
        output_dir=output_dir, loss_type=["sigmoid"], beta=cfg.beta, learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        max_length=recipe.model.max_length,
        train_sampling_strategy="sequential", precompute_ref_log_probs=True, use_cpu=recipe.device == "cpu",
        bf16=recipe.precision == "bf16",
        fp16=False, gradient_checkpointing=False, report_to="none", logging_steps=cfg.log_every,
        save_strategy="no",
        dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=True, seed=recipe.seed,
    )


def run_trl(recipe, dataset, steps: int) -> Measurement:
    """One trl DPO run: DPOTrainer (whose __init__ precomputes the reference log-probs), then train()."""
    from transformers import PrinterCallback

    from alignkit.models.policy import Policy
    from alignkit.runtime import Runtime

    TimedDPOTrainer, LoopClock = trl_classes()
    # trl warns, once per distinct text, where a prompt's last token merges with its completion's first
    # (the sampled completions often continue a word); the token-count check below covers it
    logging.getLogger("trl").setLevel(logging.ERROR)
    policy = Policy.load(recipe.model, cache_dir=default_cache(), runtime=Runtime(recipe.device))
    clock = LoopClock()
    with tempfile.TemporaryDirectory(prefix="dpo-vs-trl-") as tmp:
        trainer = TimedDPOTrainer(model=policy.model, args=trl_config(recipe, tmp), train_dataset=dataset,
                                  processing_class=policy.tokenizer, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # it prints every log line when tqdm is off
        counter = trainer.data_collator = CountingCollator(trainer.data_collator)
        trainer.train()
    assert trainer.state.global_step == steps, f"trl ran {trainer.state.global_step} steps, expected {steps}"
    return Measurement("trl", trainer.state.global_step, counter.sequences, counter.tokens,
                       trainer.reference_s, clock.end - clock.start, trainer.prepare_s)


def default_cache() -> Path:
    from alignkit.cache import default_cache_dir

    return default_cache_dir()


# --------------------------------------------------------------------------------------------------
# the benchmark


def measure(args) -> tuple[list[Measurement], dict]:
    """Warm up, then alternate alignkit and trl ``args.repeats`` times each; returns every measurement and
    what both sides were given."""
    import torch

    pairs = train_pairs(args.sets)
    recipe = bench_recipe(args.model, args.steps, args.batch_size, args.device, args.precision, args.sets)
    subset, order = trained_pairs(pairs, recipe)
    dataset = trl_dataset(subset, order)
    if args.warmup_steps:
        warm = bench_recipe(args.model, args.warmup_steps, args.batch_size, args.device, args.precision,
                            args.sets)
        warm_subset, warm_order = trained_pairs(pairs, warm)
        run_alignkit(warm, warm_subset, args.warmup_steps)
        run_trl(warm, trl_dataset(warm_subset, warm_order), args.warmup_steps)
    results = []
    for repeat in range(args.repeats):
        for side in ("alignkit", "trl"):
            load = os.getloadavg()[0]
            result = run_alignkit(recipe, subset, args.steps) if side == "alignkit" else \
                run_trl(recipe, dataset, args.steps)
            print(f"  repeat {repeat + 1}/{args.repeats} {side:<8} {result.tokens_per_s:>9,.0f} tok/s "
                  f"(loop {result.loop_s:.2f} s, reference {result.reference_s:.2f} s; "
                  f"load average {load:.1f} at start)", flush=True)
            results.append(result)
    no_eos = sum(not e for e in (subset.chosen_ended or [False] * len(subset))) + \
        sum(not e for e in (subset.rejected_ended or [False] * len(subset)))
    optim = trl_config(recipe, "unused").optim
    setup = {"model": args.model, "device": args.device, "precision": args.precision, "steps": args.steps,
             "batch_size_pairs": args.batch_size,
             "pairs_trained": len(subset), "sequences_without_eos_in_alignkit": no_eos,
             "max_length": recipe.model.max_length, "beta": recipe.method_config("dpo").beta,
             "lr": recipe.method_config("dpo").lr, "threads": torch.get_num_threads(),
             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
             "optimizers": {"alignkit": "torch.optim.AdamW (defaults: single-tensor on CPU)",
                            "trl": f"transformers optim={getattr(optim, 'value', optim)}"}}
    return results, setup


def set_wait_policy(policy: str) -> None:
    """OpenMP's idle-thread policy, for both sides alike; must run before torch is imported. On a machine
    shared with other busy processes, spinning idle threads make every small op wait out a scheduler slice,
    which penalises whichever side launches more ops far beyond what it costs on an idle machine."""
    assert "torch" not in sys.modules, "the OpenMP wait policy must be set before torch is imported"
    if policy != "unset":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()


def median_of(results: list[Measurement], side: str) -> Measurement:
    """A side's median measurement: the median of each timing (token and sequence counts are identical)."""
    mine = [r for r in results if r.side == side]
    counts = {(r.steps, r.sequences, r.tokens) for r in mine}
    assert len(counts) == 1, f"{side}: the runs did different work: {counts}"
    steps, sequences, tokens = counts.pop()
    timings = ("reference_s", "loop_s", "untimed_prep_s")
    return Measurement(side, steps, sequences, tokens,
                       *(statistics.median(getattr(r, key) for r in mine) for key in timings))


def table(rows: list[Measurement]) -> str:
    """One line per measurement: work done, seconds, and the rates."""
    lines = [f"{'side':<8} {'steps':>5} {'seqs':>6} {'tokens':>9} {'ref s':>6} {'loop s':>7} {'steps/s':>8} "
             f"{'tok/s loop':>11} {'tok/s +ref':>11}"]
    for r in rows:
        lines.append(f"{r.side:<8} {r.steps:>5} {r.sequences:>6} {r.tokens:>9,} {r.reference_s:>6.2f} "
                     f"{r.loop_s:>7.2f} {r.steps_per_s:>8.2f} {r.tokens_per_s:>11,.0f} "
                     f"{r.tokens_per_s_with_reference:>11,.0f}")
    return "\n".join(lines)


def print_work_check(ours: Measurement, theirs: Measurement, no_eos: int) -> None:
    """Both sides trained the same sequences; their token counts differ by trl's extra EOS (and merges)."""
    assert ours.sequences == theirs.sequences, f"sequences: {ours.sequences} vs {theirs.sequences}"
    extra = theirs.tokens - ours.tokens
    rest = "" if extra == no_eos else f" (the other {extra - no_eos:+,}: tokens merged across the boundary)"
    print(f"\nsame work: {ours.sequences:,} sequences on both sides; tokens {ours.tokens:,} (alignkit) vs "
          f"{theirs.tokens:,} (trl), {extra:+,} ({extra / ours.tokens:+.1%}): trl appends EOS to the "
          f"{no_eos:,} completions the sampler cut off{rest}")


def report(results: list[Measurement], setup: dict) -> dict:
    """Print the medians, the work check and the ratios; returns them for --json."""
    ours, theirs = median_of(results, "alignkit"), median_of(results, "trl")
    print(f"\nmedian of {len(results) // 2} alternating runs per side "
          f"({setup['steps']} steps x {setup['batch_size_pairs']} pairs, {setup['threads']} threads, "
          f"OMP_WAIT_POLICY={setup['omp_wait_policy']}):")
    print(table([ours, theirs]))
    print(f"(untimed: trl tokenized its dataset up front in {theirs.untimed_prep_s:.2f} s; optimisers: "
          f"alignkit {setup['optimizers']['alignkit']}, trl {setup['optimizers']['trl']})")
    print_work_check(ours, theirs, setup["sequences_without_eos_in_alignkit"])
    ratios = {"tokens_per_s_loop": ours.tokens_per_s / theirs.tokens_per_s,
              "tokens_per_s_with_reference":
                  ours.tokens_per_s_with_reference / theirs.tokens_per_s_with_reference,
              "steps_per_s_loop": ours.steps_per_s / theirs.steps_per_s}
    pairs = list(zip([r for r in results if r.side == "alignkit"], [r for r in results if r.side == "trl"]))
    ratios["tokens_per_s_loop_per_repeat"] = [a.tokens_per_s / t.tokens_per_s for a, t in pairs]
    print("\nper repeat (alignkit run / the trl run right after it), tokens/s, loop only: "
          + " ".join(f"{x:.2f}" for x in ratios["tokens_per_s_loop_per_repeat"]))
    for name, label in (("tokens_per_s_loop", "tokens/s, training loop only"),
                        ("tokens_per_s_with_reference", "tokens/s, including reference pass"),
                        ("steps_per_s_loop", "steps/s, training loop only")):
        verdict = "" if name == "steps_per_s_loop" else \
            f"  (target >= {TARGET}: {'met' if ratios[name] >= TARGET else 'NOT met'})"
        print(f"alignkit/trl {label:<36} {ratios[name]:.2f}{verdict}")
    return {"setup": setup, "load_average": os.getloadavg(), "runs": [asdict(r) for r in results],
            "median": {r.side: asdict(r) for r in (ours, theirs)}, "ratios": ratios}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_wait_policy(args.omp_wait_policy)
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notices inside trl
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results, setup = measure(args)
    summary = report(results, setup)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
