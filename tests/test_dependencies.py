"""Every third-party package alignkit imports is declared in setup.cfg (core or an extra), so an install
never depends on what another package happens to pull in."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# read by transformers for the SmolLM2 plugin; alignkit checks for it and names the install
OPTIONAL = {"gguf"}


def _declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += [x for _, value in cfg["options.extras_require"].items() for x in value.splitlines()]
    return {re.split(r"[<>=!~\[ ;]", x.strip())[0].lower().replace("_", "-") for x in lines if x.strip()}


def _imported() -> set[str]:
    found = set()
    for path in (ROOT / "alignkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"alignkit", "__future__"}


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(_imported() - OPTIONAL):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & _declared():
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    assert {"numpy", "scipy", "pyarrow", "jinja2", "huggingface-hub", "safetensors"} <= _declared()
