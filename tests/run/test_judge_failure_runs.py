"""A judge that cannot judge fails a run before anything trains (``alignkit run``, ``alignkit compare``), in
one line; a run whose evaluation failed can be evaluated with another judge without training again; and an
``alignkit eval`` whose judge fails changes nothing recorded (summary, samples, manifest, card: same
sha256 before and after)."""

from __future__ import annotations

import hashlib
import json

import pytest
from fake_endpoint import Server, chat, send
from test_cli import assert_one_line_error
from test_judge_runs import always_first  # noqa: F401  (registers test-always-first)
from test_untrusted_runs import FAST, finished_run, invoke, run  # noqa: F401  (fixtures)

from alignkit.errors import AlignkitError
from alignkit.eval.judges import PROBE, PairwiseJudge
from alignkit.registry import register_reward


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def llm_judge(model) -> list[str]:
    return ["eval.judge=llm-judge", f"eval.judge_options={{model: '{model}'}}"]


@pytest.fixture
def short_judge(tmp_path):
    """A judge model with a 16-token context: no evaluation question fits."""
    from tiny import tiny_gpt2, tiny_tokenizer

    tokenizer = tiny_tokenizer(["which response is better a b"])
    folder = tmp_path / "short_judge"
    tiny_gpt2(tokenizer, n_positions=16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("judge, fragment", [
    ("missing", "llm-judge: cannot load the judge model"),
    ("short", "longer than the judge model's context (16 tokens")])
def test_a_judge_that_cannot_judge_fails_the_run_before_training(judge, fragment, tmp_path, compare_overrides,
                                                                  short_judge):
    model = tmp_path / "no_such_model" if judge == "missing" else short_judge
    out = tmp_path / "run"
    result = invoke("run", "dpo_imdb", "--out", out, *sets([*compare_overrides, *FAST, *llm_judge(model)]))
    assert_one_line_error(result, fragment)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and fragment in manifest["error"]
    assert not (out / "model").exists() and not any(k.startswith("train") for k in manifest["timings_s"])


def test_a_comparison_checks_its_judge_before_any_entry_trains(tmp_path, compare_overrides):
    out = tmp_path / "cmp"
    result = invoke("compare", "dpo", "--out", out,
                    *sets([*compare_overrides, *FAST, *llm_judge(tmp_path / "nope")]))
    assert_one_line_error(result, "llm-judge: cannot load the judge model")
    assert "compare: shared stage: judge check" in result.output  # phase 1
    assert not list(out.rglob("model"))


class BreaksAfterProbe(PairwiseJudge):
    """Answers the probe question, then breaks (as a judge whose context is too short for the policy's
    completions would)."""

    def ask(self, questions):
        if questions == [PROBE]:
            return ["A"]
        raise AlignkitError("test-breaks-after-probe: broke while evaluating")


@register_reward("test-breaks-after-probe", pairwise=True)
def breaks_after_probe(workspace):
    """Test judge: passes its check, fails in evaluation."""
    return BreaksAfterProbe("test-breaks-after-probe", "test-breaks-after-probe")


def test_eval_gives_a_run_that_failed_in_evaluation_another_judge(tmp_path, compare_overrides):
    out = tmp_path / "run"
    result = invoke("run", "dpo_imdb", "--out", out,
                    *sets([*compare_overrides, *FAST, "eval.judge=test-breaks-after-probe"]))
    assert_one_line_error(result, "broke while evaluating")
    weights = hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()
    result = invoke("push", out, "someone/model")
    assert_one_line_error(result, "the run failed", f"`alignkit eval {out}` evaluates it")

    result = invoke("eval", out, "--judge", "test-always-first")
    assert result.exit_code == 0, result.output
    assert "train dpo" not in result.output  # nothing trained again
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and "error" not in manifest and "failed_in" not in manifest
    assert manifest["recipe"]["eval"]["judge"] == "test-always-first"
    assert manifest["cost"]["train_wall_s"] == manifest["timings_s"]["train dpo"] and manifest["stage_keys"]
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["judge"] == "test-always-first" and summary["budget"] == manifest["trained_budget"]
    assert summary["budget"]["steps"] == 2 and not (out / "checkpoints").exists()
    assert hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest() == weights


RECORDED = ("eval/summary.json", "eval/samples.jsonl", "manifest.json", "model/README.md")


def digests(run_dir) -> dict[str, str]:
    return {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest() for name in RECORDED}


@pytest.mark.parametrize("broken", [b"", b"[]", chat("A" + "x" * (2 << 20))])
@pytest.mark.parametrize("probe_answered", [True, False])
def test_eval_whose_endpoint_breaks_changes_nothing_recorded(run, broken, probe_answered):  # noqa: F811
    before = digests(run)
    first = [probe_answered]  # the first request is the probe question

    def respond(handler):
        answer = first.pop() if first else False
        send(handler, 200, chat("A") if answer else broken)

    with Server(respond) as server:
        options = f"{{base_url: '{server.url}', model: m, api_key_env: '', requests_per_second: 0}}"
        result = invoke("eval", run, *sets(["eval.judge=endpoint-judge", f"eval.judge_options={options}"]))
    assert_one_line_error(result, "endpoint-judge: ", "cannot be parsed as A, B or a tie")
    assert ("probe question" in result.output) != probe_answered
    assert server.requests == (17 if probe_answered else 1)  # the probe, then 8 prompts in both orders
    assert digests(run) == before
