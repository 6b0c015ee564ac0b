"""KTO on your own unpaired rows (prompt, completion, label) judged by the heldout-reward-model: the judge's
reward model trains on those rows, each desirable completion paired with each undesirable one of a prompt."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_task_data import QUESTIONS, tiny_run_args, write_jsonl

from alignkit.cli import main


def test_kto_on_unpaired_rows_with_the_heldout_reward_model_judge(tmp_path, tiny_overrides):
    rows = [{"prompt": q, "completion": c, "label": good} for q in QUESTIONS
            for c, good in ((" Open settings.", True), (" No idea.", False), (" Ask someone.", False))]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tmp_path / "run"
    args = tiny_run_args(tiny_overrides, data, "gold_reward=heldout-reward-model", "kto.max_steps=2",
                         "kto.batch_size=6", "reward_model.epochs=1", "eval.every_steps=0",
                         "eval.temperatures=[]")
    result = CliRunner().invoke(main, ["run", "kto_imdb", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["method"] == "kto" and summary["gold_reward_mean"] is not None
