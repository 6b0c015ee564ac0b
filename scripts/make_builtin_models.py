"""Build the builtin models that ship inside the package (alignkit/models/shipped/<alias>/): the tiny IMDb SFT
policy and the tiny support-chat policy with their tokenizers, as safetensors and JSON (no pickle), each with
``alignkit_shipped.json`` (what made it, the thread count and versions, every file's sha256).

Deterministic for a given thread count and library versions on one kind of CPU: rerun to regenerate the files
byte for byte; ``--check`` rebuilds into a scratch folder and compares checksums with the shipped files
(exit 1 on a difference), writing nothing into the package.

    python scripts/make_builtin_models.py [--threads 1] [--only ALIAS] [--check]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from alignkit.threads import configure_threads


def builders() -> dict:
    """alias -> (what makes it, its recipe as a dict, build(folder, runtime))."""
    from alignkit.config import fingerprint
    from alignkit.context import RunContext
    from alignkit.models import builtin, tiny_chat

    imdb, chat = builtin.TinyLMRecipe(), tiny_chat.TinyChatRecipe()
    return {
        builtin.ALIAS: (fingerprint(imdb), asdict(imdb),
                        lambda folder, runtime: builtin.make_tiny_gpt2_imdb(folder, runtime, imdb)),
        tiny_chat.ALIAS: (tiny_chat.made_by(chat), {**asdict(chat), "data": tiny_chat.DATA},
                          lambda folder, runtime: tiny_chat.build_tiny_chat(chat, folder,
                                                                            RunContext(runtime.fp32()))),
    }


def build(alias: str, folder: Path, threads: int) -> dict:
    """Build ``alias`` into the empty ``folder`` on the CPU and write its manifest; returns the manifest."""
    from alignkit.models.shipped import MANIFEST, describe
    from alignkit.runlog import write_json
    from alignkit.runtime import Runtime, seed_everything

    made_by, recipe, make = builders()[alias]
    seed_everything(0)
    make(folder, Runtime("cpu"))
    manifest = describe(folder, made_by, recipe, threads)
    write_json(folder / MANIFEST, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the build (default 1)")
    parser.add_argument("--only", action="append", help="build only this alias (repeatable)")
    parser.add_argument("--check", action="store_true", help="rebuild aside and compare with the shipped")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    from alignkit.models.shipped import MANIFEST, SHIPPED, sha256

    aliases = args.only or list(builders())
    unknown = sorted(set(aliases) - set(builders()))
    if unknown:
        parser.error(f"--only {', '.join(unknown)}: not a shipped builtin ({', '.join(builders())})")
    differs = False
    for alias in aliases:
        scratch = Path(tempfile.mkdtemp(prefix=f"alignkit-{alias}-"))
        try:
            built = build(alias, scratch / alias, threads)
            target = SHIPPED / alias
            if args.check:
                names = sorted(set(built["files"]) | {MANIFEST} | {p.name for p in target.glob("*")})
                bad = [n for n in names if not (target / n).is_file() or not (scratch / alias / n).is_file()
                       or sha256(target / n) != sha256(scratch / alias / n)]
                differs |= bool(bad)
                same = "identical to the shipped files"
                print(f"{alias}: " + (f"differs in {', '.join(bad)}" if bad else same))
                continue
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(scratch / alias), target)
            for path in target.iterdir():
                path.chmod(0o644)  # readable by every user of a system-wide install
            size = sum(p.stat().st_size for p in target.iterdir())
            print(f"{alias}: {target} ({size / 1e6:.2f} MB, {threads} thread{'s' * (threads > 1)})")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
