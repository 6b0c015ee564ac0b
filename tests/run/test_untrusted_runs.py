"""A run folder is untrusted input: ``alignkit eval`` never imports a plugin the folder ships, nor contacts
an endpoint (with the user's API key) that only its manifest names, unless the user names it again. Each
refusal is one line; the tests watch that nothing was imported (a canary file) or contacted (a counting
server)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from fake_endpoint import Server, chat, send
from test_cli import assert_one_line_error

from alignkit.cli import main
from alignkit.config import to_dict
from alignkit.recipe import load_recipe
from alignkit.run.reevaluate import recorded_endpoint

FAST = ["eval.n_prompts=8", "eval.every_steps=0", "eval.temperatures=[1.0]", "dpo.max_steps=2",
        "dpo.batch_size=8"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compare_overrides, cache_dir):
    """One finished tiny DPO run outside any comparison; each test edits its own copy."""
    out = tmp_path_factory.mktemp("untrusted") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGNKIT_CACHE", str(cache_dir))
        sets = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
        result = invoke("run", "dpo_imdb", "--out", out, *sets)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def record(run_dir, change) -> None:
    """Edit the recipe recorded in ``run_dir``'s manifest, as anyone who hands over a run folder could."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["recipe"])
    path.write_text(json.dumps(manifest))


def ship_canary(run_dir, loss: str) -> None:
    """A plugin in the run folder, listed by its manifest, registering the loss the recorded recipe trains
    with; importing it leaves ``imported`` beside the run."""
    marker = run_dir.parent / "imported"
    (run_dir / "canary.py").write_text(
        f"from pathlib import Path\nfrom alignkit.registry import LOSSES\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        f"LOSSES.register({loss!r}, LOSSES.get('sigmoid'), **LOSSES.entry('sigmoid').meta)\n")

    def change(recipe):
        recipe["plugins"] = ["canary.py"]
        recipe["methods"]["dpo"]["loss"] = loss
    record(run_dir, change)


def test_eval_never_imports_a_plugin_the_run_folder_ships(run):
    ship_canary(run, "canary_unnamed")
    result = invoke("eval", run, "--temperatures", "0.5")
    assert not (run.parent / "imported").exists()
    assert_one_line_error(result, "unknown loss 'canary_unnamed'", "the run lists plugins (canary.py)",
                          "name them again with --plugins PATH")


def test_eval_imports_the_plugin_the_user_names_again(run):
    ship_canary(run, "canary_named")
    result = invoke("eval", run, "--temperatures", "0.5", "--plugins", run / "canary.py")
    assert result.exit_code == 0, result.output
    assert (run.parent / "imported").exists()
    recipe = json.loads((run / "manifest.json").read_text())["recipe"]
    assert recipe["plugins"] == ["canary.py"]  # the record keeps what trained the run


def counting_server() -> Server:
    """An OpenAI-compatible /chat/completions on 127.0.0.1 that counts requests and the keys they carry
    (``auth``) and always answers "A"."""
    auth = []

    def respond(handler) -> None:
        auth.append(handler.headers.get("Authorization"))
        send(handler, 200, chat("A"), headers=[("Content-Type", "application/json")])

    server = Server(respond)
    server.auth = auth
    return server


def record_endpoint(run_dir, url: str) -> None:
    def change(recipe):
        recipe["eval"].update(judge="endpoint-judge", judge_options={
            "base_url": url, "model": "judge-model", "api_key_env": "OPENAI_API_KEY",
            "requests_per_second": 0})
    record(run_dir, change)


def test_eval_never_sends_the_key_to_an_endpoint_only_the_run_folder_names(run, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary")
    with counting_server() as server:
        record_endpoint(run, server.url)
        result = invoke("eval", run, "--temperatures", "0.5")
    assert server.requests == 0 and server.auth == []
    assert_one_line_error(result, f"the run's judge would contact the endpoint its recipe records (base_url "
                          f"'{server.url}')", "--reuse-recorded-endpoint")
    assert "sk-canary" not in result.output


def test_eval_reuses_a_recorded_endpoint_when_told_and_says_so(run, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary")
    with counting_server() as server:
        record_endpoint(run, server.url)
        result = invoke("eval", run, "--reuse-recorded-endpoint")
    assert result.exit_code == 0, result.output
    assert f"eval: reusing the endpoint its recipe records (base_url '{server.url}')" in result.stderr
    assert server.requests > 0 and set(server.auth) == {"Bearer sk-canary"}


def test_what_counts_as_named_again(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-x")
    url = "http://127.0.0.1:9/v1"
    options = f"eval.judge_options={{base_url: '{url}', model: m, api_key_env: MY_JUDGE_KEY}}"
    recipe = load_recipe("dpo_imdb", ["eval.judge=endpoint-judge", options])
    recorded = to_dict(recipe)
    assert recorded_endpoint(recipe, recorded, []) == {"base_url": url, "api_key_env": "MY_JUDGE_KEY"}
    assert recorded_endpoint(recipe, recorded, [f"eval.judge_options.base_url={url}"]) == {
        "api_key_env": "MY_JUDGE_KEY"}  # the secret's variable came from the folder still
    both = [f"eval.judge_options.base_url={url}", "eval.judge_options.api_key_env=MY_JUDGE_KEY"]
    assert recorded_endpoint(recipe, recorded, both) == {}
    assert recorded_endpoint(recipe, recorded, ["eval.judge_options={base_url: x, model: m}"]) == {}
    no_key = load_recipe("dpo_imdb", ["eval.judge=endpoint-judge",
                                      f"eval.judge_options={{base_url: '{url}', model: m, api_key_env: ''}}"])
    assert recorded_endpoint(no_key, to_dict(no_key), []) == {"base_url": url}  # no key sent: the URL still


def test_eval_of_several_folders_checks_them_all_before_it_writes_any(run, tmp_path):
    before = sorted(p.name for p in (run / "eval").iterdir())
    summary = (run / "eval" / "summary.json").read_bytes()
    result = invoke("eval", run, tmp_path / "no_such_run", "--temperatures", "0.5")
    assert result.exit_code == 1 and "no_such_run" in result.output.strip().splitlines()[-1], result.output
    assert sorted(p.name for p in (run / "eval").iterdir()) == before  # no samples_T0.5.jsonl
    assert (run / "eval" / "summary.json").read_bytes() == summary
