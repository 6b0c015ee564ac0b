"""Experiment trackers (``report_to``): the run's metrics, evaluation summary and a comparison's table and
plots sent through each tracker's own library (trackio, tensorboard, wandb, mlflow).

One small adapter per tracker; :class:`Trackers` fans out to them and is the sink the metrics log calls.
Names follow trl: the trained method's metrics are ``train/<name>`` (``train/rewards/chosen``), those of a
shared stage trained on the way ``<stage>/<name>``, the evaluation ``eval/<name>``. Each run is one tracker
run named after it and grouped by its comparison; the libraries are imported only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from alignkit.errors import AlignkitError

TRACKERS = ("trackio", "tensorboard", "wandb", "mlflow")
PROJECT = "alignkit"  # the tracker project (wandb, trackio) or experiment (mlflow) when no variable names one
PROJECT_VARIABLES = {"wandb": "WANDB_PROJECT", "mlflow": "MLFLOW_EXPERIMENT_NAME",
                     "trackio": "TRACKIO_PROJECT"}


def project_for(tracker: str) -> str:
    """The project (experiment) a tracker logs to: its own variable as transformers' integrations read it
    (``WANDB_PROJECT``, ``MLFLOW_EXPERIMENT_NAME``; ``TRACKIO_PROJECT``), else ``ALIGNKIT_PROJECT``, else
    ``alignkit``. TensorBoard has no project: its event files stay in the run folder."""
    import os

    return os.environ.get(PROJECT_VARIABLES.get(tracker, ""), "") or os.environ.get("ALIGNKIT_PROJECT",
                                                                                    "") or PROJECT
_PACKAGES = {"trackio": "trackio", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def report_to_problem(names: Iterable[str]) -> str | None:
    """Why a ``report_to`` list is not valid (an unknown tracker, ``none`` beside others, a tracker whose
    library is not installed: with the command that installs it), or None."""
    names = list(names)
    unknown = [n for n in names if n not in (*TRACKERS, "none")]
    if unknown:
        return f"unknown tracker {unknown[0]!r} (choose from {', '.join(TRACKERS)}, or none)"
    if "none" in names and len(names) > 1:
        return "none cannot be listed beside a tracker"
    missing = [n for n in names if n != "none" and importlib.util.find_spec(_PACKAGES[n]) is None]
    if missing:
        return (f"{missing[0]} is not installed: pip install 'alignkit[{missing[0]}]' (or pip install "
                f"{missing[0]})")
    return None


def _require(name: str):
    """The tracker's library, or one line with the command that installs it."""
    try:
        return importlib.import_module(_PACKAGES[name])
    except ImportError:
        raise AlignkitError(f"report_to: {name} is not installed: pip install 'alignkit[{name}]' "
                            f"(or pip install {_PACKAGES[name]})") from None


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record (booleans and text left out): what a tracker can plot."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``a/b`` keys (trackers take flat names)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        out.update(flat(value, name) if isinstance(value, dict) else {name: value})
    return out


def markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoard:
    """Event files in ``FOLDER/tensorboard`` (``tensorboard --logdir`` a comparison shows every entry)."""

    def __init__(self, folder: Path, name: str, group: str, config: dict):
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))
        self.writer.add_text("config", f"run {name} of {group}\n\n" + markdown_table(
            [{"key": k, "value": v} for k, v in flat(config).items()]))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def summary(self, values: dict[str, float]) -> None:
        self.log(values, 0)

    def table(self, name: str, rows: list[dict]) -> None:
        self.writer.add_text(name, markdown_table(rows))

    def image(self, name: str, path: Path) -> None:
        import matplotlib.image
        pixels = matplotlib.image.imread(str(path))[..., :3]
        self.writer.add_image(name, pixels, 0, dataformats="HWC")

    def finish(self) -> None:
        self.writer.close()


class Wandb:
    """A wandb run (``WANDB_MODE=offline`` keeps it in ``FOLDER/wandb``); each stage plots against its
    own step."""

    def __init__(self, folder: Path, name: str, group: str, config: dict):
        self.wandb = _require("wandb")
        self.run = self.wandb.init(project=project_for("wandb"), name=name, group=group, config=config,
                                   dir=str(folder),
                                   reinit="create_new")
        self.stages: set[str] = set()

    def log(self, metrics: dict[str, float], step: int) -> None:
        stage = next(iter(metrics)).split("/", 1)[0]
        if stage not in self.stages:  # wandb's own step only grows: each stage gets a step metric of its own
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({**metrics, f"{stage}/step": step})

    def summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def table(self, name: str, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        self.run.log({name: self.wandb.Table(columns=columns,
                                             data=[[row.get(c) for c in columns] for row in rows])})

    def image(self, name: str, path: Path) -> None:
        self.run.log({name: self.wandb.Image(str(path))})

    def finish(self) -> None:
        self.run.finish()


class Mlflow:
    """An mlflow run in experiment ``alignkit`` or ``MLFLOW_EXPERIMENT_NAME`` (tag ``alignkit.group``),
    through ``MlflowClient`` at the tracking
    URI mlflow is configured with (``MLFLOW_TRACKING_URI``)."""

    def __init__(self, folder: Path, name: str, group: str, config: dict):
        mlflow = _require("mlflow")
        self.client = mlflow.MlflowClient()
        project = project_for("mlflow")
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        self.run_id = self.client.create_run(experiment_id, run_name=name,
                                             tags={"alignkit.group": group}).info.run_id
        params = {k: str(v)[:500] for k, v in flat(config).items()}
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        self.entities = mlflow.entities

    def log(self, metrics: dict[str, float], step: int) -> None:
        stamp = _now_ms()
        self.client.log_batch(self.run_id, metrics=[self.entities.Metric(_mlflow_key(k), v, stamp, step)
                                                    for k, v in metrics.items()])

    def summary(self, values: dict[str, float]) -> None:
        self.log(values, 0)

    def table(self, name: str, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        self.client.log_table(self.run_id, {c: [row.get(c) for row in rows] for c in columns}, f"{name}.json")

    def image(self, name: str, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackio:
    """A trackio run in project ``alignkit`` (local: ``TRACKIO_DIR``, by
    default ~/.cache/huggingface/trackio)."""

    def __init__(self, folder: Path, name: str, group: str, config: dict):
        self.trackio = _require("trackio")
        # its notices would break the JSON alignkit prints on stdout
        with contextlib.redirect_stdout(sys.stderr):
            self.run = self.trackio.init(project=project_for("trackio"), name=name, group=group,
                                         config=config, embed=False)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, values: dict[str, float]) -> None:
        self.run.log(values)

    def table(self, name: str, rows: list[dict]) -> None:
        import pandas
        self.run.log({name: self.trackio.Table(dataframe=pandas.DataFrame(rows))})

    def image(self, name: str, path: Path) -> None:
        self.run.log({name: self.trackio.Image(str(path))})

    def finish(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.run.finish()
        current = self.trackio.context_vars.current_run
        if current.get() is self.run:  # else trackio finishes it again at exit, printing to stdout
            current.set(None)


ADAPTERS = {"trackio": Trackio, "tensorboard": TensorBoard, "wandb": Wandb, "mlflow": Mlflow}


def _mlflow_key(key: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", key)


def _now_ms() -> int:
    import time
    return int(time.time() * 1000)


class Trackers:
    """Every tracker of one run: the sink of its metrics log (``log(stage, step, metrics)``), then its
    evaluation summary, then closed. ``main_stage``'s metrics are ``train/...``, other
    stages' ``<stage>/...``."""

    def __init__(self, names: Iterable[str], folder: Path, name: str, group: str, config: dict,
                 main_stage: str = ""):
        names = [n for n in names if n != "none"]
        for n in names:  # every library first: a missing one fails before any tracker run is opened
            _require(n)
        self.main_stage = main_stage
        self.adapters = [ADAPTERS[n](Path(folder), name, group, config) for n in names]

    def __bool__(self) -> bool:
        return bool(self.adapters)

    def log(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        prefix = "train" if stage == self.main_stage else stage
        values = {f"{prefix}/{k}": v for k, v in scalars(metrics).items()}
        for adapter in self.adapters if values else ():
            adapter.log(values, step)

    def summary(self, summary: dict) -> None:
        """The evaluation summary: its numbers as ``eval/...`` (budget included), one row per temperature."""
        values = {f"eval/{k}": v for k, v in scalars(flat({k: v for k, v in summary.items()
                                                           if k != "by_temperature"})).items()}
        for adapter in self.adapters:
            adapter.summary(values)
            if len(summary.get("by_temperature") or ()) > 1:
                adapter.table("eval/by_temperature", [scalars(row) for row in summary["by_temperature"]])

    def table(self, name: str, rows: list[dict]) -> None:
        for adapter in self.adapters:
            adapter.table(name, rows)

    def images(self, paths: Iterable[Path]) -> None:
        for path in paths:
            for adapter in self.adapters:
                adapter.image(Path(path).stem, Path(path))

    def finish(self) -> None:
        for adapter in self.adapters:
            adapter.finish()
        self.adapters = []


def report_comparison(names: Iterable[str], out: Path, name: str, config: dict) -> None:
    """A comparison's table (``comparison.csv``) and plots, as one more tracker run in the
    comparison's group."""
    names = [n for n in names if n != "none"]
    if not names:
        return
    import pandas
    trackers = Trackers(names, out, f"{name}-comparison", name, config)
    frame = pandas.read_csv(out / "comparison.csv")
    trackers.table("comparison", frame.astype(object).where(frame.notna(), None).to_dict("records"))
    trackers.images(p for p in (out / "frontier.png", out / "temperature.png") if p.is_file())
    trackers.finish()
