"""The policy abstraction every method shares: score completions, sample rollouts, and a frozen reference to
measure KL against. Loading lives in :mod:`alignkit.models.loading`, the recipe schema in
:mod:`alignkit.models.config`."""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.console import bar as progress_bar
from alignkit.models.config import ModelConfig
from alignkit.models.loading import (
    apply_lora,
    disable_dropout,
    load_adapter,
    load_pretrained,
    load_tokenizer,
    record_absolute_base,
    resolve_model_path,
)
from alignkit.models.sequences import (
    SequenceBatch,
    concat_batches,
    encode_pairs,
    sequence_logprobs,
    token_logprobs,
)
from alignkit.runtime import Runtime


@dataclass
class Rollout:
    """Sampled completions with the exact token ids that were sampled (left-padded prompt + completion),
    and whether each completion ended with EOS (False: cut at max_new_tokens)."""

    prompts: list[str]
    completions: list[str]
    batch: SequenceBatch
    ended: list[bool]

    def select(self, rows: list[int]) -> "Rollout":
        return Rollout([self.prompts[r] for r in rows], [self.completions[r] for r in rows],
                       self.batch.select(rows), [self.ended[r] for r in rows])

    @property
    def n_tokens(self) -> int:
        """Completion tokens sampled (EOS included)."""
        return int(self.batch.completion_mask.sum())


def sampling_config(tokenizer, *, max_new_tokens: int, temperature: float, top_p: float):
    """The complete generation config of every sample alignkit draws: temperature and top-p only (T = 0:
    greedy). Every other logits processor is off (no top-k, repetition penalty, minimum length, banned
    words...), whatever a model's own ``generation_config`` asks for, so the sampled distribution is
    exactly the one that PPO ratios and the KL assume."""
    from transformers import GenerationConfig

    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)  # greedy: no warper runs, so none is set
    return GenerationConfig(
        max_new_tokens=max_new_tokens, min_length=0, num_beams=1, typical_p=1.0, epsilon_cutoff=0.0,
        eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        renormalize_logits=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, **sampling)


@contextmanager
def _only_generation_config(model, config):
    """transformers fills every unset field of a passed config from the model's own generation_config;
    swap that for ``config`` itself while generating, so nothing of the model's leaks in."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = config
    try:
        yield
    finally:
        target.generation_config = saved


class Policy:
    """A causal LM and its tokenizer: log-probs of completions, sampling, saving."""

    def __init__(self, model, tokenizer, device: torch.device, max_length: int = 128,
                 max_prompt_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length  # longest prompt + completion when tokenizing text for training
        self.max_prompt_length = max_prompt_length  # prompts are cut to this many tokens (None: half)

    @classmethod
    def load(cls, cfg: ModelConfig, *, cache_dir: Path, runtime: Runtime) -> "Policy":
        """``cfg``'s model on ``runtime``'s device (a ``builtin:`` model is built into
        ``cache_dir`` first)."""
        from transformers import AutoModelForCausalLM

        device = runtime.device
        path = resolve_model_path(cfg.name_or_path, cache_dir, runtime)
        tokenizer = load_tokenizer(path, cfg)
        model = load_pretrained(AutoModelForCausalLM, cfg, path)
        disable_dropout(model)
        if cfg.lora is not None:
            model = apply_lora(model, cfg.lora)
        if not (cfg.load_in_4bit or cfg.load_in_8bit):
            model.to(device)
        model.eval()
        return cls(model, tokenizer, device, cfg.max_length, cfg.max_prompt_length)

    @classmethod
    def load_trained(cls, cfg: ModelConfig, folder: Path, *, cache_dir: Path, runtime: Runtime) -> "Policy":
        """A policy a run saved: a LoRA adapter on ``cfg``'s base model, or a full model folder."""
        folder = Path(folder)
        if (folder / "adapter_config.json").is_file():
            base = cls.load(dataclasses.replace(cfg, lora=None), cache_dir=cache_dir, runtime=runtime)
            model = load_adapter(base.model, folder, trainable=False)
            return cls(model.eval(), base.tokenizer, runtime.device, cfg.max_length, cfg.max_prompt_length)
        saved = dataclasses.replace(cfg, name_or_path=str(folder), revision=None, gguf_file=None, lora=None,
                                    load_in_4bit=False, load_in_8bit=False)
        return cls.load(saved, cache_dir=cache_dir, runtime=runtime)

    @property
    def is_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def encode(self, prompts: list[str], completions: list[str],
               eos: bool | list[bool] = False) -> SequenceBatch:
        """Text pairs as this policy's training and scoring batches (its length limits, on its device)."""
        return encode_pairs(self.tokenizer, prompts, completions, max_length=self.max_length,
                            max_prompt_length=self.max_prompt_length, append_eos=eos).to(self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def sequence_logprobs(self, batch: SequenceBatch, *, average: bool = False) -> torch.Tensor:
        return sequence_logprobs(self.model, batch.to(self.device), average=average)

    def token_logprobs(self, batch: SequenceBatch, **kwargs):
        return token_logprobs(self.model, batch.to(self.device), **kwargs)

    @torch.no_grad()
    def sample(self, prompts: list[str], *, max_new_tokens: int, runtime: Runtime, temperature: float = 1.0,
               top_p: float = 1.0, batch_size: int = 64, progress: str | None = None, budget=None) -> Rollout:
        """Sample one completion per prompt; temperature 0 is greedy. No top-k: with temperature 1 and
        top_p 1 the samples come from exactly the distribution that :meth:`token_logprobs` scores. Chunks
        of ``batch_size`` prompts are shared out between ``runtime``'s processes (each from its own seed,
        so any process count draws the same samples). ``budget`` (a :class:`~alignkit.context.Budget`)
        counts what was sampled."""
        was_training = self.model.training
        self.model.eval()
        chunks = [prompts[start:start + batch_size] for start in range(0, len(prompts), batch_size)]
        # one seed per chunk, drawn from the caller's RNG: the same samples whichever process draws a chunk
        seeds = torch.randint(0, 2 ** 62, (len(chunks),)).tolist()
        bar = progress_bar(total=len(chunks), desc=progress, unit="batch", leave=False,
                           main=bool(progress) and len(chunks) > 1 and runtime.is_main)

        def draw(i: int, chunk: list[str]):
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seeds[i])
                out = self._sample_chunk(chunk, max_new_tokens, temperature, top_p)
            bar.update(runtime.world)
            return out

        drawn = runtime.map_chunks(draw, chunks)  # shared out between processes, gathered in order
        bar.close()
        self.model.train(was_training)
        parts = [batch for batch, _, _ in drawn]
        completions = [text for _, texts, _ in drawn for text in texts]
        ended = [stop for _, _, stops in drawn for stop in stops]
        rollout = Rollout(list(prompts), completions, concat_batches(parts, self.tokenizer.pad_token_id),
                          ended)
        if budget is not None:
            budget.add_rollout(rollout)
        return rollout

    def _sample_chunk(self, prompts, max_new_tokens, temperature, top_p):
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        config = sampling_config(tok, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        with _only_generation_config(self.model, config):
            output = self.model.generate(**enc, generation_config=config)
        new = output[:, enc["input_ids"].shape[1]:]
        # keep tokens up to and including the first EOS; everything after it is padding
        is_eos = (new == tok.eos_token_id).long()
        after_eos = (is_eos.cumsum(-1) - is_eos) > 0
        completion_mask = (~after_eos).long()
        new = new.masked_fill(after_eos, tok.pad_token_id)
        batch = SequenceBatch(
            input_ids=torch.cat([enc["input_ids"], new], dim=1),
            attention_mask=torch.cat([enc["attention_mask"], completion_mask], dim=1),
            completion_mask=torch.cat([torch.zeros_like(enc["input_ids"]), completion_mask], dim=1),
        )
        texts = tok.batch_decode(new, skip_special_tokens=True)
        return batch.to("cpu"), texts, is_eos.any(-1).tolist()

    def save(self, folder: str | Path) -> None:
        record_absolute_base(self.model)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class KLEstimatingPolicy(Policy):
    """A policy defined by a sampling procedure around a model (Best-of-N), whose log-probs are intractable:
    it estimates its own KL to the reference from samples and decides which KL its summary reports. The
    evaluator asks these two methods instead of taking the exact per-token KL."""

    def sequence_kl(self, reference: "Reference", rollout: Rollout, runtime: Runtime):
        """Per-sample estimates [B] of log pi(y) / pi_ref(y) for the rows of ``rollout``."""
        raise NotImplementedError

    def summarize_kl(self, row: dict) -> None:
        """Set the KL columns of an evaluation ``row`` (whose ``kl_mean`` is the sampled estimate)."""
        raise NotImplementedError


class Reference:
    """The frozen reference policy pi_ref: the adapter-disabled model under LoRA, else a frozen model."""

    def __init__(self, policy: Policy, frozen_model=None):
        self.policy = policy
        self.model = frozen_model
        if frozen_model is None and not policy.is_adapter:
            self.model = copy.deepcopy(policy.model).eval()
            self.model.requires_grad_(False)

    @contextmanager
    def _as_model(self):
        if self.model is not None:
            yield self.model
        else:
            with self.policy.model.disable_adapter():
                yield self.policy.model

    @torch.no_grad()
    def sequence_logprobs(self, batch: SequenceBatch, *, average: bool = False) -> torch.Tensor:
        with self._as_model() as model:
            return sequence_logprobs(model, batch.to(self.policy.device), average=average)

    @torch.no_grad()
    def token_logprobs(self, batch: SequenceBatch, **kwargs):
        with self._as_model() as model:
            return token_logprobs(model, batch.to(self.policy.device), **kwargs)

    def as_policy(self) -> Policy:
        """A policy view of the reference for sampling (a frozen copy, or the base with adapters off)."""
        if self.model is not None:
            return Policy(self.model, self.policy.tokenizer, self.policy.device, self.policy.max_length,
                          self.policy.max_prompt_length)
        return _AdapterDisabledPolicy(self.policy.model, self.policy.tokenizer, self.policy.device,
                                      self.policy.max_length, self.policy.max_prompt_length)


class _AdapterDisabledPolicy(Policy):
    def _sample_chunk(self, *args):
        with self.model.disable_adapter():
            return super()._sample_chunk(*args)

    def token_logprobs(self, batch, **kwargs):
        with self.model.disable_adapter():
            return super().token_logprobs(batch, **kwargs)

