"""Registered gold rewards. ``imdb-sentiment`` is the DPO paper's IMDb ground truth in miniature:
P(positive) of prompt + completion from a TF-IDF + logistic-regression classifier fit on the task's
train split (cached without pickle; its held-out accuracy is recorded in the manifest)."""

from __future__ import annotations

from alignkit.cache import CacheEntry
from alignkit.config import fingerprint
from alignkit.registry import register_reward
from alignkit.rewards.sentiment import SentimentClassifier
from alignkit.stages.workspace import RecordedReward, Workspace


@register_reward("imdb-sentiment")
def imdb_sentiment(workspace: Workspace):
    """Gold P(positive sentiment) of prompt + completion (TF-IDF + logistic regression on IMDb)."""
    task = workspace.task
    if task.train_labels is None:
        raise ValueError(f"gold_reward imdb-sentiment needs a labelled task; {task.name!r} has no labels")
    key = fingerprint(workspace.recipe.task, "format-1")

    def build(folder):
        SentimentClassifier.fit(task.train_texts, task.train_labels, task.heldout_texts,
                                task.heldout_labels).save(folder)

    folder = CacheEntry(workspace.cache_dir, "gold", f"imdb-sentiment-{key}").ensure(build, workspace.runtime)
    classifier = SentimentClassifier.load(folder)

    def score(prompts: list[str], completions: list[str]):
        return classifier.score([p + c for p, c in zip(prompts, completions)])

    return RecordedReward(score, key, classifier.meta)


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
