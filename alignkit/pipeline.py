"""Turn a validated recipe into a finished run directory.

Layout (the contract users script against): ``manifest.json`` (resolved recipe, versions, seed, timings,
peak memory, artifact keys, status), ``metrics.jsonl``, ``model/``, ``eval/samples.jsonl``,
``eval/summary.json`` and ``eval/summary.png``. Every file is written atomically.
"""

from __future__ import annotations

import platform
import random
import resource
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from alignkit import __version__
from alignkit.config import to_dict
from alignkit.errors import AlignkitError
from alignkit.eval.evaluate import evaluate_policy, sequence_kl
from alignkit.models.policy import Policy
from alignkit.recipe import Recipe
from alignkit.registry import METHODS
from alignkit.runlog import MetricsLog, atomic_dir, write_json, write_jsonl
from alignkit.workspace import Workspace

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "scikit-learn")


def package_versions() -> dict[str, str]:
    versions = {"alignkit": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def peak_memory_mb() -> dict[str, float]:
    peak = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run into a finished one unless asked; never delete anything else."""
    if (run_dir / "manifest.json").exists() and not overwrite:
        raise AlignkitError(f"{run_dir} already holds a run (manifest.json); pass --overwrite or choose --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)


class Run:
    """One recipe executed into one run directory."""

    def __init__(self, recipe: Recipe, run_dir: Path, cache_dir: Path | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.ws = Workspace(recipe, self.run_dir, cache_dir, MetricsLog(self.run_dir / "metrics.jsonl"))
        self.timings: dict[str, float] = {}
        self.manifest = {"alignkit_run": 1, "name": recipe.name, "method": recipe.method, "seed": recipe.seed,
                         "recipe": to_dict(recipe), "versions": package_versions(), "argv": sys.argv,
                         "device": str(self.ws.device), "status": "running"}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        print(f"[alignkit] {name} ...", file=sys.stderr, flush=True)
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)

    def _write_manifest(self, **extra) -> None:
        self.manifest.update(timings_s=self.timings, peak_memory=peak_memory_mb(),
                             artifact_keys=self.ws.artifact_keys, **extra)
        write_json(self.run_dir / "manifest.json", self.manifest)

    def execute(self) -> dict:
        entry = METHODS.entry(self.recipe.method)
        seed_everything(self.recipe.seed)
        self._write_manifest()
        try:
            with self.stage("load SFT policy"):
                _ = self.ws.sft
            with self.stage("gold reward"):
                _ = self.ws.gold
            config = self.recipe.method_config(self.recipe.method)
            needs = entry.meta.get("needs", ())
            for need in needs(config) if callable(needs) else needs:
                with self.stage(need.replace("_", " ")):
                    getattr(self.ws, need)
            with self.stage(f"train {self.recipe.method}"):
                artifact = entry.obj(self.ws, config)
            with self.stage("save model"), atomic_dir(self.run_dir / "model") as tmp:
                artifact.save(tmp)
            with self.stage("evaluate"):
                summary, samples = self.evaluate(artifact)
            write_jsonl(self.run_dir / "eval" / "samples.jsonl", samples)
            write_json(self.run_dir / "eval" / "summary.json", summary)
            from alignkit.eval.plots import plot_run

            plot_run(self.run_dir)
        except BaseException as exc:
            self._write_manifest(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._write_manifest(status="done", gold_reward_meta=self.ws.gold_meta,
                             reward_model=self.ws.reward_model_summary)
        return summary

    def evaluate(self, artifact) -> tuple[dict, list[dict]]:
        """Policies go through the shared evaluator; other artifacts (reward models) evaluate themselves."""
        if not isinstance(artifact, Policy):
            return artifact.evaluate(self.ws)
        cfg = self.recipe.eval
        prompts = self.ws.prompts("heldout", cfg.n_prompts)
        summary, samples = evaluate_policy(artifact, self.ws.reference_for(artifact), prompts, self.ws.gold, cfg,
                                           seed=self.recipe.seed, method=self.recipe.method,
                                           kl_fn=getattr(artifact, "sequence_kl", sequence_kl))
        summary.update(getattr(artifact, "extra_summary", {}))
        return summary, samples


def run_recipe(recipe: Recipe, run_dir: Path, *, overwrite: bool = False, cache_dir: Path | None = None) -> dict:
    prepare_run_dir(Path(run_dir), overwrite)
    return Run(recipe, Path(run_dir), cache_dir).execute()
