"""Build what ships inside the package: the builtin models and the IMDb task's shared stages.

The models (alignkit/models/shipped/<alias>/): the tiny IMDb SFT policy and the tiny support-chat policy with
their tokenizers. The stages, at the quick start's settings (alignkit/stages/shipped/<asset>/): the gold
reward's weights, the preference pairs, the reference log-probs. All as safetensors, JSON and JSONL (no
pickle), each with ``alignkit_shipped.json`` (what made it, the thread count and versions, every file's
sha256).

Deterministic for a given thread count and library versions on one kind of CPU: rerun to regenerate the files
byte for byte; ``--check`` rebuilds into a scratch folder and compares checksums with the shipped files
(exit 1 on a difference), writing nothing into the package. The stages are built in order, each on the one
before (the pairs are labelled by the shipped gold reward and sampled from the shipped policy; the log-probs
are of the shipped pairs); ``--check`` builds them on its own rebuilt ones, and ``--only`` on the shipped.

    python scripts/make_builtin_models.py [--threads 1] [--only NAME] [--check]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from alignkit.threads import configure_threads

# the versions a stage's manifest records: the gold reward's (numpy, scipy, scikit-learn) and the policy's
STAGE_PACKAGES = ("numpy", "scipy", "scikit-learn", "torch", "transformers", "tokenizers", "safetensors")


def builders(cache: Path) -> dict:
    """name -> (where it ships: ``models`` or ``stages``, build(folder, runtime) -> (what makes it, its recipe
    as a dict)), the stages in the order each is built on the one before (``cache``: their scratch cache)."""
    from alignkit.config import fingerprint
    from alignkit.context import RunContext
    from alignkit.models import builtin, tiny_chat

    imdb, chat = builtin.TinyLMRecipe(), tiny_chat.TinyChatRecipe()

    def tiny_gpt2(folder, runtime):
        builtin.make_tiny_gpt2_imdb(folder, runtime, imdb)
        return fingerprint(imdb), asdict(imdb)

    def chat_policy(folder, runtime):
        tiny_chat.build_tiny_chat(chat, folder, RunContext(runtime.fp32()))
        return tiny_chat.made_by(chat), {**asdict(chat), "data": tiny_chat.DATA}

    models = {builtin.ALIAS: ("models", tiny_gpt2), tiny_chat.ALIAS: ("models", chat_policy)}
    return {**models, **{name: ("stages", make) for name, make in stage_builders(cache).items()}}


def stage_builders(cache: Path) -> dict:
    """The IMDb task's shipped stages, each built as the stage builds it, in a fresh builder of the quick
    start's recipe (on CPU) that finds the stages shipped so far: name -> build(folder, runtime)."""
    from alignkit.config import to_dict
    from alignkit.recipe import load_recipe
    from alignkit.rewards.builtin import fit_imdb_gold, imdb_gold_key
    from alignkit.stages import shipped_stages as stages
    from alignkit.stages.builder import StageBuilder

    recipe = load_recipe(stages.RECIPE, ["device=cpu"])
    record = {k: v for k, v in to_dict(recipe).items() if k in ("seed", "model", "task", "gold_reward",
                                                                "preferences")}

    def gold(folder, runtime):
        fit_imdb_gold(StageBuilder.for_recipe(recipe, cache_dir=cache).task, folder)
        return imdb_gold_key(recipe.task), record

    def pairs(folder, runtime):
        ws = StageBuilder.for_recipe(recipe, cache_dir=cache)
        folder.mkdir()
        ws.generate_pairs(folder / stages.PAIRS_FILE)
        return ws.keys.pairs_made_by(), record

    def reference_logps(folder, runtime):
        ws = StageBuilder.for_recipe(recipe, cache_dir=cache)
        folder.mkdir()
        ws.compute_reference_logps(folder / stages.LOGPS_FILE)
        return ws.keys.reference_logps_made_by(), record

    return {stages.GOLD: gold, stages.PAIRS: pairs, stages.REFERENCE_LOGPS: reference_logps}


def build(make, folder: Path, threads: int, packages: tuple[str, ...]) -> dict:
    """Build into the empty ``folder`` on the CPU and write its manifest; returns the manifest."""
    from alignkit.models.shipped import MANIFEST, describe
    from alignkit.runlog import write_json
    from alignkit.runtime import Runtime, seed_everything

    seed_everything(0)
    made_by, recipe = make(folder, Runtime("cpu"))
    manifest = describe(folder, made_by, recipe, threads, packages)
    write_json(folder / MANIFEST, manifest)
    return manifest


def differences(built: Path, shipped: Path) -> list[str]:
    """The files whose bytes differ between a rebuilt folder and the shipped one (or only one of them has)."""
    from alignkit.models.shipped import sha256

    names = sorted({p.name for p in built.iterdir()} | {p.name for p in shipped.glob("*")})
    return [n for n in names if not (shipped / n).is_file() or not (built / n).is_file()
            or sha256(shipped / n) != sha256(built / n)]


def publish(folder: Path, target: Path, threads: int) -> None:
    """Move a built folder into the package, replacing what was there."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), target)
    for path in target.iterdir():
        path.chmod(0o644)  # readable by every user of a system-wide install
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"{target.name}: {target} ({size / 1e6:.2f} MB, {threads} thread{'s' * (threads > 1)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the build (default 1)")
    parser.add_argument("--only", action="append", help="build only this model or stage (repeatable)")
    parser.add_argument("--check", action="store_true", help="rebuild aside and compare with the shipped")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    from alignkit.models.shipped import MODEL_PACKAGES, SHIPPED
    from alignkit.stages import shipped_stages

    scratch = Path(tempfile.mkdtemp(prefix="alignkit-shipped-"))
    entries = builders(scratch / "cache")
    names = args.only or list(entries)
    unknown = sorted(set(names) - set(entries))
    if unknown:
        parser.error(f"--only {', '.join(unknown)}: not shipped ({', '.join(entries)})")
    package = {"models": SHIPPED, "stages": shipped_stages.ASSETS}
    differs = False
    try:
        if args.check:  # the stages are built on copies of the shipped ones, replaced as they are rebuilt
            (scratch / "stages").mkdir()
            for shipped in package["stages"].glob("*"):
                shutil.copytree(shipped, scratch / "stages" / shipped.name)
            shipped_stages.ASSETS = scratch / "stages"
        for name in sorted(names, key=list(entries).index):
            where, make = entries[name]
            folder = scratch / "build" / name
            folder.parent.mkdir(parents=True, exist_ok=True)
            build(make, folder, threads, MODEL_PACKAGES if where == "models" else STAGE_PACKAGES)
            if not args.check:
                publish(folder, package[where] / name, threads)
                continue
            bad = differences(folder, package[where] / name)
            differs |= bool(bad)
            print(f"{name}: " + (f"differs in {', '.join(bad)}" if bad else "identical to the shipped files"))
            if where == "stages":
                shutil.rmtree(shipped_stages.ASSETS / name, ignore_errors=True)
                shutil.move(str(folder), shipped_stages.ASSETS / name)
    finally:
        shipped_stages.ASSETS = package["stages"]
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
