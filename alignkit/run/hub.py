"""The Hugging Face Hub side of a run: its model card (``model/README.md``, through huggingface_hub's
ModelCard) and ``alignkit push``, which uploads the trained policy, its tokenizer, the card and the
evaluation summary to a Hub repository in one commit."""

from __future__ import annotations

import os
from pathlib import Path

from alignkit import __version__
from alignkit.errors import AlignkitError
from alignkit.eval.summary import (
    GOLD_MEAN,
    GOLD_STD,
    KL_MEAN,
    N_SAMPLES,
    SUMMARY_FILE,
    TEMPERATURE,
    WIN_RATE,
    EvalSummary,
)
from alignkit.models.config import looks_like_local_path
from alignkit.models.scalar_head import META_FILE as SCALAR_META
from alignkit.runfolder import CARD, RunFolder, model_problem, read_run
from alignkit.runlog import write_text


def _number(value, digits: int = 3) -> str:
    return "n/a" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}f}"


def _hub_id(name: str) -> str | None:
    """``name`` when it is a Hub id (``org/model``, ``gpt2``), None for a local folder or a builtin alias."""
    return None if name.startswith("builtin:") or looks_like_local_path(name) or Path(name).exists() else name


def card_text(recipe: dict, summary: EvalSummary, adapter: bool) -> str:
    """The model card of a trained policy: method, loss, hyper-parameters, base model, data, budget and the
    evaluation numbers with their intervals and judge, with the Hub metadata (card data) in front."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    method, name = recipe["method"], recipe["name"]
    settings = recipe.get("methods", {}).get(method) or {}
    base, prefs, task = recipe["model"]["name_or_path"], recipe["preferences"], recipe["task"]["dataset"]
    hub_base = _hub_id(base)
    hub_data = prefs["source"][3:] if prefs["source"].startswith("hf:") else None
    judge = summary.judge or "gold"
    judge_name = recipe.get("gold_reward", "") if judge == "gold" else judge
    numbers = summary.results
    results = [EvalResult(task_type="text-generation", dataset_type=hub_data or task,
                          dataset_name=hub_data or task,
                          metric_type=key, metric_name=f"{key} (judge: {judge_name})",
                          metric_value=numbers[key])
               for key in (GOLD_MEAN, WIN_RATE, KL_MEAN) if isinstance(numbers.get(key), (int, float))]
    data = ModelCardData(model_name=name, base_model=hub_base,
                         library_name="peft" if adapter else "transformers",
                         tags=["alignkit", method, *([settings["loss"]] if settings.get("loss") else [])],
                         datasets=[hub_data] if hub_data else None, eval_results=results or None)
    budget = summary.budget or {}
    rows = summary.by_temperature or [summary.results]
    lines = [
        f"# {name}",
        "",
        f"A policy trained with **{method}**"
        + (f" (loss `{settings['loss']}`)" if settings.get("loss") else "")
        + f" by [alignkit](https://pypi.org/project/alignkit/) {__version__}, starting from `{base}`"
        + (" (a LoRA adapter on it)." if adapter else "."),
        "",
        "## Data",
        "",
        f"- task: `{task}`; preference pairs: `{prefs['source']}`"
        + (
            f" (split `{prefs['split']}`)"
            if prefs["source"] != "generated"
            else f" (sampled from the starting policy, labelled by `{recipe.get('gold_reward')}`)"
        ),
        *(f"- {k.replace('_', ' ')}: {v}" for k, v in (summary.training_data or {}).items()),
        "",
        "## Training budget",
        "",
        *(f"- {k}: {v}" for k, v in budget.items()),
        "",
        "## Hyper-parameters",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| {method}.{k} | `{v}` |" for k, v in settings.items()),
        f"| seed | `{recipe.get('seed')}` |",
        f"| precision | `{recipe.get('precision')}` |",
        "",
        "## Evaluation",
        "",
        f"On {summary.results.get(N_SAMPLES, 'n/a')} held-out prompts, judged by `{judge_name}` "
        f"({summary.judge_kind or 'score'}); win rate against the starting policy with its confidence "
        f"interval, KL to it per sequence.",
        "",
        "| temperature | gold reward (mean ± std) | KL | win rate [interval] |",
        "|---|---|---|---|",
        *(
            f"| {r.get(TEMPERATURE)} | {_number(r.get(GOLD_MEAN))} ± {_number(r.get(GOLD_STD))}"
            f" | {_number(r.get(KL_MEAN))} | {_number(r.get(WIN_RATE))} "
            f"[{_number(r.get('win_rate_ci_low'))}, {_number(r.get('win_rate_ci_high'))}] |"
            for r in rows
        ),
        "",
    ]
    load = ("from peft import AutoPeftModelForCausalLM\nmodel = "
            "AutoPeftModelForCausalLM.from_pretrained(\"REPO\")"
            if adapter else
            "from transformers import AutoModelForCausalLM\nmodel = "
            "AutoModelForCausalLM.from_pretrained(\"REPO\")")
    lines += ["## Use", "", "```python", load, "```", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def saved_policy(folder: Path) -> bool:
    """Whether a run's ``model/`` holds a policy: weights or an adapter, not a reward model, not nothing
    (Best-of-N)."""
    policy = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
    return policy and not (folder / SCALAR_META).is_file()


def write_card(run_dir: Path, recipe: dict, summary: EvalSummary) -> Path | None:
    """``model/README.md`` of a run that saved a policy (None when it saved none: Best-of-N, a
    reward model)."""
    folder = Path(run_dir) / "model"
    if not saved_policy(folder):
        return None
    write_text(folder / CARD, card_text(recipe, summary, adapter=(folder / "adapter_config.json").is_file()))
    return folder / CARD


def upload_files(run: RunFolder) -> list[Path]:
    """What push may upload from ``model/`` (the card aside, written anew at every push): regular files inside
    the run folder, a link anywhere on the way refused, never followed, each recorded in the manifest and
    matching its checksum. Anything else is one line, before anything is uploaded."""
    folder, summary = run.path / "model", run.path / "eval" / "summary.json"
    where = "push uploads only regular files inside the run folder that pass their recorded checksums"
    recorded = run.manifest.get("model_sha256")
    if not isinstance(recorded, dict):
        raise AlignkitError(f"push: {run.path}: the manifest records no checksums of model/; {where}")
    linked = [p for p in (folder, summary.parent, summary) if p.is_symlink()]
    files = []
    for root, dirs, names in os.walk(folder):  # a linked folder is listed, never entered
        linked += [Path(root, name) for name in dirs if Path(root, name).is_symlink()]
        files += [Path(root, name) for name in names]
    linked += [p for p in files if p.is_symlink()]
    if linked:
        raise AlignkitError(f"push: {linked[0]}: a symbolic link; {where}, never what a link points to")
    files = [p for p in files if p.relative_to(folder).as_posix() != CARD]
    for path in files:
        if not path.is_file() or path.relative_to(folder).as_posix() not in recorded:
            raise AlignkitError(f"push: {path}: not a file the run recorded (model_sha256); {where}")
    problem = model_problem(run.path, run.manifest)
    if problem:
        raise AlignkitError(f"push: {run.path}: {problem}; {where}")
    return files


def push_run(run_dir: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a finished run's policy (weights, tokenizer, card) and ``eval/summary.json`` to ``repo_id`` in
    one commit (only what :func:`upload_files` allows); returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    run = read_run(run_dir)
    run.require_finished("push")
    summary = run.summary()
    folder = run.path / "model"
    if not saved_policy(folder):
        raise AlignkitError(f"push: {run_dir}: the run saved no policy (model/ has no config.json or "
                            f"adapter_config.json); there is nothing to upload")
    card = card_text(run.manifest["recipe"], summary, adapter=(folder / "adapter_config.json").is_file())
    uploads = {p.relative_to(folder).as_posix(): str(p) for p in upload_files(run)} | {CARD: card.encode()}
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=uploads[name])
                  for name in sorted(uploads)]
    operations.append(CommitOperationAdd(path_in_repo=SUMMARY_FILE.as_posix(),
                                         path_or_fileobj=str(run.path / SUMMARY_FILE)))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations,
                                   commit_message=f"alignkit: {run.manifest.get('name')} "
                                   f"({run.manifest.get('method')})")
    # the network boundary: refused, unreachable, no token: one line, never a traceback
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AlignkitError(f"push: {repo_id}: {detail} ({type(exc).__name__}); the run folder is "
                            "unchanged") from None
    write_text(folder / CARD, card)  # the card, as pushed, once the commit is in
    return commit.commit_url
