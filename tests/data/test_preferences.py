"""Preference pairs: K-choose-2 ranking, Bradley-Terry labelling, and loading with column mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignkit.data.preferences import PreferenceConfig, load_preferences, rank_into_pairs
from alignkit.errors import DataError


def test_k_ranked_completions_give_all_k_choose_2_pairs_with_the_better_one_chosen():
    data = rank_into_pairs(["p"], [["a", "b", "c", "d"]], np.array([[0.1, 0.9, 0.5, 0.3]]),
                           labeling="deterministic", bt_temperature=0.1, seed=0)
    assert len(data) == 6 and set(data.group) == {0}
    assert all(c > r for c, r in zip(data.chosen_scores, data.rejected_scores))
    assert sorted(zip(data.chosen, data.rejected))[0] == ("b", "a")


def test_ties_give_no_deterministic_pair():
    data = rank_into_pairs(["p"], [["a", "b"]], np.array([[0.5, 0.5]]), labeling="deterministic",
                           bt_temperature=0.1, seed=0)
    assert len(data) == 0


def test_bradley_terry_labels_follow_the_sigmoid_of_the_score_gap():
    """P(a wins) = sigmoid((0.6 - 0.5) / 0.1) = sigmoid(1) = 0.731 over 4000 prompts."""
    n = 4000
    data = rank_into_pairs(["p"] * n, [["a", "b"]] * n, np.tile([[0.6, 0.5]], (n, 1)),
                           labeling="bradley_terry",
                           bt_temperature=0.1, seed=0)
    share = np.mean([c == "a" for c in data.chosen])
    assert abs(share - 1 / (1 + np.exp(-1.0))) < 0.02


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question,good,bad\nWhy?,Because.,No.\nHow?,Like this.,Dunno.\n")
    data = load_preferences(PreferenceConfig(source=str(path),
                                             columns={"prompt": "question", "chosen": "good",
                                                      "rejected": "bad"}))
    assert data.prompts == ["Why?", "How?"] and data.chosen == ["Because.", "Like this."]
    with pytest.raises(DataError, match="column 'better' named in preferences.columns is not in the data"):
        load_preferences(PreferenceConfig(source=str(path), columns={"chosen": "better"}))


def test_datasets_path_with_column_mapping(tmp_path):
    """hf:ID goes through datasets.load_dataset; a local data folder exercises the same call offline."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"x": f"prompt {i}", "y_w": " good", "y_l": " bad"} for i in range(5)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_preferences(PreferenceConfig(source=f"hf:{folder}", columns={"prompt": "x", "chosen": "y_w",
                                                                             "rejected": "y_l"}))
    assert len(data) == 5 and data.rejected[0] == " bad"


def test_empty_and_malformed_files_fail_clearly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no preference pairs"):
        load_preferences(PreferenceConfig(source=str(empty)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl: cannot parse JSONL"):
        load_preferences(PreferenceConfig(source=str(bad)))
    with pytest.raises(DataError, match="file not found"):
        load_preferences(PreferenceConfig(source=str(tmp_path / "nope.jsonl")))
