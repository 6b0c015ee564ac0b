"""The ``alignkit`` command: parse, call the pipeline, print. No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from alignkit import __version__
from alignkit.errors import AlignkitError

_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                           help="override a recipe value, e.g. --set dpo.beta=0.5 (repeatable)")
_plugins_option = click.option("--plugins", multiple=True, metavar="MODULE_OR_PATH",
                               help="import a plugin module, .py file or folder first (repeatable)")


class _Group(click.Group):
    """Report user errors as one line on stderr with exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AlignkitError as exc:
            click.echo(f"alignkit: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="alignkit")
def main() -> None:
    """alignkit: LLM alignment methods side by side (RLHF/PPO, DPO and variants) on one evaluator."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="run directory (default runs/NAME)")
@click.option("--overwrite", is_flag=True, help="replace a finished run already in the run directory")
@_set_option
@_plugins_option
def run(recipe: Path, out: Path | None, overwrite: bool, overrides: tuple[str, ...], plugins: tuple[str, ...]):
    """Run one method from a YAML RECIPE and evaluate it."""
    from alignkit.pipeline import run_recipe
    from alignkit.recipe import load_recipe

    loaded = load_recipe(recipe, overrides, plugins)
    run_dir = out or Path("runs") / loaded.name
    summary = run_recipe(loaded, run_dir, overwrite=overwrite)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"run directory: {run_dir}", err=True)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_plugins_option
def list_registered(as_json: bool, plugins: tuple[str, ...]):
    """Show every registered method, loss, reward, dataset and model alias (plugins included)."""
    from alignkit.registry import describe, load_plugins

    load_plugins(plugins)
    table = describe()
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for kind, entries in table.items():
        click.echo(f"{kind}:")
        for e in entries:
            origin = "" if e["source"] == "builtin" else f"  [{e['source']}]"
            click.echo(f"  {e['name']:<18} {e['doc']}{origin}")


if __name__ == "__main__":
    main()
