"""The cache keys of a run's shared stages, computable from its recipe alone (nothing is built or loaded), so
that a finished run can be checked for staleness and a stage's artifact found in the cache.

Each stage is keyed by what decides it and nothing else, so changing a setting rebuilds exactly the stages
downstream of it: pairs <- (model, task, gold reward, generation settings, seed); the train/held-out split <-
pairs + heldout_fraction (+ eval.judge_fraction, only when the heldout-reward-model judge carves a judge
split out of the pairs); reward model and reference log-probs <- split + their own settings; the judge's
reward model <- split + the reward model's settings; reference samples <- (model, task, gold reward,
evaluation sampling, temperature, seed). The tags in keys, and the parts left out of a key while they hold the
value older keys were made with, are listed with why in ``alignkit.runfolder.FORMATS``: a key that changes
rebuilds its stage, so a new tag is added there and here, never an old one edited. A stage the package ships
(:mod:`alignkit.stages.shipped_stages`) is keyed by its shipped files' checksums too, and so is all built on
it."""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path

from alignkit.config import fingerprint, identity_dict
from alignkit.data.preferences import GENERATION_VERSION
from alignkit.data.sources import source_digest
from alignkit.models.config import BUILTIN_PREFIX, ModelConfig, local_tokenizer_folder
from alignkit.recipe import Recipe
from alignkit.registry import DATASETS, MODELS, REWARDS
from alignkit.runformat import older_default
from alignkit.stages.shipped_stages import PAIRS, REFERENCE_LOGPS, stage_key

JUDGE_SPLIT_JUDGE = "heldout-reward-model"  # the judge that trains on a split of the pairs of its own
# gold rewards whose score depends on whether a completion ended (the reward models): reference-samples-2
GOLD_READS_ENDED = ("reward-model", "heldout-reward-model")
# added to the shared seed: the judge split is drawn apart from the train/held-out one
JUDGE_SPLIT_SEED = 104729
# the reward model's settings added since its keys were first made: left out of them at their older value
KEYED_SINCE = ("lr_schedule", "warmup_ratio")


def chat_template_text(model: ModelConfig, cache_dir: Path) -> tuple[str, ...]:
    """The chat template a local tokenizer folder holds (its text, so editing it in place changes the keys
    built on the pairs); empty for a tokenizer not on disk yet (a Hub id: pin ``model.revision``) or one
    without a template."""
    folder = local_tokenizer_folder(model, cache_dir)
    if folder is None:
        return ()
    texts = [p.read_text() for p in sorted(folder.glob("*.jinja"))]
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except (ValueError, AttributeError):
            template = None
        texts.append(json.dumps(template) if template else "")
    return tuple(t for t in texts if t)


class StageKeys:
    """The cache key of every shared stage under ``recipe`` (builtin models and tokenizers found in
    ``cache_dir`` decide the chat template that preference files are rendered with)."""

    def __init__(self, recipe: Recipe, cache_dir: Path):
        self.recipe, self.cache_dir, self.seed = recipe, Path(cache_dir), recipe.seed

    def all(self) -> dict[str, str]:
        """The cache key of every shared stage under this recipe."""
        keys = {"preferences": self.pairs_key(), "pair_split": self.split_key(),
                "reward_model": self.reward_model_key(), "reference_logps": self.reference_logps_key(),
                "reference_samples": self.reference_samples_key(self.recipe.eval.temperature)}
        if self.judge_split:
            keys["judge_reward_model"] = self.judge_reward_model_key()
        return keys

    @property
    def judge_split(self) -> bool:
        """Whether a judge trains on a split of the pairs of its own: the heldout-reward-model judge, deciding
        win rates (``eval.judge``) or scoring the reward axis (``gold_reward``)."""
        return JUDGE_SPLIT_JUDGE in (self.recipe.eval.judge, self.recipe.gold_reward)

    @cached_property
    def model_identity(self) -> tuple:
        """The policy in a cache key: its settings and, for a ``builtin:`` model that declares what makes it
        (``register_model(..., identity=...)``), that too (a shipped model's files' checksums), so stages
        built with an older build of it are not reused (``model identity`` in FORMATS)."""
        model = self.recipe.model
        alias = (
            model.name_or_path[len(BUILTIN_PREFIX) :]
            if model.name_or_path.startswith(BUILTIN_PREFIX)
            else None
        )
        made_by = MODELS.entry(alias).meta.get("identity") if alias and alias in MODELS else None
        identity = made_by() if made_by else None  # None: a build whose keys stay as they were
        return (model, identity) if identity is not None else (model,)

    def gold_identity(self) -> tuple:
        """The gold reward in a cache key: its name, its options when it takes any, and the checksums of the
        weights the package ships for it, when it declares them (``register_reward(..., identity=...)``)
        (FORMATS)."""
        name, options = self.recipe.gold_reward, self.recipe.gold_reward_options
        made_by = REWARDS.entry(name).meta.get("identity") if name in REWARDS else None
        shipped = made_by(self.recipe) if made_by else None
        return (name, *((options,) if options else ()), *((shipped,) if shipped else ()))

    def pairs_key(self) -> str:
        """The pairs' key: :meth:`pairs_made_by`, with the shipped pairs' checksums when the package ships
        them for it."""
        return stage_key(PAIRS, self.pairs_made_by())

    def pairs_made_by(self) -> str:
        """Everything that decides which pairs are generated or read (not how they are split or tokenized)."""
        cfg = self.recipe.preferences
        deciding = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("heldout_fraction",
                                                                                  "append_eos")}
        if not cfg.config:
            deciding.pop("config")  # left out unset (FORMATS)
        source, template = cfg.source, ()
        digest = source_digest(source) if cfg.is_file else None
        if digest is not None:
            source = digest  # the file's (or saved folder's) content, not its name
            # conversational rows render with it
            template = chat_template_text(self.recipe.model, self.cache_dir)
        return fingerprint(*self.model_identity, self.recipe.task, *self.gold_identity(), deciding, source,
                           self.seed, GENERATION_VERSION, *template)

    def split_key(self) -> str:
        judge = ("judge-split", self.recipe.eval.judge_fraction) if self.judge_split else ()
        version = ("split-2",) if self.recipe.preferences.is_user_data else ()
        return fingerprint(self.pairs_key(), self.recipe.preferences.heldout_fraction, *judge, *version)

    def reward_model_key(self, *tag: str) -> str:
        precision = () if self.recipe.precision == "fp32" else (self.recipe.precision,)  # left out at fp32
        lora = ("lora-adapter",) if self.recipe.model.lora else ()
        return fingerprint(self.split_key(), self.reward_model_settings(), *self.model_identity,
                           self.recipe.preferences.eos_identity, "rm-2", *precision, *lora, *tag)

    def reward_model_settings(self) -> dict:
        """The reward model's settings in its keys, those added since (``KEYED_SINCE``) left out at the value
        older keys were made with (FORMATS), so the reward models cached before them are reused."""
        settings = identity_dict(self.recipe.method_config("reward_model"))
        return {k: v for k, v in settings.items() if k not in KEYED_SINCE or not older_default(k, v)}

    def judge_reward_model_key(self) -> str:
        """The judge's reward model: the reward model's settings, trained on the judge split."""
        return self.reward_model_key("judge-split-rm-1")

    def reference_logps_key(self) -> str:
        """The reference log-probs' key: :meth:`reference_logps_made_by`, with the shipped log-probs'
        checksums when the package ships them for it."""
        return stage_key(REFERENCE_LOGPS, self.reference_logps_made_by())

    def reference_logps_made_by(self) -> str:
        """What decides the reference log-probs: the split pairs, the model, where an EOS is appended."""
        return fingerprint(self.split_key(), *self.model_identity, self.recipe.preferences.eos_identity,
                           "ref-logps-1")

    def reference_samples_key(self, temperature: float) -> str:
        cfg = self.recipe.eval
        ended = ("reference-samples-2",) if self.recipe.gold_reward in GOLD_READS_ENDED else ()
        return fingerprint(*self.model_identity, self.recipe.task, *self.gold_identity(), *ended,
                           cfg.n_prompts,
                           cfg.top_p, cfg.max_new_tokens, float(temperature), self.seed, GENERATION_VERSION,
                           *self.eval_prompts_identity())

    def eval_prompts_identity(self) -> tuple:
        """What decides the evaluation prompts beyond the task's settings: ``eval.prompts`` (its content) and,
        for a task made of the preference data, the data's split; empty for the IMDb task."""
        cfg, parts = self.recipe.eval, []
        if cfg.prompts:
            parts += ["eval-prompts", source_digest(cfg.prompts) or cfg.prompts, *chat_template_text(
                self.recipe.model, self.cache_dir)]
        elif DATASETS.entry(self.recipe.task.dataset).meta.get("from_pairs"):
            parts += ["pairs-prompts", self.split_key()]
        return tuple(parts)
