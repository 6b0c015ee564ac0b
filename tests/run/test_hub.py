"""Model cards and ``alignkit push``: the card of a trained LoRA policy says what trained it and how it
scored,
the adapter names its base by an absolute path, and the upload goes through huggingface_hub's own HTTP
client (answered here by a fake Hub, no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from test_cli import assert_one_line_error

from alignkit.cli import main
from alignkit.eval.summary import EvalSummary
from alignkit.run.hub import card_text
from alignkit.runfolder import model_problem, read_run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class FakeHub:
    """The three Hub endpoints a push calls (create repo, preupload, commit), recording what arrives."""

    def __init__(self):
        self.created, self.files, self.requests, self.validated = [], {}, [], []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append(path)
        if path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{body['organization']}/{body['name']}"})
        if path == "/api/validate-yaml":  # the Hub checks a README's metadata before the commit
            self.validated.append(json.loads(request.content)["content"])
            return httpx2.Response(200, json={"warnings": []})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/tiny/commit/abc",
                                              "commitOid": "abc"})
        return httpx2.Response(404, json={"error": f"no such endpoint {path}"})


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    yield hub
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, imdb_model_dir):
    """A tiny DPO run with a LoRA adapter on a base named by a relative path (as ``./models/my-llama``)."""
    import os
    out = tmp_path_factory.mktemp("lora") / "run"
    before = os.getcwd()
    os.chdir(Path(imdb_model_dir).parent)
    try:
        result = CliRunner().invoke(main, [
            "run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(out), "--model_name_or_path",
            f"./{Path(imdb_model_dir).name}", "--set", "model.max_length=48", "--set",
            "task.max_examples=600",
            "--set", "preferences.n_prompts=48", "--set", "preferences.max_new_tokens=12", "--set",
            "eval.n_prompts=24", "--set", "eval.max_new_tokens=12", "--set", "model.lora={r: 4}",
            "--set", "dpo.epochs=1", "--set", "eval.temperatures=[0.0]"], catch_exceptions=False)
    finally:
        os.chdir(before)
    assert result.exit_code == 0, result.output
    return out


def test_adapter_records_an_absolute_base(lora_run, imdb_model_dir):
    config = json.loads((lora_run / "model" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(imdb_model_dir).resolve())


def test_the_card_says_what_trained_the_policy_and_how_it_scored(lora_run):
    summary = json.loads((lora_run / "eval" / "summary.json").read_text())
    card = ModelCard.load(lora_run / "model" / "README.md")
    assert card.data.library_name == "peft" and {"alignkit", "dpo", "sigmoid"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local folder is no Hub id
    text = card.text
    assert "trained with **dpo** (loss `sigmoid`)" in text and "(a LoRA adapter on it)" in text
    assert "| dpo.beta | `0.1` |" in text and "| dpo.epochs | `1.0` |" in text
    assert f"- steps: {summary['budget']['steps']}" in text and "task: `imdb`" in text
    assert "judged by `imdb-sentiment`" in text and f"On {summary['n_samples']} held-out prompts" in text
    for row in summary["by_temperature"]:  # every temperature with its interval
        f = {k: "n/a" if row.get(k) is None else f"{row[k]:.3f}" for k in ("gold_reward_mean",
                                                                           "gold_reward_std", "kl_mean",
                                                                   "win_rate_vs_reference", "win_rate_ci_low",
                                                                   "win_rate_ci_high")}
        assert (f"| {row['temperature']} | {f['gold_reward_mean']} ± {f['gold_reward_std']} | {f['kl_mean']} "
                "| "
                f"{f['win_rate_vs_reference']} [{f['win_rate_ci_low']}, {f['win_rate_ci_high']}] |") in text
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["gold_reward_mean"] == summary["gold_reward_mean"]
    assert model_problem(lora_run, read_run(lora_run).manifest) is None  # the card is not among the checksums


def test_a_full_model_card_names_a_hub_base_and_dataset():
    recipe = {"method": "ppo", "name": "r", "seed": 0, "precision": "bf16", "gold_reward": "gold",
              "model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M"}, "task": {"dataset": "preferences"},
              "preferences": {"source": "hf:me/pairs", "split": "train"},
              "methods": {"ppo": {"target_kl": 6}}}
    summary = {"judge": "llm-judge", "judge_kind": "pairwise", "n_samples": 8, "gold_reward_mean": 0.5,
               "budget": {"steps": 3, "sequences": 24, "tokens": 400}}
    card = ModelCard(card_text(recipe, EvalSummary.from_dict(summary), adapter=False))
    assert (card.data.base_model, card.data.library_name, card.data.datasets) == (
        "HuggingFaceTB/SmolLM2-135M", "transformers", ["me/pairs"])
    assert "judged by `llm-judge` (pairwise)" in card.text and "- tokens: 400" in card.text
    assert "| ppo.target_kl | `6` |" in card.text and "(loss" not in card.text


def test_push_uploads_model_tokenizer_card_and_summary(lora_run, fake_hub):
    result = CliRunner().invoke(main, ["push", str(lora_run), "me/tiny", "--private", "--token", "hf_fake"])
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/me/tiny/commit/abc" in result.output
    assert fake_hub.created == [{"name": "tiny", "organization": "me", "visibility": "private"}]
    local = {p.relative_to(lora_run / "model").as_posix(): p.read_bytes()
             for p in (lora_run / "model").rglob("*") if p.is_file()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= set(local)
    assert {k: v for k, v in fake_hub.files.items() if k != "eval/summary.json"} == local
    assert fake_hub.validated and "library_name: peft" in fake_hub.validated[0]
    assert fake_hub.files["eval/summary.json"] == (lora_run / "eval" / "summary.json").read_bytes()


def test_push_failure_is_one_line_and_changes_nothing_recorded(run_copy, monkeypatch):
    (run_copy / "model" / "README.md").write_text("a card an older alignkit wrote\n")
    before = digests(run_copy)

    def refuse(request):
        return httpx2.Response(401, json={"error": "Invalid credentials"})
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(refuse)))
    try:
        result = CliRunner().invoke(main, ["push", str(run_copy), "me/tiny", "--token", "hf_bad"])
    finally:
        huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
    assert result.exit_code == 1 and "alignkit: error: push: me/tiny:" in result.output
    assert "Traceback" not in result.output and "the run folder is unchanged" in result.output
    assert digests(run_copy) == before  # the older card too: push writes its card only once it is pushed


def digests(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_push_to_hub_is_validated_and_refused_by_compare(tmp_path):
    from alignkit.compare.plan import plan_comparison
    from alignkit.errors import ConfigError
    from alignkit.recipe import load_recipe
    with pytest.raises(ConfigError, match="push_to_hub: expected a Hub repository id ORG/NAME"):
        load_recipe(None, ["method=dpo", "push_to_hub=a/b/c"])
    with pytest.raises(ConfigError, match="hub_private: applies to push_to_hub"):
        load_recipe(None, ["method=dpo", "hub_private=true"])
    with pytest.raises(ConfigError, match="push_to_hub: a comparison does not push"):
        plan_comparison(["dpo", "ppo"], overrides=["push_to_hub=me/x"])


@pytest.fixture
def run_copy(lora_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(lora_run, copy)
    return copy


def test_push_refuses_a_model_that_fails_its_checksums(run_copy, fake_hub):
    weights = run_copy / "model" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # truncated, as eval refuses it
    result = CliRunner().invoke(main, ["push", str(run_copy), "me/tiny", "--token", "hf_fake"])
    assert_one_line_error(result, "push:", "model/adapter_model.safetensors: fails its checksum")
    assert fake_hub.requests == []


@pytest.mark.parametrize("how", ["extra file", "recorded file", "linked folder"])
def test_push_never_follows_a_link_out_of_the_run(run_copy, fake_hub, tmp_path, how):
    """A link inside model/ to a file outside the run (an extra one, or one standing in for a recorded file
    with the very bytes recorded) or to a folder outside: refused, nothing read out of it is uploaded."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "tokenizer.json"
    recorded = (run_copy / "model" / "tokenizer.json").read_bytes()
    secret.write_bytes(recorded if how == "recorded file" else b"secret")
    link = run_copy / "model" / {"extra file": "notes.txt", "recorded file": "tokenizer.json",
                                 "linked folder": "extra"}[how]
    link.unlink(missing_ok=True)
    link.symlink_to(outside if how == "linked folder" else secret)
    result = CliRunner().invoke(main, ["push", str(run_copy), "me/tiny", "--token", "hf_fake"])
    assert_one_line_error(result, f"push: {link}: a symbolic link; push uploads only regular files inside")
    assert fake_hub.requests == [] and fake_hub.files == {}


def test_push_refuses_a_file_the_run_did_not_record(run_copy, fake_hub):
    (run_copy / "model" / "notes.txt").write_text("added later")
    result = CliRunner().invoke(main, ["push", str(run_copy), "me/tiny", "--token", "hf_fake"])
    assert_one_line_error(result, "model/notes.txt: not a file the run recorded (model_sha256)")
    assert fake_hub.requests == []
