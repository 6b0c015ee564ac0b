"""Judges for tasks without a gold reward (alignkit.eval.judges, alignkit.rewards.llm_judge): answers parsed
robustly, both orders asked and a flipped verdict turned into a tie, verdicts cached on disk, the endpoint
judge against a local HTTP server (retrying 429 and 5xx), and every judge's agreement with held-out pairs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from tiny import tiny_gpt2, tiny_tokenizer

from alignkit.config import ConfigError
from alignkit.data.preferences import PreferenceData
from alignkit.errors import AlignkitError
from alignkit.eval.evaluator import score_texts
from alignkit.eval.judges import PairwiseJudge, judge_agreement, parse_verdict
from alignkit.recipe import load_recipe
from alignkit.rewards.llm_judge import (
    EndpointJudge,
    EndpointJudgeOptions,
    LLMJudge,
    LLMJudgeOptions,
    retry_after,
)

PROMPTS = ["the movie", "the film", "this story", "a cast"]
GOOD = ["was great", "was superb", "was brilliant", "was wonderful"]
BAD = ["was awful", "was boring", "was dull", "was dreadful"]


@pytest.mark.parametrize("answer, verdict", [
    ("A", "A"), ("b", "B"), ("Response B", "B"), ("**A**", "A"), ("response a.", "A"), ("[[B]]", "B"),
    ("The better response is A.", "A"), ("B) because it is kinder", "B"), ("Answer: (a)", "A"),
    ("I prefer B", "B"), ("`A`", "A"), ("Tie", "tie"), ("both are equal", "tie"),
    ("Response A is long but Response B is better", None), ("", None), ("I cannot tell", None),
    ("assistant", None), ("a movie review", None),
])
def test_answers_are_parsed_robustly(answer, verdict):
    assert parse_verdict(answer) == verdict


def tiny_judge_folder(tmp_path):
    words = ("which response to the prompt is better ? answer with a single letter , a or b . prompt : "
             "response a b movie film story cast was great superb brilliant wonderful awful boring dull "
             "dreadful")
    tokenizer = tiny_tokenizer([words])
    folder = tmp_path / "judge_model"
    tiny_gpt2(tokenizer, seed=3, n_positions=256).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def recording(judge: PairwiseJudge, answer):
    """Replace the judge's model by ``answer(question_text) -> str``, recording every question asked."""
    asked = []

    def generate(texts):
        asked.extend(texts)
        return [answer(t) for t in texts]

    judge.generate = generate
    return asked


def first_shown_is_good(text: str) -> str:
    """A judge without position bias: answers whichever of A and B is the good completion."""
    a = text.split("Response A: ")[1].split("\n")[0]
    return "A" if a in GOOD else "**Response B**"


def test_llm_judge_asks_both_orders_and_a_flipped_verdict_is_a_tie(tmp_path):
    judge = LLMJudge(LLMJudgeOptions(model=str(tiny_judge_folder(tmp_path))))
    asked = recording(judge, lambda text: "A")  # pure position bias: always the first response
    prefs = judge.compare(PROMPTS, GOOD, BAD)
    assert prefs.tolist() == [0.5] * 4
    assert judge.stats["order_disagreements"] == 4 and judge.stats["unparseable"] == 0
    assert len(asked) == 8
    for prompt, good, bad in zip(PROMPTS, GOOD, BAD):  # each question in both orders
        assert judge.render(prompt, good, bad) in asked and judge.render(prompt, bad, good) in asked

    judge = LLMJudge(LLMJudgeOptions(model=str(tiny_judge_folder(tmp_path))))
    recording(judge, first_shown_is_good)
    assert judge.compare(PROMPTS, GOOD, BAD).tolist() == [1.0] * 4
    assert judge.compare(PROMPTS, BAD, GOOD).tolist() == [0.0] * 4
    recording(judge, lambda text: "no idea")
    judge.max_unparseable = 1.0  # tolerated here (the default fails the judge: test_too_many_unparseable_...)
    assert judge.compare(["x"], ["y"], ["z"]).tolist() == [0.5] and judge.stats["unparseable"] == 2


def test_llm_judge_generates_with_a_tiny_causal_lm(tmp_path):
    judge = LLMJudge(LLMJudgeOptions(model=str(tiny_judge_folder(tmp_path)), max_new_tokens=3, batch_size=3,
                                     max_unparseable=1.0))
    prefs = judge.compare(PROMPTS, GOOD, BAD)  # a random model: whatever it says, each verdict is 1, 0.5 or 0
    assert prefs.shape == (4,) and set(prefs.tolist()) <= {0.0, 0.5, 1.0}
    assert judge.stats["questions"] == judge.stats["asked"] == 8


def test_verdicts_are_cached_on_disk_and_hit_on_a_second_call(tmp_path):
    folder = tiny_judge_folder(tmp_path)
    judge = LLMJudge(LLMJudgeOptions(model=str(folder)), cache_dir=tmp_path / "cache")
    asked = recording(judge, first_shown_is_good)
    first = judge.compare(PROMPTS, GOOD, BAD)
    assert len(asked) == 8
    again = LLMJudge(LLMJudgeOptions(model=str(folder)), cache_dir=tmp_path / "cache")  # a new process, say
    asked_again = recording(again, lambda text: pytest.fail("asked a cached question"))
    assert again.compare(PROMPTS, GOOD, BAD).tolist() == first.tolist()
    assert asked_again == [] and again.cache.hits == 8 and again.stats["cached"] == 8
    files = list((tmp_path / "cache" / "judge_verdicts").glob("*.jsonl"))
    assert len(files) == 1 and all(json.loads(line)["answer"] for line in files[0].read_text().splitlines())
    other = LLMJudge(LLMJudgeOptions(model=str(folder), template="{prompt} | A: {a} | B: {b} | better:"),
                     cache_dir=tmp_path / "cache")  # another question: another judge, its own verdicts
    asked_other = recording(other, lambda text: "A")
    assert other.compare(PROMPTS[:1], GOOD[:1], BAD[:1]).tolist() == [0.5] and len(asked_other) == 2


class FakeChatServer:
    """An OpenAI-compatible /chat/completions on localhost answering like first_shown_is_good, after
    answering the first requests with the given error statuses (429 with Retry-After, 503, ...)."""

    def __init__(self, failures=()):
        self.failures, self.requests, self.auth = list(failures), [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                server.auth.append(self.headers.get("Authorization"))
                if server.failures:
                    status, headers = server.failures.pop(0)
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(b'{"error": "slow down"}')
                    return
                answer = first_shown_is_good(body["messages"][0]["content"])
                data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                            "content": answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def endpoint(url, tmp_path=None, **options):
    options = {"requests_per_second": 0, **options}
    judge = EndpointJudge(EndpointJudgeOptions(base_url=url, model="judge-model",
                                               api_key_env="TEST_JUDGE_KEY",
                                               **options),
                          cache_dir=tmp_path / "cache" if tmp_path else None)
    judge.sleeps = []
    judge.sleep = judge.sleeps.append  # no real waiting in tests
    return judge


def test_endpoint_judge_retries_429_and_5xx_honouring_retry_after(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    failures = [(429, {"Retry-After": "3"}), (503, {}), (429, {})]
    with FakeChatServer(failures) as server:
        judge = endpoint(server.url, tmp_path, backoff_s=0.5)
        prefs = judge.compare(PROMPTS[:2], GOOD[:2], BAD[:2])
        assert prefs.tolist() == [1.0, 1.0]
        # 4 questions, 3 retried
        assert len(server.requests) == 4 + 3 and judge.requests == 7 and judge.retries == 3
        assert judge.sleeps == [3.0, 1.0, 2.0]  # Retry-After as given; then backoff 0.5 doubled per retry
        path, body = server.requests[0]
        assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0
        assert set(server.auth) == {"Bearer sk-test"}
        server.requests.clear()
        again = endpoint(server.url, tmp_path)  # cached: asked again, nothing is requested
        assert again.compare(PROMPTS[:2], GOOD[:2], BAD[:2]).tolist() == [1.0, 1.0] and server.requests == []


def test_endpoint_judge_gives_up_in_one_line(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    with FakeChatServer([(500, {})] * 3) as server:
        judge = endpoint(server.url, max_retries=2)
        with pytest.raises(AlignkitError, match=r"answered HTTP 500 \(after 3 request\(s\)\)"):
            judge.compare(["p"], ["a"], ["b"])
    with FakeChatServer([(401, {})]) as server:  # not retried
        with pytest.raises(AlignkitError, match="HTTP 401"):
            endpoint(server.url).compare(["p"], ["a"], ["b"])
        assert len(server.requests) == 1
    monkeypatch.delenv("TEST_JUDGE_KEY")
    with pytest.raises(AlignkitError, match="TEST_JUDGE_KEY holding the API key is not set"):
        endpoint("http://127.0.0.1:9/v1")


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/v1", "https://[fe80::1]:8443/v1",
                                 "http://[::ffff:169.254.169.254]/v1"])
def test_a_link_local_endpoint_is_refused_at_load(url):
    with pytest.raises(ConfigError, match=r"eval.judge_options.base_url: .* is a link-local address"):
        load_recipe("dpo_imdb", ["eval.judge=endpoint-judge",
                                 f"eval.judge_options={{base_url: '{url}', model: m, api_key_env: ''}}"])


def test_a_host_that_resolves_link_local_is_refused_before_any_request(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = endpoint("http://2852039166/v1")  # 169.254.169.254 as one number: passes the literal check
    with pytest.raises(AlignkitError, match=r"169\.254\.169\.254 is a link-local address"):
        judge.compare(["p"], ["a"], ["b"])
    assert judge.requests == 0


def test_endpoint_judge_keeps_its_rate_limit(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    with FakeChatServer() as server:
        judge = endpoint(server.url, requests_per_second=2)
        # time stands still: every request after the first waits the full interval
        judge.clock = lambda: 100.0
        judge.compare(["p"], ["was great"], ["was awful"])
    assert judge.sleeps == [0.5]


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("2") == 2 and retry_after("0.25") == 0.25 and retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert retry_after("soon") is None


HELD_OUT = PreferenceData(prompts=PROMPTS * 2, chosen=GOOD * 2, rejected=BAD * 2, group=list(range(8)))


def test_agreement_of_a_score_judge_is_known_by_construction():
    def knows(prompts, completions):  # scores the good completions higher: agrees on every pair
        return np.array([1.0 if c in GOOD else 0.0 for c in completions])

    def half(prompts, completions):  # right on the first four pairs, wrong on the last four
        return np.array([(1.0 if c in GOOD else 0.0) * (1 if i < 4 else -1) for i,
                         c in enumerate(completions)])

    assert judge_agreement(knows, HELD_OUT, False, score_texts)["agreement"] == 1.0
    assert judge_agreement(half, HELD_OUT, False, score_texts)["agreement"] == 0.5
    flat = judge_agreement(lambda p, c: np.zeros(len(c)), HELD_OUT, False, score_texts)
    assert flat == {"agreement": 0.5, "n_pairs": 8, "of_heldout_pairs": 8, "ties": 8}
    assert judge_agreement(knows, HELD_OUT, False, score_texts, limit=3)["n_pairs"] == 3


def test_agreement_of_a_pairwise_judge_counts_flips_and_unparseable_answers_as_ties(tmp_path):
    judge = LLMJudge(LLMJudgeOptions(model=str(tiny_judge_folder(tmp_path))))
    recording(judge, first_shown_is_good)
    assert judge_agreement(judge, HELD_OUT, False, score_texts)["agreement"] == 1.0
    recording(judge, lambda text: "A")
    found = judge_agreement(judge, HELD_OUT, False, score_texts)
    assert found["agreement"] == 0.5 and found["ties"] == 8 and found["order_disagreements"] == 8
