"""Did the compared runs come from the same software? Each run's manifest records the versions of the
packages that decide its numbers (``versions``: alignkit, python, torch, transformers, trl, ...); runs whose
versions differ may differ for that reason alone (a new transformers resamples the pairs, and everything after
them moves), so the report names every package that differs and its versions."""

from __future__ import annotations

import platform
from importlib import metadata

from alignkit import __version__
from alignkit.report.records import RunRecord


def version_differences(runs: list[RunRecord]) -> dict[str, dict[str, list[str]]]:
    """Each package recorded with more than one version: version -> the runs that had it (runs that did not
    record the package are left out)."""
    found: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        for package, version in sorted((run.manifest.get("versions") or {}).items()):
            found.setdefault(package, {}).setdefault(str(version), []).append(run.label)
    return {package: seen for package, seen in found.items() if len(seen) > 1}


def version_warning(differences: dict[str, dict[str, list[str]]]) -> str | None:
    """One line naming every package whose versions differ, each version with a run that had it."""
    if not differences:
        return None
    parts = []
    for package, seen in differences.items():
        parts.append(
            f"{package} "
            + " vs ".join(
                f"{version} ({labels[0]}" + (f" +{len(labels) - 1}" if len(labels) > 1 else "") + ")"
                for version, labels in seen.items()
            )
        )
    return ("warning: the compared runs were made with different package versions, which alone can move "
            "their numbers: " + "; ".join(parts) + " (pip install -c constraints-lock.txt . pins the "
                                                   "README's)")


PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "scikit-learn")


def package_versions() -> dict[str, str]:
    """The versions a run records in its manifest: alignkit, python and the packages in ``PACKAGES``."""
    versions = {"alignkit": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
