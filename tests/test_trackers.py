"""report_to: what alignkit logged, read back with each tracker's own reader (tensorboard's EventAccumulator,
wandb's offline run file, mlflow's client on a local file store, trackio's local database)."""

from __future__ import annotations

import glob
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.errors import ConfigError
from alignkit.recipe import load_recipe
from alignkit.trackers import Trackers, project_for, report_comparison

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SUMMARY = {"method": "dpo", "gold_reward_mean": 0.7, "budget": {"steps": 3},
           "by_temperature": [{"temperature": 1.0, "gold_reward_mean": 0.7}, {"temperature": 0.0,
                                                                              "gold_reward_mean": 0.8}]}


def log_some(names, folder: Path) -> None:
    trackers = Trackers(names, folder, "run-a", "cmp-1", {"dpo": {"beta": 0.1}}, main_stage="dpo")
    trackers.log("dpo", 1, {"loss": 0.5, "rewards/chosen": 0.25, "flag": True, "note": "text is not plotted"})
    trackers.log("dpo", 2, {"loss": 0.375, "nan": float("nan")})
    trackers.log("sft", 1, {"loss": 2.0})
    trackers.summary(SUMMARY)
    trackers.finish()


EXPECTED = {"train/loss": [(1, 0.5), (2, 0.375)], "train/rewards/chosen": [(1, 0.25)], "sft/loss": [(1, 2.0)]}


def assert_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [value for _, value in got] == pytest.approx([value for _, value in want], rel=1e-6)


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("text, fragment", [
    ("report_to: [tensorbord]", "report_to: unknown tracker 'tensorbord'"),
    ("report_to: [none, tensorboard]", "report_to: none cannot be listed beside a tracker"),
])
def test_report_to_is_validated(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(f"method: dpo\n{text}\n")
    with pytest.raises(ConfigError, match=fragment):
        load_recipe(path)


def test_a_missing_tracker_library_is_one_line_with_the_pip_command(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name,
                                                                                                        *a))
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--report-to", "wandb",
                                       "--out", str(tmp_path / "o")])
    assert (
        result.exit_code == 1
        and "report_to: wandb is not installed: pip install 'alignkit[wandb]'" in result.output
    )
    assert not (tmp_path / "o").exists()


def test_tensorboard_reads_back_metrics_and_summary(tmp_path):
    pytest.importorskip("tensorboard")
    log_some(["tensorboard"], tmp_path)
    scalars = event_scalars(tmp_path / "tensorboard")
    for tag, points in EXPECTED.items():
        assert_points(scalars[tag], points)
    assert_points(scalars["eval/gold_reward_mean"], [(0, 0.7)])
    assert_points(scalars["eval/budget/steps"], [(0, 3.0)])
    assert "train/flag" not in scalars and "train/nan" not in scalars


def _wandb_records(path: str):
    """The protobuf records of a wandb offline run file (its transaction log: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2
    raw, pos, block, parts = Path(path).read_bytes(), 7, 32768, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:
            pos += left
            continue
        parts, pos = parts + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def test_wandb_offline_run_reads_back(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # in a process of its own: wandb keeps process-wide state (its service, settings read at first use) that
    # tests run earlier in the suite left behind, and the offline file then lacked its run record
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from test_trackers "
            "import log_some; log_some(['wandb'], Path(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)], check=True,
                   timeout=300)
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    history, summary, runs = {}, {}, []
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            for key, value in row.items():
                stage = key.split("/", 1)[0]
                if f"{stage}/step" in row and key != f"{stage}/step":
                    history.setdefault(key, []).append((row[f"{stage}/step"], value))
        elif kind == "summary":
            summary.update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
        elif kind == "run":
            runs.append((record.run.display_name, record.run.run_group, record.run.project))
    assert ("run-a", "cmp-1", "alignkit") in runs
    for tag, points in EXPECTED.items():
        assert_points(history[tag], points)
    assert (
        summary["eval/gold_reward_mean"] == pytest.approx(0.7) and summary["eval/by_temperature/nrows"] == 2
    )


def test_mlflow_file_store_reads_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    log_some(["mlflow"], tmp_path)
    client = mlflow.MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("alignkit").experiment_id])
    assert (run.info.run_name, run.data.tags["alignkit.group"], run.info.status) == ("run-a", "cmp-1",
                                                                                     "FINISHED")
    assert run.data.params == {"dpo/beta": "0.1"}
    for tag, points in EXPECTED.items():
        assert_points([(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)], points)
    assert run.data.metrics["eval/gold_reward_mean"] == pytest.approx(0.7)


def test_project_names_follow_the_usual_variables(monkeypatch):
    for name in ("WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "TRACKIO_PROJECT", "ALIGNKIT_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    assert {t: project_for(t) for t in ("wandb", "mlflow", "trackio")} == dict.fromkeys(("wandb", "mlflow",
                                                                                         "trackio"),
                                                                                        "alignkit")
    monkeypatch.setenv("ALIGNKIT_PROJECT", "mine")
    monkeypatch.setenv("WANDB_PROJECT", "team-rlhf")
    assert (project_for("wandb"), project_for("mlflow"), project_for("trackio")) == ("team-rlhf", "mine",
                                                                                     "mine")


def test_mlflow_logs_to_the_experiment_mlflow_experiment_name_names(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "dpo-vs-ppo")
    log_some(["mlflow"], tmp_path)
    client = mlflow.MlflowClient((tmp_path / "mlruns").as_uri())
    assert client.get_experiment_by_name("alignkit") is None
    (run,) = client.search_runs([client.get_experiment_by_name("dpo-vs-ppo").experiment_id])
    assert run.info.run_name == "run-a" and run.data.metrics["eval/gold_reward_mean"] == pytest.approx(0.7)


def test_trackio_local_database_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read by trackio when it is first imported
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage
    if not str(SQLiteStorage.get_project_db_path("alignkit")).startswith(str(tmp_path)):
        pytest.skip("trackio was imported before this test set TRACKIO_DIR")
    log_some(["trackio"], tmp_path)
    logs = SQLiteStorage.get_logs("alignkit", "run-a")
    for tag, points in EXPECTED.items():
        assert_points([(row["step"], row[tag]) for row in logs if tag in row], points)
    assert [row["eval/gold_reward_mean"] for row in logs if "eval/gold_reward_mean" in row] == [0.7]
    table = next(row["eval/by_temperature"] for row in logs if "eval/by_temperature" in row)
    assert [r["gold_reward_mean"] for r in table["_value"]] == [0.7, 0.8]
    (config,) = SQLiteStorage.get_all_run_configs("alignkit").values()
    assert config["_Group"] == "cmp-1" and config["dpo"] == {"beta": 0.1}


def test_comparison_table_and_plots_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (tmp_path / "comparison.csv").write_text("label,gold_reward_mean,kl_mean\ndpo,0.71,1.5\nppo,0.64,\n")
    plt.plot([0, 1], [0, 1])
    plt.savefig(tmp_path / "frontier.png")
    report_comparison(["tensorboard"], tmp_path, "cmp-1", {})
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0,
                                                                            "tensors": 0}).Reload()
    assert events.Tags()["images"] == ["frontier"]
    image = events.Images("frontier")[0]
    assert image.width > 100 and image.height > 100
    text = events.Tensors("comparison/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| dpo | 0.71 | 1.5 |" in text and "| ppo | 0.64 | None |" in text


def test_a_run_logs_its_metrics_jsonl_and_summary_to_tensorboard(tmp_path, tiny_overrides):
    pytest.importorskip("tensorboard")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(out),
                                                       *sets, "--set", "dpo.epochs=1", "--report-to",
                                                       "tensorboard"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "dpo"  # stdout is still the summary alone
    scalars = event_scalars(out / "tensorboard")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = 0
    for record in records:
        prefix = "train" if record["stage"] == "dpo" else record["stage"]
        for key, value in record.items():
            if key not in ("stage", "step") and isinstance(value, float):
                assert (record["step"], pytest.approx(value, rel=1e-6)) in scalars[f"{prefix}/{key}"]
                logged += 1
    assert logged >= 8 and {"train/loss", "train/rewards/margins"} <= set(scalars)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert scalars["eval/gold_reward_mean"][0][1] == pytest.approx(summary["gold_reward_mean"], rel=1e-6)
    assert scalars["eval/win_rate_ci_low"][0][1] == pytest.approx(summary["win_rate_ci_low"], rel=1e-6)
    assert json.loads((out / "manifest.json").read_text())["recipe"]["report_to"] == ["tensorboard"]
