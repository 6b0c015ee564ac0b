"""Pairwise LLM judges, as the DPO paper judged with GPT-4: a local transformers causal LM (``llm-judge``)
or any OpenAI-compatible chat endpoint (``endpoint-judge``), each asked which of two responses to a prompt
is better, in both orders (:class:`~alignkit.eval.judges.PairwiseJudge`: a verdict that flips with the
order is a tie). Their settings are ``eval.judge_options``; verdicts are cached in the alignkit cache."""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.config import build, fingerprint, option
from alignkit.errors import AlignkitError, warn
from alignkit.eval.judges import DEFAULT_TEMPLATE, MAX_UNPARSEABLE, TEMPLATE_FIELDS, JudgeError, PairwiseJudge
from alignkit.models.loading import resolve_model_path
from alignkit.registry import register_reward
from alignkit.stages.workspace import Workspace


def unparseable_option():
    """``max_unparseable``: shared by the judges' options; not part of a judge's identity (its verdicts)."""
    return option(MAX_UNPARSEABLE, "share of one evaluation's answers (per temperature, and the agreement "
                                   "pairs) that may be unparseable; above it the judge fails and nothing is "
                                   "recorded", ge=0, le=1, identity=False)


def _template_problem(template: str):
    missing = [f for f in TEMPLATE_FIELDS if f not in template]
    if missing:
        yield (
            "template",
            f"the judge's question must contain {', '.join(TEMPLATE_FIELDS)} (missing {', '.join(missing)})",
        )


@dataclass
class LLMJudgeOptions:
    """Settings of the local LLM judge (``eval.judge_options``)."""

    model: str = option(help="folder, Hub id or builtin:ALIAS of a transformers causal LM asked which "
                             "response is better")
    template: str = option(DEFAULT_TEMPLATE, "the question asked; {prompt}, {a} and {b} are filled in")
    chat: bool = option(True, "wrap the question in the tokenizer's chat template, when it has one")
    max_new_tokens: int = option(8, "tokens the judge may answer with (greedy)", ge=1)
    batch_size: int = option(8, "questions per generate call", ge=1)
    max_unparseable: float = unparseable_option()

    def check(self):
        yield from _template_problem(self.template)


def _folder_signature(path: str) -> list:
    """What identifies a local model folder's weights (names, sizes, times), so a model replaced in place
    does not reuse the old one's verdicts; nothing for a Hub id."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]


class LLMJudge(PairwiseJudge):
    """A local causal LM answering the question greedily; its answer is parsed for A or B."""

    def __init__(self, options: LLMJudgeOptions, device: torch.device | str = "cpu",
                 cache_dir: Path | None = None):
        identity = fingerprint("llm-judge", options, _folder_signature(options.model))
        super().__init__("llm-judge", identity, options.template, cache_dir)
        self.options, self.device = options, torch.device(device)
        self.max_unparseable = options.max_unparseable
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.options.model)
                model = AutoModelForCausalLM.from_pretrained(self.options.model).to(self.device).eval()
            except (OSError, ValueError, KeyError) as exc:  # no such folder or Hub id, offline, not an LM
                reason = " ".join(str(exc).split())[:200]
                raise JudgeError(f"llm-judge: cannot load the judge model {self.options.model!r} ({reason}); "
                                 f"set eval.judge_options.model to a model folder, Hub id or builtin:ALIAS") \
                    from None
            tokenizer.padding_side = "left"  # generation continues every row from its last token
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = tokenizer, model
        return self._loaded

    def ask(self, questions: list[tuple[str, str, str]]) -> list[str]:
        return self.generate([self.render(*q) for q in questions])

    def _wrapped(self, texts: list[str]) -> list[str]:
        tokenizer, _ = self._load()
        if self.options.chat and getattr(tokenizer, "chat_template", None):
            return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                  add_generation_prompt=True) for t in texts]
        return texts

    def _check_length(self, tokens: int) -> None:
        """One line when ``tokens`` of question and the answer overrun the judge model's context."""
        config = self._load()[1].config
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if context and tokens + self.options.max_new_tokens > context:
            raise JudgeError(f"llm-judge: the longest question is {tokens} tokens, and with its answer "
                             f"({self.options.max_new_tokens}) longer than the judge model's context "
                             f"({context} tokens; {self.options.model}); choose a judge model with a longer "
                             f"context, or shorten eval.max_new_tokens or eval.judge_options.template")

    def fits(self, questions: list[tuple[str, str, str]]) -> None:
        tokenizer, _ = self._load()
        texts = self._wrapped([self.render(*q) for q in questions])
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        self._check_length(max(lengths, default=0))

    @torch.no_grad()
    def generate(self, texts: list[str]) -> list[str]:
        tokenizer, model = self._load()
        texts = self._wrapped(texts)
        out = []
        for start in range(0, len(texts), self.options.batch_size):
            batch = tokenizer(texts[start:start + self.options.batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.device)
            self._check_length(batch["input_ids"].shape[1])  # a question longer than checked at load
            generated = model.generate(**batch, max_new_tokens=self.options.max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
        return out


@dataclass
class EndpointJudgeOptions:
    """Settings of the OpenAI-compatible endpoint judge (``eval.judge_options``)."""

    base_url: str = option(help="API root; the judge POSTs to {base_url}/chat/completions")
    model: str = option(help="the model the endpoint serves, e.g. gpt-4o")
    api_key_env: str = option("OPENAI_API_KEY",
                              "environment variable holding the API key (the key itself never "
                                                "goes in a recipe); empty: send no key")
    template: str = option(DEFAULT_TEMPLATE, "the question asked; {prompt}, {a} and {b} are filled in")
    max_tokens: int = option(16, "tokens the judge may answer with (temperature 0)", ge=1)
    requests_per_second: float = option(2.0, "rate limit on requests (0: none)", ge=0)
    max_retries: int = option(6, "retries of a request answered 429 or 5xx, or that failed to connect", ge=0)
    backoff_s: float = option(1.0, "wait before the first retry, doubled at each (a Retry-After header "
                                   "decides instead, when the endpoint sends one)", ge=0)
    max_backoff_s: float = option(60.0, "longest wait between retries, a Retry-After header's too (each "
                                        "wait is shown)", ge=0)
    timeout_s: float = option(60.0, "seconds to wait for one answer", gt=0)
    max_unparseable: float = unparseable_option()

    def check(self):
        yield from _template_problem(self.template)
        if not self.base_url.startswith(("http://", "https://")):
            yield "base_url", f"expected an http:// or https:// URL, got {self.base_url!r}"
        elif link_local_host(self.base_url):
            yield "base_url", f"{link_local_host(self.base_url)} is {LINK_LOCAL}"
        if self.api_key_env and not os.environ.get(self.api_key_env):
            yield "api_key_env", f"the environment variable {self.api_key_env} holding the API key is not set"


MAX_BODY_BYTES = 1 << 20  # of an endpoint's answer read; a longer one is no answer

LINK_LOCAL = ("a link-local address (169.254.0.0/16, fe80::/10: where clouds serve instance metadata and "
              "credentials); the endpoint judge never sends requests there")


def link_local_host(url: str, resolve: bool = False) -> str | None:
    """The address of ``url``'s host when it is link-local, else None; ``resolve``: its name looked up too (a
    host name, or a numeric form such as 2852039166, may lead there)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    addresses = [host]
    if resolve:
        try:
            addresses += [str(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            pass  # unresolvable: the request fails on its own
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if (getattr(address, "ipv4_mapped", None) or address).is_link_local:
            return text
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date); None when absent
    or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class EndpointJudge(PairwiseJudge):
    """Asks a chat-completions endpoint, one request per question, rate-limited, retrying 429 and 5xx
    answers, refused, reset, garbled or timed-out requests with exponential backoff (or as long as
    Retry-After says), never waiting more than ``max_backoff_s`` at once, and saying so each time."""

    def __init__(self, options: EndpointJudgeOptions, cache_dir: Path | None = None):
        identity = fingerprint("endpoint-judge", options.base_url, options.model, options.template,
                               options.max_tokens)
        super().__init__("endpoint-judge", identity, options.template, cache_dir)
        self.options, self.max_unparseable = options, options.max_unparseable
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(options.api_key_env, "") if options.api_key_env else ""
        if options.api_key_env and not key:
            raise AlignkitError(f"endpoint-judge: the environment variable {options.api_key_env} holding the "
                                "API "
                                f"key is not set (eval.judge_options.api_key_env)")
        self.headers = {"Content-Type": "application/json",
                        **({"Authorization": f"Bearer {key}"} if key else {})}
        self.sleep, self.clock = time.sleep, time.monotonic  # replaceable (tests)
        self.requests, self.retries, self._last = 0, 0, None

    def ask(self, questions: list[tuple[str, str, str]]) -> list[str | None]:
        return [self.answer(self.render(*q)) for q in questions]

    def answer(self, question: str) -> str | None:
        """The endpoint's answer text; None (unparseable, never cached) when its answer holds none."""
        body = {"model": self.options.model, "messages": [{"role": "user", "content": question}],
                "temperature": 0, "max_tokens": self.options.max_tokens}
        payload = self._post(json.dumps(body).encode())
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str) or not content.strip():
            self.problem = self.problem if payload is None else (
                f"its answer, a JSON {type(payload).__name__}, holds no choices[0].message.content text")
            return None
        return content

    def _throttle(self) -> None:
        if self.options.requests_per_second > 0 and self._last is not None:
            wait = self._last + 1 / self.options.requests_per_second - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last = self.clock()

    def _read(self, request: urllib.request.Request):
        """One request's JSON answer; None for one over ``MAX_BODY_BYTES`` (not read further)."""
        with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
            body = response.read(MAX_BODY_BYTES + 1)
            if len(body) <= MAX_BODY_BYTES and getattr(response, "length", None):  # shorter than it said
                raise http.client.IncompleteRead(body, response.length)
        if len(body) > MAX_BODY_BYTES:
            self.problem = f"its answer is over {MAX_BODY_BYTES >> 20} MB"
            return None
        return json.loads(body.decode() or "{}")

    def _post(self, data: bytes):
        found = link_local_host(self.url, resolve=True) if self.requests == 0 else None  # before the first
        if found:
            raise AlignkitError(f"endpoint-judge: {self.url}: {found} is {LINK_LOCAL}")
        backoff, retries = self.options.backoff_s, self.options.max_retries
        for attempt in range(retries + 1):
            self._throttle()
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
            try:
                return self._read(request)
            except urllib.error.HTTPError as err:
                if not (err.code == 429 or 500 <= err.code < 600) or attempt == retries:
                    raise AlignkitError(f"endpoint-judge: {self.url} answered HTTP {err.code} "
                                        f"(after {attempt + 1} request(s)): {_detail(err)}") from None
                reason, asked = f"answered HTTP {err.code}", retry_after(err.headers.get("Retry-After"))
            except (OSError, http.client.HTTPException, ValueError) as err:  # refused, reset, timeout...
                reason, asked = self._reason(err), None
                if attempt == retries:
                    raise AlignkitError(f"endpoint-judge: {self.url} failed after {attempt + 1} request(s): "
                                        f"{reason}") from None
            wait = min(backoff if asked is None else asked, self.options.max_backoff_s)
            capped = f" (Retry-After {asked:g} s, capped by max_backoff_s)" if asked and asked > wait else ""
            warn(f"endpoint-judge: {self.url}: {reason}; retry {attempt + 1} of {retries} in {wait:g} s"
                 f"{capped}")
            self.retries += 1
            self.sleep(wait)
            backoff *= 2
        raise AssertionError("unreachable")

    def _reason(self, err: BaseException) -> str:
        """One line on why a request failed."""
        if isinstance(err, TimeoutError) or "timed out" in str(err):
            return f"no answer within timeout_s ({self.options.timeout_s:g} s)"
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        name, text = type(reason).__name__, str(reason)
        return " ".join((text if text.startswith(name) else f"{name}: {text}").split())[:200]


def _detail(err: urllib.error.HTTPError) -> str:
    """The start of an error answer's body, on one line."""
    try:
        return " ".join(err.read(2000).decode(errors="replace").split())[:200]
    except (OSError, http.client.HTTPException):
        return ""


@register_reward("llm-judge", pairwise=True, judge_options=LLMJudgeOptions)
def llm_judge(workspace: Workspace):
    """Pairwise judge: a local transformers causal LM asked which response is better, both orders."""
    options = build(LLMJudgeOptions, workspace.recipe.eval.judge_options, where="eval.judge_options")
    # builtin: -> folder
    options.model = resolve_model_path(options.model, workspace.cache_dir, workspace.runtime)
    return LLMJudge(options, workspace.device, workspace.cache_dir)


@register_reward("endpoint-judge", pairwise=True, judge_options=EndpointJudgeOptions)
def endpoint_judge(workspace: Workspace):
    """Pairwise judge: an OpenAI-compatible chat endpoint asked which response is better, both orders."""
    options = build(EndpointJudgeOptions, workspace.recipe.eval.judge_options, where="eval.judge_options")
    return EndpointJudge(options, workspace.cache_dir)
