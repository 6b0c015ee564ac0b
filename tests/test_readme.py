"""The README works as printed: every command it and docs/ show is run or mapped to the test that runs it
(scripts/check_readme.py), CI runs its test command verbatim, and the front page stays a front page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_AND_COMPARE = ("python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt . && "
                       "alignkit compare dpo ppo")
INSTALL_AND_TEST = ("python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e "
                    "\".[test]\" && python -m pytest -q")


def test_every_documented_command_is_run_or_mapped_to_its_test():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_readme.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert re.search(r"\d+ commands: .*; 0 failed", out.stdout), out.stdout[-2000:]


def test_ci_runs_the_readme_test_command_verbatim():
    assert INSTALL_AND_TEST in README.splitlines()
    assert INSTALL_AND_TEST in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_front_page_is_short_and_shows_the_two_commands_first():
    lines = README.splitlines()
    assert len(lines) < 200
    assert INSTALL_AND_COMPARE in lines[:40] and INSTALL_AND_TEST in lines[:40]
    assert "](docs/frontier_dpo_ppo.png)" in README


def test_every_relative_link_of_the_readme_and_docs_resolves():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
        if page.name != "ARCHITECTURE.md" and page.parent.name == "docs" and page.name in LINKED_BACK:
            assert "](../README.md)" in text, f"{page.relative_to(ROOT)} does not link back to the README"


LINKED_BACK = {"quickstart.md", "comparing.md", "your_data.md", "methods.md", "figure2.md", "measuring.md",
               "run_folder.md", "recipes.md", "reliability.md", "plugins.md", "benchmarks.md"}


def test_lock_file_pins_what_the_readme_says():
    """`pip install -c constraints-lock.txt .` reproduces the figures' environment: torch
    as constraints.txt."""
    lock = (ROOT / "constraints-lock.txt").read_text().splitlines()
    torch = [
        line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch==")
    ]
    assert torch and torch[0] in lock
    assert any(line.startswith("transformers==") for line in lock) and any(
        line.startswith("trl==") for line in lock
    )
