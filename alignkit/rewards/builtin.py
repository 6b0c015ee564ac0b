"""Registered gold rewards. ``imdb-sentiment`` is the DPO paper's IMDb ground truth in miniature:
P(positive) of prompt + completion from a TF-IDF + logistic-regression classifier fit on the task's
train split (cached without pickle; its held-out accuracy is recorded in the manifest). For the default task
the package ships its weights (:mod:`alignkit.stages.shipped_stages`): loaded, not fit."""

from __future__ import annotations

from alignkit.cache import CacheEntry
from alignkit.config import fingerprint
from alignkit.registry import register_reward
from alignkit.rewards.sentiment import SentimentClassifier
from alignkit.stages.shipped_stages import GOLD, asset_identity, shipped_stage, stage_key
from alignkit.stages.workspace import RecordedReward, Workspace


def imdb_gold_key(task_config) -> str:
    """What decides the fitted classifier: the task's settings and the storage format (safetensors since
    format-2)."""
    return fingerprint(task_config, "format-2")


def fit_imdb_gold(task, folder) -> None:
    """Fit the classifier on the task's train split into ``folder`` (its accuracy on the held-out split in
    meta.json)."""
    SentimentClassifier.fit(task.train_texts, task.train_labels, task.heldout_texts,
                            task.heldout_labels).save(folder)


def imdb_gold_identity(recipe) -> str | None:
    """The shipped weights' checksums in the keys of stages the gold reward labels or scores; None when the
    recipe's task fits its own (keys as before the weights shipped)."""
    return asset_identity(GOLD, imdb_gold_key(recipe.task))


@register_reward("imdb-sentiment", identity=imdb_gold_identity)
def imdb_sentiment(workspace: Workspace):
    """Gold P(positive sentiment) of prompt + completion (TF-IDF + logistic regression on IMDb)."""
    task, key = workspace.task, imdb_gold_key(workspace.recipe.task)
    if task.train_labels is None:
        raise ValueError(f"gold_reward imdb-sentiment needs a labelled task; {task.name!r} has no labels")
    entry = CacheEntry(workspace.cache_dir, "gold", f"imdb-sentiment-{key}")
    folder = shipped_stage(GOLD, key) or entry.ensure(lambda tmp: fit_imdb_gold(task, tmp), workspace.runtime)
    classifier = SentimentClassifier.load(folder)

    def score(prompts: list[str], completions: list[str]):
        return classifier.score([p + c for p, c in zip(prompts, completions)])

    return RecordedReward(score, stage_key(GOLD, key), classifier.meta)


@register_reward("reward-model", proxy=True)
def reward_model_judge(workspace: Workspace):
    """The learned Bradley-Terry reward model as a judge (a proxy: win rates by what PPO optimised; refused
    for a method that optimised it unless eval.allow_self_judging)."""
    proxy = workspace.proxy_reward

    def score(prompts: list[str], completions: list[str], ended=False):
        return proxy(prompts, completions, ended)

    return score


@register_reward("heldout-reward-model")
def heldout_reward_model_judge(workspace: Workspace):
    """A Bradley-Terry reward model trained only on a judge split of the pairs that no method sees
    (eval.judge_fraction of the prompt groups): not the proxy PPO optimised."""
    judge = workspace.judge_reward

    def score(prompts: list[str], completions: list[str], ended=False):
        return judge(prompts, completions, ended)

    return score
