"""Gold sentiment reward: fit on a small seeded synthetic corpus, check accuracy, scoring and storage."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from alignkit.rewards.sentiment import SentimentClassifier

POS = ["wonderful", "great", "excellent", "superb", "delightful", "moving", "brilliant", "loved"]
NEG = ["terrible", "awful", "boring", "dreadful", "horrible", "dull", "wasted", "hated"]
FILLER = ["the", "film", "movie", "plot", "actor", "scene", "story", "was", "and", "it", "this", "a",
          "director", "ending", "music", "cast", "really", "quite", "very", "of"]


def _corpus(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """n short reviews: 2-3 class words among 4-8 filler words, some with IMDb "<br />" tags."""
    texts, labels = [], rng.integers(0, 2, size=n)
    for y in labels:
        words = list(rng.choice(POS if y else NEG, size=rng.integers(2, 4)))
        words += list(rng.choice(FILLER, size=rng.integers(4, 9)))
        rng.shuffle(words)
        if rng.random() < 0.3:
            words.insert(int(rng.integers(0, len(words))), "<br /><br />")
        texts.append(" ".join(words).capitalize() + ".")
    return texts, labels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train, held = _corpus(300, rng), _corpus(100, rng)
    return train, held


@pytest.fixture(scope="module")
def model(data):
    (tx, ty), (hx, hy) = data
    return SentimentClassifier.fit(tx, ty, hx, hy, seed=0)


def test_heldout_accuracy_recorded(model):
    assert model.meta["n_train"] == 300 and model.meta["n_heldout"] == 100
    assert model.meta["format_version"] == 2
    assert model.meta["heldout_accuracy"] > 0.9


def test_positive_scores_higher(model):
    pos, neg = model.score(["wonderful great film", "terrible awful film"])
    assert pos > neg
    assert pos > 0.5 > neg


def test_scores_are_probabilities(model, data):
    s = model.score(data[1][0])
    assert s.dtype == np.float64 and s.shape == (100,)
    assert np.all((s >= 0) & (s <= 1))
    assert model.score([]).shape == (0,)
    with pytest.raises(TypeError):
        model.score("a single string")


def test_matches_sklearn_pipeline(model, data):
    """Stored parameters reproduce the fitted sklearn TF-IDF + logistic regression exactly."""
    (tx, ty), (hx, _) = data
    strip = [t.replace("<br />", " ") for t in tx]
    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, max_features=100_000)
    lr = LogisticRegression(C=4.0, solver="liblinear", random_state=0).fit(vec.fit_transform(strip), ty)
    ref = lr.predict_proba(vec.transform([t.replace("<br />", " ") for t in hx]))[:, 1]
    np.testing.assert_allclose(model.score(hx), ref, rtol=1e-12, atol=0)


def test_save_load_roundtrip(model, data, tmp_path):
    model.save(tmp_path / "gold")
    loaded = SentimentClassifier.load(tmp_path / "gold")
    texts = data[1][0] + ["wonderful great film", "terrible awful film", "unseen words only"]
    np.testing.assert_allclose(loaded.score(texts), model.score(texts), rtol=1e-12, atol=0)
    assert loaded.meta == model.meta
    assert loaded.vocabulary == model.vocabulary


def test_saved_folder_has_no_pickle(model, tmp_path):
    folder = tmp_path / "gold"
    model.save(folder)
    model.save(folder)  # overwriting in place leaves no temp files behind
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "vocabulary.json", "weights.safetensors"]
    w = load_file(folder / "weights.safetensors")
    assert sorted(w) == ["coef", "idf", "intercept"]
    assert all(w[k].dtype == np.float64 for k in w)
    assert w["idf"].shape == w["coef"].shape == (len(model.vocabulary),)
    vocab = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(len(vocab)))
    json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def test_the_same_fit_saves_the_same_bytes(model, tmp_path):
    """What lets the package ship a fitted gold reward that a rebuild reproduces byte for byte."""
    model.save(tmp_path / "a")
    model.save(tmp_path / "b")
    for name in ("meta.json", "vocabulary.json", "weights.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_br_tags_ignored(model):
    assert "br" not in model.vocabulary  # tags in the training texts never became features
    with_tags = ["wonderful film<br /><br />great cast", "terrible<br />plot<br/>awful"]
    without = ["wonderful film  great cast", "terrible plot awful"]
    np.testing.assert_array_equal(model.score(with_tags), model.score(without))


def test_rejects_bad_labels(data):
    (tx, ty), (hx, hy) = data
    with pytest.raises(ValueError):
        SentimentClassifier.fit(tx, ty * 2, hx, hy)
