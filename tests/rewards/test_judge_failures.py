"""Judges that cannot judge fail early and in one line: a judge model that does not load, a question longer
than its context, a probe answer that does not parse, too many unparseable verdicts; and an endpoint that
misbehaves (empty, non-object or huge answers, Retry-After: 86400, hanging, garbled status lines, bodies
cut short) ends in one line, waits at most max_backoff_s at a time and says so, and caches no garbage."""

from __future__ import annotations

import json
import time

import pytest
from fake_endpoint import Server, chat, send
from test_judges import BAD, GOOD, PROMPTS, recording, tiny_judge_folder
from tiny import tiny_gpt2, tiny_tokenizer

from alignkit.errors import AlignkitError
from alignkit.eval.judges import ANSWER_CHARS, PROBE, JudgeError, PairwiseJudge, VerdictCache
from alignkit.rewards.llm_judge import EndpointJudge, EndpointJudgeOptions, LLMJudge, LLMJudgeOptions


class Scripted(PairwiseJudge):
    """Answers from a list, in order."""

    def __init__(self, answers, cache_dir=None):
        super().__init__("scripted", "scripted", cache_dir=cache_dir)
        self.script = list(answers)

    def ask(self, questions):
        return [self.script.pop(0) for _ in questions]


def test_more_unparseable_answers_than_max_unparseable_fail_the_judge_in_one_line():
    two_of_eight = ["A", "?", "A", "A", "B", "??", "B", "B"]
    assert Scripted(two_of_eight).compare(PROMPTS, GOOD, BAD).tolist() == [1.0, 0.5, 1.0, 1.0]  # 25%: kept
    with pytest.raises(JudgeError, match=r"^scripted: 3 of 8 answers cannot be parsed as A, B or a tie "
                                         r"\(more than max_unparseable 0.25\); e.g. '\?'; fix the judge"):
        Scripted(["A", "?", "A", "?", "B", "??", "B", "B"]).compare(PROMPTS, GOOD, BAD)


def test_only_parseable_answers_are_cached_and_at_most_4_kb_of_each(tmp_path):
    long = "A. " + "x" * 100_000
    judge = Scripted([long, "", "B", "B"], cache_dir=tmp_path)
    judge.max_unparseable = 0.5
    assert judge.compare(PROMPTS[:2], GOOD[:2], BAD[:2]).tolist() == [1.0, 0.5]
    path = next((tmp_path / "judge_verdicts").glob("*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["A", "B", "B"] and len(rows[0]["answer"]) == ANSWER_CHARS
    assert path.stat().st_size < 2 * ANSWER_CHARS
    key = rows[0]["key"]
    with open(path, "a") as handle:  # what another writer, an old version or a torn write may leave
        handle.write(json.dumps({"key": "k" * 64, "answer": "A"}) + "\n")
        handle.write(json.dumps({"key": key[::-1], "answer": "A" * (ANSWER_CHARS + 1)}) + "\n")
        handle.write(json.dumps({"key": key[:-1] + "0", "verdict": "maybe", "answer": "A"}) + "\n")
        handle.write(json.dumps({"key": "f" * 64, "answer": "Response B"}) + "\n")  # before verdicts: parsed
        handle.write('{"key": "torn')
    assert VerdictCache(path).verdicts == {**{r["key"]: r["verdict"] for r in rows}, "f" * 64: "B"}


def test_a_judge_model_that_does_not_load_fails_its_check_in_one_line(tmp_path):
    judge = LLMJudge(LLMJudgeOptions(model=str(tmp_path / "no_such_model")))
    with pytest.raises(JudgeError, match=r"^llm-judge: cannot load the judge model '.*no_such_model' \(.*\); "
                                         r"set eval.judge_options.model to a model folder"):
        judge.check([PROBE])


def test_a_question_longer_than_the_judge_context_fails_its_check(tmp_path):
    words = "which response is better a b prompt the movie was great"
    tokenizer = tiny_tokenizer([words])
    folder = tmp_path / "short_judge"
    tiny_gpt2(tokenizer, n_positions=32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    options = LLMJudgeOptions(model=str(folder), chat=False, template="{prompt} {a} {b}")
    judge = LLMJudge(options)
    recording(judge, lambda text: "A")
    judge.check([PROBE])  # short enough
    with pytest.raises(JudgeError, match=r"^llm-judge: the longest question is \d+ tokens, and with its "
                                         r"answer \(8\) longer than the judge model's context \(32 tokens"):
        judge.check([("the movie", "was great " * 20, "was great")])
    judge = LLMJudge(options)
    with pytest.raises(JudgeError, match="longer than the judge model's context"):  # not an IndexError
        judge.compare(["the movie"], ["was great " * 20], ["was great"])


def test_a_judge_whose_probe_answer_does_not_parse_fails_its_check(tmp_path):
    judge = LLMJudge(LLMJudgeOptions(model=str(tiny_judge_folder(tmp_path))))
    asked = recording(judge, lambda text: "I cannot tell")
    with pytest.raises(JudgeError, match=r"^llm-judge: its answer to a probe question cannot be parsed as "
                                         r"A, B or a tie \('I cannot tell'\)"):
        judge.check([PROBE])
    assert len(asked) == 1
    recording(judge, lambda text: "B")
    judge.check([PROBE])


def endpoint(url, **options):
    judge = EndpointJudge(EndpointJudgeOptions(base_url=url, model="m", api_key_env="", requests_per_second=0,
                                               **options))
    judge.sleeps = []
    judge.sleep = judge.sleeps.append  # no real waiting in tests
    return judge


@pytest.mark.parametrize("body, shown", [
    (b"", "holds no choices"), (b"[1, 2]", "a JSON list, holds no choices"),
    (chat("A" + "x" * (2 << 20)), "its answer is over 1 MB")])
def test_an_endpoint_answering_200_without_a_verdict_fails_the_judge(tmp_path, body, shown):
    with Server(lambda h: send(h, 200, body)) as server:
        judge = EndpointJudge(EndpointJudgeOptions(base_url=server.url, model="m", api_key_env="",
                                                   requests_per_second=0), cache_dir=tmp_path)
        with pytest.raises(JudgeError, match=f"^endpoint-judge: its answer to a probe question .*{shown}"):
            judge.check([PROBE])
        with pytest.raises(JudgeError, match=f"4 of 4 answers cannot be parsed .*no answer: .*{shown}"):
            judge.compare(PROMPTS[:2], GOOD[:2], BAD[:2])
    assert not list(tmp_path.rglob("*.jsonl"))  # nothing cached


def test_retry_after_is_capped_by_max_backoff_s_and_every_wait_is_shown(capsys):
    answers = iter([(429, b"{}", [("Retry-After", "86400")]), (200, chat("A"), [])])
    with Server(lambda h: send(h, *next(answers))) as server:
        judge = endpoint(server.url)
        assert judge.answer("q") == "A"
    assert judge.sleeps == [60.0]
    assert (f"alignkit: warning: endpoint-judge: {server.url}/chat/completions: answered HTTP 429; retry 1 "
            "of 6 in 60 s (Retry-After 86400 s, capped by max_backoff_s)") in capsys.readouterr().err


def test_a_hanging_endpoint_is_shown_at_each_retry_then_ends_in_one_line(capsys):
    with Server(lambda h: time.sleep(0.6)) as server:
        judge = endpoint(server.url, timeout_s=0.2, max_retries=1)
        with pytest.raises(AlignkitError, match=r"2 request\(s\): no answer within timeout_s \(0.2 s\)"):
            judge.answer("q")
    assert "no answer within timeout_s (0.2 s); retry 1 of 1 in 1 s" in capsys.readouterr().err


def garbled(handler):
    handler.wfile.write(b"HELLO THERE\r\n\r\n")


def cut_short(handler):
    send(handler, 200, chat("A")[:10], length=100)


@pytest.mark.parametrize("respond, reason", [(garbled, "BadStatusLine"), (cut_short, "IncompleteRead")])
def test_http_protocol_errors_are_retried_then_one_line(respond, reason, capsys):
    with Server(respond) as server:
        judge = endpoint(server.url, max_retries=2)
        with pytest.raises(AlignkitError, match=rf"^endpoint-judge: .* after 3 request\(s\): {reason}"):
            judge.answer("q")
    assert server.requests == 3 and judge.sleeps == [1.0, 2.0]
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 2 and all(f"completions: {reason}" in n and "; retry " in n for n in notices)


def test_an_answer_repeating_one_reply_names_it():
    """SmolLM2-135M answers by repeating the better reply ('Two plus two is four.'): that names it, for the
    probe and every question alike; an answer that is neither reply, or both, names none."""
    from alignkit.eval.judges import PROBE, quoted_reply, read_verdict

    assert quoted_reply("Two plus two is four.", *PROBE[1:]) == "A"
    assert quoted_reply("**two plus two is five**", *PROBE[1:]) == "B"
    assert quoted_reply("Two plus two is four, not five.", *PROBE[1:]) is None
    assert quoted_reply("same", "same", "same") is None
    question = ("Which reply?", "Reset it in Settings.", "No idea.")
    assert read_verdict("No idea.", question) == "B" and read_verdict("Response A", question) == "A"
    assert read_verdict("I cannot say", question) is None
