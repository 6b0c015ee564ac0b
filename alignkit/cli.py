"""The ``alignkit`` command: parse, call the pipeline, print. No logic lives here."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import sys
from pathlib import Path

import click

from alignkit import __version__
from alignkit.console import install_cli_handler, quiet_third_party
from alignkit.errors import AlignkitError
from alignkit.threads import ENV_VAR as THREADS_ENV
from alignkit.threads import configure_threads, launched_rank
from alignkit.trl_names import flag_overrides

_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                           help="override a recipe value, e.g. --set dpo.beta=0.5 (repeatable)")
_plugins_option = click.option("--plugins", multiple=True, metavar="MODULE_OR_PATH",
                               help="import a plugin module, .py file or folder first (repeatable)")
_margin_option = click.option("--margin", type=click.FloatRange(min=0, min_open=True), metavar="DELTA",
                               help="equivalence margin of the verdicts, in gold reward (default 0.02)")
_threads_option = click.option("--threads", metavar="N",
                               help=f"CPU threads for torch (default: ${THREADS_ENV}, "
                               "else the cores this process may use)")


def _trl_options(command):
    """trl/transformers-style flags; each is sugar for the ``--set`` keys its help names (see
    :func:`flag_overrides`)."""
    for option in reversed((
        click.option("--model_name_or_path", "--model-name-or-path", "model_name_or_path",
                     metavar="ID_OR_PATH",
                     help="the starting policy: same as --set model.name_or_path=ID_OR_PATH"),
        click.option("--dataset_name", "--dataset-name", "dataset_name", metavar="HUB_ID_OR_PATH",
                     help="your preference data as the task: same as --set preferences.source=hf:HUB_ID (or "
                          "the file/folder PATH) --set task.dataset=preferences"),
        click.option("--dataset_split", "--dataset-split", "dataset_split", metavar="SPLIT",
                     help="same as --set preferences.split=SPLIT"),
        click.option("--dataset_config", "--dataset-config", "dataset_config", metavar="NAME",
                     help="same as --set preferences.config=NAME"),
        click.option("--report-to", "--report_to", "report_to", metavar="T1,T2",
                     help="experiment trackers (trackio, tensorboard, wandb, mlflow, none): same as "
                          "--set report_to=[T1,T2]"),
    )):
        command = option(command)
    return command


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EACCES, errno.EFBIG,
                errno.EIO}


def _error_line(text: str) -> None:
    """``alignkit: error: TEXT`` on stderr, on a line of its own (a progress bar still drawn is cleared)."""
    from tqdm import tqdm

    tqdm.write(f"alignkit: error: {text}", file=sys.stderr)


class _Group(click.Group):
    """Report user errors as one line on stderr with exit code 1 (click's usage errors keep 2), never a
    traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AlignkitError as exc:
            if launched_rank() == 0:  # under accelerate launch every process fails alike: one line, not N
                _error_line(str(exc))
            sys.exit(1)
        except OSError as exc:  # a write alignkit did not wrap (a model's weights, a plot): still one line
            if exc.errno not in WRITE_ERRNOS:
                raise
            if launched_rank() == 0:
                _error_line(f"{exc.filename or 'a file'}: could not be written ({exc.strerror}); what was "
                            "there before is kept; free space (or choose another --out) and rerun the same "
                            "command")
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alignkit")
def main() -> None:
    """alignkit: LLM alignment methods side by side (RLHF/PPO, DPO and variants) on one evaluator."""
    # one progress display per command: no per-file bars from the Hub client or transformers' weight loading
    quiet_third_party()
    install_cli_handler()
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # e.g. the expected "score.weight MISSING" of a new reward head
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="the RECIPE (trl style)")
@click.option("--out", "--output_dir", "--output-dir", "out", type=click.Path(path_type=Path),
              help="run directory (default runs/NAME)")
@click.option("--overwrite", is_flag=True, help="replace a finished run already in the run directory")
@_trl_options
@_set_option
@_plugins_option
@_threads_option
def run(recipe: Path | None, config: Path | None, out: Path | None, overwrite: bool, model_name_or_path,
        dataset_name,
        dataset_split, dataset_config, report_to, overrides: tuple[str, ...], plugins: tuple[str, ...],
        threads: str | None):
    """Run one method from a YAML RECIPE (or --config RECIPE) and evaluate it."""
    recipe = _one_recipe(recipe, config)
    configure_threads(threads)
    from alignkit.trl_names import trl_output_dir

    out = out or (trl_output_dir(recipe) if recipe.suffix in (".yaml", ".yml") and recipe.is_file() else None)
    from alignkit.recipe import load_recipe, unread_override
    from alignkit.run.pipeline import run_recipe
    from alignkit.runfolder import default_run_dir

    overrides = flag_overrides(overrides, model_name_or_path=model_name_or_path, dataset_name=dataset_name,
                               dataset_split=dataset_split, dataset_config=dataset_config,
                               report_to=report_to)
    loaded = load_recipe(recipe, overrides, plugins)
    problem = unread_override([loaded], overrides)
    if problem:  # one run reads exactly its sections: a --set of another method's is a mistake, refused
        raise AlignkitError(problem)
    run_dir = out or default_run_dir(loaded.name)
    check_output_folder(run_dir, "--out" if out else "run directory")
    summary = run_recipe(loaded, run_dir, overwrite=overwrite)
    if launched_rank() == 0:
        click.echo(json.dumps(summary.to_dict(), indent=2))
        click.echo(f"run directory: {run_dir}", err=True)


def _as_method(method: str, **params):
    """``alignkit METHOD --config FILE``, as trl spells it: ``alignkit run`` with ``method=METHOD``."""
    params["overrides"] = (f"method={method}", *params["overrides"])
    return run.callback(**params)


for _method in ("dpo", "kto", "grpo", "rloo"):
    main.add_command(click.Command(_method, params=run.params,
                                   callback=functools.partial(_as_method, _method),
                                   help=f"alignkit run with method={_method}: alignkit {_method} --config "
                                        f"trl_{_method}.yaml runs a trl config as trl {_method} does."))


def _one_recipe(recipe: Path | None, config: Path | None) -> Path:
    """The recipe named either as the argument or by ``--config``, not both, not neither."""
    if recipe is not None and config is not None and recipe != config:
        raise AlignkitError(f"run: two recipes given ({recipe} and --config {config}); name one")
    if recipe is None and config is None:
        raise AlignkitError("run: no recipe; name one: alignkit run RECIPE.yaml (or --config RECIPE.yaml)")
    return recipe or config


def check_output_folder(folder: Path, what: str = "--out") -> None:
    """Fail before anything is written when ``folder`` cannot become a folder: it is a file, a parent of it
    is a file, or its nearest existing parent is not writable."""
    if folder.exists():
        if not folder.is_dir():
            raise AlignkitError(f"{what} {folder}: exists and is not a folder")
        return
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise AlignkitError(f"{what} {folder}: cannot create a folder under {parent}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AlignkitError(f"{what} {folder}: cannot create a folder in {parent} (permission denied)")


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise AlignkitError(f"{option} {text}: expected numbers separated by commas, e.g. 0,0.5,1") from None


@main.command()
@click.argument("entries", nargs=-1)
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="a comparison YAML (recipes/compare_imdb.yaml) or a recipe: one more ENTRY")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="sweep a method setting, e.g. dpo.beta=0.05,0.1,1,5 (applies to that method's entries; "
                   "repeatable)")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="training seeds per sweep point")
@click.option("--replicates", type=click.IntRange(min=1), default=None,
              help="run the whole comparison N times, re-drawing every shared stage (OUT/replicate-k), and "
                   "combine")
@click.option("--until-converged", "until_converged", is_flag=True,
              help="extend entries that have not converged, in rounds (a comparison YAML's until_converged "
                   "section)")
@click.option("--temperatures", metavar="T1,T2,...", help="also evaluate at these temperatures (0 = greedy)")
@click.option("--out", "--output_dir", "--output-dir", "out", type=click.Path(path_type=Path),
              help="comparison folder (default runs/NAME)")
@click.option("--overwrite", is_flag=True,
              help="retrain and replace finished runs whose training settings changed")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="entries run at once, each in its own process (its own GPU; each with --threads threads)")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="where entries run: processes on this machine, or Ray tasks (pip install 'alignkit[ray]')")
@click.option("--ray-address", metavar="ADDR", help="a running Ray cluster (default: start a local one)")
@click.option("--gpus-per-entry", type=click.IntRange(min=0), default=None,
              help="GPUs per entry with --jobs/--executor ray (default 1 when there are GPUs; K>1 uses "
                   "accelerate)")
@_margin_option
@click.option("--decide", is_flag=True,
              help="add paired seeds (looks at 2, 3, 5, 8), KL settings and training until each pair is "
                   "decided")
@click.option("--budget", metavar="DURATION", help="with --decide: time the added looks may take (90s, 2h)")
@click.option("--check-against", "check_against", type=click.Path(path_type=Path), metavar="REPORT_OR_CSV",
              help="then say, entry by entry, whether this run reproduces a comparison.csv or report.md")
@click.option("--check-spread", "check_spread", metavar="GOLD,KL",
              help="largest differences still a reproduction (default 0.051,0.66: 3 replicate sd)")
@_trl_options
@_set_option
@_plugins_option
@_threads_option
def compare(entries, config, sweeps, seeds, replicates, until_converged, temperatures, out, overwrite, jobs,
            executor,
            ray_address, gpus_per_entry, margin, decide, budget, check_against, check_spread,
            model_name_or_path, dataset_name,
            dataset_split, dataset_config, report_to, overrides, plugins, threads):
    """Compare methods side by side on one task: ENTRY is a method (dpo), a recipe file, a labelled
    variant (ipo=dpo:loss=ipo) or one comparison YAML (recipes/compare_imdb.yaml)."""
    entries = (*entries, *([str(config)] if config is not None else []))
    if not entries:
        raise AlignkitError("compare: no entries; name methods (alignkit compare dpo ppo) or --config "
                            "COMPARISON.yaml")
    overrides = flag_overrides(overrides, model_name_or_path=model_name_or_path, dataset_name=dataset_name,
                               dataset_split=dataset_split, dataset_config=dataset_config,
                               report_to=report_to)
    configure_threads(threads)
    from alignkit.compare.comparison import run_comparison
    from alignkit.compare.executors import ExecutorSettings
    from alignkit.compare.plan import command_line, plan_comparison
    from alignkit.report.build import EntriesFailed, screen_table

    if out is not None:
        check_output_folder(out)
    if sum(map(bool, (replicates, until_converged, decide))) > 1 or (budget and not decide):
        raise AlignkitError("compare: --replicates, --until-converged and --decide run one at a time; "
                            "--budget needs --decide")
    from alignkit.report.reproduce import check_against as reproduces
    from alignkit.report.reproduce import headline, parse_spread

    spread = parse_spread(check_spread)
    if check_against is not None:
        if replicates or decide:
            raise AlignkitError("compare: --check-against checks one comparison; run it without --replicates "
                                "or --decide")
        headline(check_against)  # an unreadable table is refused before anything trains
    options = dict(sweeps=sweeps, seeds=seeds, temperatures=_floats(temperatures, "--temperatures"),
                   overrides=overrides, plugins=plugins, overwrite=overwrite, margin=margin,
                   executor=ExecutorSettings(executor, jobs, gpus_per_entry, ray_address))
    argv = command_line(entries, out=out, replicates=replicates, until_converged=until_converged,
                        threads=threads, decide=decide, budget=budget, **options)  # what every plan records
    # alignkit.compare.replicates: each replicate an ordinary comparison, then the combined report
    if replicates:
        from alignkit.compare.replicates import compare_replicates

        return compare_replicates(entries, replicates, out=out, argv=argv, **options)
    if decide:  # alignkit.compare.decide: the comparison again with more seeds, look by look
        from alignkit.compare.decide import decide_comparison

        plan = decide_comparison(entries, budget=budget, out=out, argv=argv, **options)
        return click.echo(screen_table(plan.out))
    plan = plan_comparison(entries, out=out, argv=argv, **options)
    from alignkit.compare.until_converged import run_until_converged, settings_from

    extension = settings_from(entries, until_converged)
    try:
        if extension:
            run_until_converged(plan, extension)
        else:
            run_comparison(plan)
    except EntriesFailed:  # the others' table first, then the one line naming the failed entries
        click.echo(screen_table(plan.out))
        raise
    if launched_rank() == 0:
        click.echo(screen_table(plan.out))
        click.echo(f"comparison: {plan.out / 'report.md'}", err=True)
        if check_against is not None:
            lines, ok = reproduces(plan.out, check_against, spread)
            click.echo("\n".join(lines))
            if not ok:
                sys.exit(1)


@main.command("eval")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--temperatures", metavar="T1,T2,...", help="evaluate at these further temperatures")
@click.option("--judge", help="registered judge deciding win rates (gold, reward-model, a plugin)")
@click.option("--reuse-recorded-endpoint", "reuse_endpoint", is_flag=True,
              help="let the judge contact the endpoint (base_url, api_key_env) the run's recipe records")
@_set_option
@_plugins_option
@_threads_option
def evaluate(run_dirs, temperatures, judge, reuse_endpoint, overrides, plugins, threads):
    """Re-evaluate finished runs (their trained models) under new evaluation settings. Plugins and endpoints
    the runs record are never reused unless named again (--plugins, --set, --reuse-recorded-endpoint)."""
    configure_threads(threads)
    from alignkit.run.reevaluate import eval_plan, reevaluate

    extra = (
        list(overrides)
        + ([f"eval.temperatures={_floats(temperatures, '--temperatures')}"] if temperatures else [])
        + ([f"eval.judge={judge}"] if judge else [])
    )
    recipes = [eval_plan(run_dir, extra, plugins, reuse_endpoint) for run_dir in run_dirs]  # all checked
    for run_dir, recipe in zip(run_dirs, recipes):
        summary = reevaluate(run_dir, recipe)
        click.echo(f"{run_dir}: gold {summary.gold_reward_mean:.3f}, "
                   f"win rate {summary.win_rate_vs_reference:.3f}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder")
@_margin_option
def report(paths, out, margin):
    """Rebuild a comparison (tables, plots, report.md) from finished runs or comparison folders,
    no training."""
    from alignkit.eval.verdict import MARGIN
    from alignkit.report.build import build_report, screen_table

    check_output_folder(out)
    given = ["--margin", f"{margin:g}"] if margin is not None else []
    argv = ["alignkit", "report", *map(str, paths), "--out", str(out), *given]
    build_report(list(paths), out, name=out.name, argv=argv, margin=MARGIN if margin is None else margin)
    click.echo(screen_table(out))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="create the repository private")
@click.option("--token", envvar="HF_TOKEN",
              help="Hub token (default: $HF_TOKEN, else the one `hf auth login` saved)")
def push(run_dir, repo_id, private, token):
    """Upload a finished run's policy (weights, tokenizer, model card) and eval/summary.json to the Hub
    repository REPO_ID (ORG/NAME), as push_to_hub: REPO_ID in a recipe does after the run."""
    from alignkit.run.hub import push_run

    click.echo(push_run(run_dir, repo_id, private=private, token=token))


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_plugins_option
def list_registered(as_json: bool, plugins: tuple[str, ...]):
    """Show every registered method, loss, reward, dataset and model alias (plugins included)."""
    from alignkit.recipes.bundled import BUNDLED
    from alignkit.registry import describe, load_plugins

    load_plugins(plugins)
    table = describe()
    table["recipes"] = [{"name": path.stem, "source": "builtin", "doc": _recipe_summary(path)}
                        for path in sorted(BUNDLED.glob("*.yaml"))]
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for kind, entries in table.items():
        click.echo(f"{kind}:")
        for e in entries:
            origin = "" if e["source"] == "builtin" else f"  [{e['source']}]"
            click.echo(f"  {e['name']:<18} {e['doc']}{origin}")


def _recipe_summary(path: Path) -> str:
    """A bundled recipe's opening comment (after its ``# alignkit ...`` command) up to its first ':' or
    full stop: what ``alignkit list`` shows for it (its names work as ``alignkit compare`` entries)."""
    lines = [line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    text = " ".join(line for line in lines[:4] if not line.startswith("alignkit "))
    return re.split(r":\s|(?<! al)\.(?:\s|$)", text, maxsplit=1)[0]  # "Meng et al. 2024" is no full stop


if __name__ == "__main__":
    main()
