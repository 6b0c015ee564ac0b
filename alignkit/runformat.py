"""The run-folder format (a manifest's ``alignkit_run``) and its migration table: every format, why it began,
how a manifest of the format before it is upgraded in memory, and the compatible changes made while it was the
newest, each with its reason. This table replaces version comments scattered through the code: the settings
older runs lack (:data:`ADDED_DEFAULTS`) and the stage-key tags are read from it."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

CARD = "README.md"  # a model folder's card (alignkit.run.hub), not part of its checksums


class Change(NamedTuple):
    """A change to what run folders hold or how their stages are keyed, made within a format because older
    folders still read right. ``kind``: ``option`` (a setting; ``default``: what older runs were trained
    with), ``eval`` (an evaluation setting, likewise), ``tag`` and ``key`` (a stage key's tag, or a part
    left out while at its old value: the keys themselves never change), ``identity`` (left out of a run's
    training identity while unset), ``field`` (a file or field older runs lack)."""

    kind: str
    name: str
    reason: str
    default: Any = None


class Format(NamedTuple):
    """A run format (the manifest's ``alignkit_run``): why it began, ``upgrade`` (a manifest of the format
    before it, brought to this one in memory; a change older alignkits would misread starts a format) and
    the compatible changes made while it was the newest."""

    number: int
    reason: str
    upgrade: Callable[[dict], dict] | None
    changes: tuple[Change, ...] = ()


# every change below kept format 1: a folder from before it reads right as it is (at the value it lists), so
# none needs an upgrade; a change that does (a field renamed, a meaning changed) starts format 2 with its
# upgrade
FORMATS = (Format(1, "the first: manifest, eval/, model/ and stage keys as alignkit 0.1 writes them", None, (
    Change("option", "precision", "bf16/fp16 training; runs before it trained in fp32", "fp32"),
    Change("option", "gold_reward_options", "the gold reward's options; runs before it had none", {}),
    Change("option", "reward_model_4bit", "PPO's reward model in 4 bits; before, it loaded whole", False),
    Change("option", "lr_schedule_steps", "a schedule past the run (until-converged); 0: its own", 0),
    Change("option", "lr_schedule", "the schedule by name (trl: lr_scheduler_type); before it, linear "
                                    "warm-up then linear decay to 10% of the peak", "linear_to_tenth"),
    Change("option", "grpo.lr_schedule", "trl's schedule for GRPO; before it, trl's default", "linear"),
    Change("option", "rloo.lr_schedule", "trl's schedule for RLOO; before it, trl's default", "linear"),
    Change("option", "warmup_ratio", "warm-up as a fraction of the steps (trl's); before it, none", 0.0),
    Change("option", "grpo.warmup_steps", "trl's warm-up for GRPO; before it, trl's default (none)", 0),
    Change("option", "rloo.warmup_steps", "trl's warm-up for RLOO; before it, trl's default (none)", 0),
    Change("eval", "judge_options", "a judge's settings; runs before them judged with none", {}),
    Change("eval", "judge_fraction", "the heldout-reward-model judge's split of the pairs", 0.1),
    Change("eval", "agreement_pairs", "pairs the judge's agreement with the gold reward is measured on", 512),
    Change("eval", "allow_self_judging", "judging with the optimised reward model; refused before it", False),
    Change("identity", "eval.prompts", "evaluation prompts of their own; left out of a run's identity unset"),
    Change("tag", "rm-2", "the reward model scored as trained (EOS appended only where sampled)"),
    Change("tag", "lora-adapter", "under model.lora the reward model trains an adapter and its head"),
    Change("tag", "ref-logps-1", "reference log-probs cached as a shared stage"),
    Change("tag", "split-2", "user data split by prompt (or its group column); generated pairs always were"),
    Change("tag", "judge-split", "the heldout-reward-model judge's split carved out of the pairs"),
    Change("tag", "judge-split-rm-1", "the judge's reward model, trained on the judge split only"),
    Change("tag", "reference-samples-2", "a reward-model gold scores the reference's samples with where each "
                                         "ended, as the policy's; other golds never read it"),
    Change("tag", "eval-prompts", "evaluation prompts read from eval.prompts (their content)"),
    Change("tag", "pairs-prompts", "evaluation prompts taken from the preference data's split"),
    Change("key", "precision", "left out of the reward model's key at fp32 (keys from before it)"),
    Change("key", "gold_reward_options", "left out of keys when empty (rewards without options)"),
    Change("key", "model identity", "what builds a builtin model, only for models that declare it"),
    Change("key", "append_eos", "preferences.append_eos keys only your data's stages (generated pairs "
                                "ignore it: their keys hold false, as before); it defaults to true (trl's "
                                "EOS) since"),
    Change("key", "shipped model",
           "a builtin model the package ships: its files' checksums (models/shipped.py); "
                                   "a local build of tiny-gpt2-imdb keeps the keys it had"),
    Change("key", "lr_schedule", "left out of the reward model's key at linear_to_tenth (keys before it)"),
    Change("key", "warmup_ratio", "left out of the reward model's key at 0 (keys before it)"),
    Change("key", "shipped stages",
           "the IMDb gold reward's weights, pairs and reference log-probs the package ships for the default "
           "recipe: their files' checksums in their keys and in the keys built on them "
           "(stages/shipped_stages.py); other recipes keep their keys, but the gold reward's own key is "
           "format-2 (safetensors weights, not an .npz that records when it was written)"),
    Change("key", "preferences.config", "left out of the pairs' key when unset (data without a config name)"),
    Change("field", "model_sha256", "the saved model's checksums; runs before them: model/ must exist"),
    Change("field", CARD, "the model card, outside the checksums; older runs recorded the one peft wrote"),
)),)
RUN_FORMAT = FORMATS[-1].number  # the format this alignkit writes
CHANGES = tuple(c for f in FORMATS for c in f.changes)
# settings added since runs were first recorded, at the value older runs have: a run without them is current
# (``grpo.lr_schedule``: a method section's own value, where its older runs differ from the others')
ADDED_DEFAULTS = {c.name: c.default for c in CHANGES if c.kind == "option"}
ADDED_EVAL_DEFAULTS = {c.name: c.default for c in CHANGES if c.kind == "eval"}


def older_default(name: str, value: Any, section: str = "") -> bool:
    """Whether setting ``name`` (of method section ``section``) holds the value that runs recorded before it
    existed were trained with, so that leaving it out keeps them the same run."""
    qualified = f"{section}.{name}"
    key = qualified if qualified in ADDED_DEFAULTS else name
    return key in ADDED_DEFAULTS and ADDED_DEFAULTS[key] == value
