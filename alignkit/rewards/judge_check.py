"""A run's pairwise judge checked before anything trains (``alignkit run``, a comparison's phase 1,
``alignkit eval``): it loads, fits the longest question it will be asked and answers a probe question
parseably. A judge that cannot would otherwise fail only at evaluation, after all the training."""

from __future__ import annotations

import itertools

import torch

from alignkit.eval.judges import is_pairwise, labelled_pairs
from alignkit.recipe import Recipe
from alignkit.registry import REWARDS
from alignkit.stages.workspace import Workspace


def _filler(tokenizer, text: str, tokens: int) -> str:
    """``tokens`` policy tokens of ``text``'s own (cycled): a completion as long as the policy may write."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id or 0]
    return tokenizer.decode(list(itertools.islice(itertools.cycle(ids), tokens)))


def judge_questions(ws: Workspace, judge) -> list[tuple[str, str, str]]:
    """The longest questions ``judge`` will be asked: every evaluation prompt with two completions of
    ``eval.max_new_tokens`` policy tokens, and the held-out pairs its agreement is measured on (user data;
    generated pairs, not built yet, as completions of ``preferences.max_new_tokens`` tokens)."""
    recipe = ws.recipe
    cfg, prefs = recipe.eval, recipe.preferences
    tokens = cfg.max_new_tokens if prefs.is_user_data else max(cfg.max_new_tokens, prefs.max_new_tokens)
    prompts = [judge.readable(p) for p in ws.eval_prompts]
    longest = max(prompts, key=len, default="")
    filler = judge.readable(_filler(ws.tokenizer_loader()(), longest, tokens))
    questions = [(p, filler, filler) for p in prompts]
    if prefs.is_user_data:
        pairs, chosen, rejected = labelled_pairs(ws.heldout_pairs, prefs.append_eos)[:3]
        n = cfg.agreement_pairs or len(pairs)
        questions += [tuple(map(judge.readable, q)) for q in zip(pairs[:n], chosen[:n], rejected[:n])]
    return questions


def checks_judge(recipe: Recipe) -> bool:
    """Whether ``recipe``'s judge is checked before training: a registered pairwise judge (a score judge is
    checked by loading it, where it is built)."""
    name = recipe.eval.judge
    return name not in ("gold", recipe.gold_reward) and bool(REWARDS.entry(name).meta.get("pairwise"))


def check_judge(ws: Workspace) -> None:
    """Check the run's judge (:func:`checks_judge`); a failure is one
    :class:`~alignkit.eval.judges.JudgeError` line. Random number generators are left as they were, so
    checking changes no result."""
    if not checks_judge(ws.recipe):
        return
    devices = [ws.device.index or 0] if ws.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        judge = ws.judge
        if is_pairwise(judge):
            judge.check(judge_questions(ws, judge))
