"""Write ``constraints-lock.txt``: every package of the environment this runs in, pinned (``pip freeze``),
less alignkit itself, with torch pinned as ``constraints.txt`` pins it (no local build tag such as ``+cpu``),
so ``pip install -c constraints-lock.txt .`` reproduces the environment the README's figures came from.

    python scripts/lock_constraints.py            # rewrites constraints-lock.txt at the repository root
    python scripts/lock_constraints.py --check    # exit 1 when the file differs from this environment
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = ("# Every package of the environment the README's figures came from (pip freeze, less alignkit).\n"
          "# Regenerate: python scripts/lock_constraints.py   Use: pip install -c constraints-lock.txt .\n")


def locked() -> str:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    torch = next((line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line.strip().lower().startswith("torch==")), None)
    lines = []
    for line in frozen:
        name = line.split("==")[0].split(" @ ")[0].strip().lower()
        if not line.strip() or line.startswith("#") or name == "alignkit":
            continue
        lines.append(torch if name == "torch" and torch else line.strip())
    return HEADER + "\n".join(sorted(lines, key=str.lower)) + "\n"


def main(argv: list[str]) -> int:
    text, path = locked(), ROOT / "constraints-lock.txt"
    if "--check" in argv:
        same = path.is_file() and path.read_text() == text
        print(f"{path.name}: {'matches' if same else 'differs from'} this environment")
        return 0 if same else 1
    path.write_text(text)
    print(f"wrote {path} ({text.count(chr(10)) - 2} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
