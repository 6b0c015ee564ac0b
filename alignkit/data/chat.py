"""Conversational preference rows, as trl defines them: ``prompt``, ``chosen`` and ``rejected`` are lists of
``{"role", "content"}`` messages (or there is no ``prompt`` and the messages ``chosen`` and ``rejected`` start
with are the prompt). They are rendered with the policy tokenizer's chat template into the (prompt text,
completion text) pairs alignkit trains on, so an instruct model sees its own turn markers:

- prompt: the template applied to the prompt messages with ``add_generation_prompt=True`` (it ends with the
  assistant's turn header, e.g. ``<|im_start|>assistant\\n``);
- completion: the template applied to prompt + completion messages, with that rendered prompt cut off the
  front. It keeps the end-of-turn text the template writes (e.g. ``<|im_end|>\\n``), so no EOS is appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from alignkit.data.checks import kind_of
from alignkit.errors import DataError

COLUMNS = ("prompt", "chosen", "rejected")
MESSAGE_SHAPE = '{"role": ..., "content": ...}'
ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates know; any other is refused


@dataclass
class Conversation:
    """One checked conversational pair: the prompt's messages, then each completion's (starting with the
    assistant's reply). ``where`` names the row for errors raised while rendering it."""

    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]
    where: str


def is_conversational(row: Any) -> bool:
    """Whether a row is in trl's conversational format: one of its prompt/chosen/rejected values is a list
    (of messages). Text values, as in every .csv file, are the plain format."""
    return isinstance(row, dict) and any(isinstance(row.get(column), list) for column in COLUMNS)


def conversational_rows(rows: list[dict], origin: str) -> bool:
    """True when every row is conversational, False when none is; rows of both kinds are an error naming the
    first row that differs from row 0 (one file is one format, so a typo cannot hide half the data)."""
    kinds = [is_conversational(row) for row in rows]
    if not any(kinds) or all(kinds):
        return bool(kinds) and kinds[0]
    odd = kinds.index(not kinds[0])
    chat_row = 0 if kinds[0] else odd
    column = next(c for c in COLUMNS if isinstance(rows[chat_row].get(c), list))
    first, then = ("lists of messages", "plain text") if kinds[0] else ("plain text", "lists of messages")
    raise DataError(f"{origin}: row {odd}: column {column!r} holds {then} but row 0 holds {first}; every row "
                    "must "
                    f"be one kind (all conversational, as trl defines it, or all plain text)")


def read_conversations(rows: list[dict], origin: str) -> list[Conversation]:
    """Check every conversational row (message shapes, roles, the prompt) before anything is rendered."""
    return [read_conversation(row, f"{origin}: row {i}") for i, row in enumerate(rows)]


def read_conversation(row: dict, where: str) -> Conversation:
    """One row's messages. A ``prompt`` list is the prompt; without one (or with a text ``prompt`` beside full
    conversations, as trl reads it) the leading messages ``chosen`` and ``rejected`` share are the prompt."""
    chosen, rejected = _messages(row, "chosen", where), _messages(row, "rejected", where)
    if isinstance(row.get("prompt"), list):
        prompt, prompt_name = _messages(row, "prompt", where), "column 'prompt'"
    else:
        prompt, chosen, rejected = split_shared_prompt(chosen, rejected, where)
        prompt_name = "the leading messages shared by 'chosen' and 'rejected' (the prompt)"
    if prompt[-1]["role"] == "assistant":
        raise DataError(f"{where}: {prompt_name} ends with an assistant message; a prompt ends with the "
                        "message "
                        f"the completion answers (e.g. the user's)")
    for column, completion in (("chosen", chosen), ("rejected", rejected)):
        if completion[0]["role"] != "assistant":
            raise DataError(f"{where}: column {column!r}: the completion must start with an assistant "
                            "message, "
                            f"got role {completion[0]['role']!r}")
    return Conversation(prompt, chosen, rejected, where)


def split_shared_prompt(chosen: list[dict], rejected: list[dict], where: str):
    """trl's implicit prompt: the longest run of leading messages both conversations share, always leaving
    each its last message (identical conversations then make an identical pair, which is dropped like
    any other)."""
    limit = min(len(chosen), len(rejected)) - 1
    shared = 0
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    if not shared:
        raise DataError(f"{where}: columns 'chosen' and 'rejected' share no leading message, so there is no "
                        "prompt; "
                        "add a 'prompt' column of messages, or start both conversations with the prompt's "
                        "messages")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _messages(row: dict, column: str, where: str) -> list[dict]:
    """The checked messages of one column: a non-empty list of mappings with text ``role`` and ``content``."""
    if column not in row:
        raise DataError(f"{where}: missing column {column!r} (columns: {', '.join(map(str, row))}; "
                        f"map yours with preferences.columns)")
    value = row[column]
    if not isinstance(value, list):
        raise DataError(f"{where}: column {column!r} must be a list of messages like the row's other "
                        "columns, "
                        f"got {kind_of(value)}")
    if not value:
        raise DataError(f"{where}: column {column!r} is an empty list of messages")
    for n, message in enumerate(value):
        _check_message(message, f"{where}: column {column!r}: message {n}")
    return [dict(message) for message in value]


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise DataError(f"{where}: expected a mapping {MESSAGE_SHAPE}, got {kind_of(message)}")
    for key in ("role", "content"):
        if key not in message:
            raise DataError(f"{where}: no {key!r} (a message is {MESSAGE_SHAPE})")
        if not isinstance(message[key], str):
            raise DataError(f"{where}: {key!r} must be text, got {kind_of(message[key])}")
    if message["role"] not in ROLES:
        raise DataError(f"{where}: unknown role {message['role'][:60]!r} (roles: {', '.join(ROLES)})")



# --------------------------------------------------------------------------------------------------
# rendering


def require_chat_template(tokenizer, origin: str) -> None:
    """Conversational rows need a chat template to become text; say so once, before any row is tried."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or "the model"
        raise DataError(f"{origin}: the rows are conversational (lists of messages) but {name}'s tokenizer "
                        "has no "
                        "chat_template; use a model whose tokenizer has a chat_template (an instruct "
                        "model), "
                        f"or give prompt, chosen and rejected as plain text")


def render(conversation: Conversation, tokenizer) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) text: the prompt with the assistant's generation header, each completion as
    the template renders it after that prompt (its end-of-turn text included)."""
    prompt = _apply(tokenizer, conversation.prompt, conversation.where, add_generation_prompt=True)
    return (prompt, _completion(tokenizer, conversation, "chosen", prompt),
            _completion(tokenizer, conversation, "rejected", prompt))


def _completion(tokenizer, conversation: Conversation, column: str, prompt: str) -> str:
    """The rendered conversation after the rendered prompt, which must be exactly its prefix: a template that
    renders the prompt differently on its own cannot be split into prompt and completion."""
    full = _apply(tokenizer, conversation.prompt + getattr(conversation, column), conversation.where,
                  add_generation_prompt=False)
    if not full.startswith(prompt):
        at = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
        raise DataError(f"{conversation.where}: column {column!r}: the chat template's rendering of the "
                        "conversation "
                        f"does not start with its rendering of the prompt (they differ at character {at}: "
                        f"{prompt[at:at + 24]!r} vs {full[at:at + 24]!r}), so the completion cannot be cut "
                        "from it")
    return full[len(prompt):]


def _apply(tokenizer, messages: list[dict], where: str, *, add_generation_prompt: bool) -> str:
    """The template applied as text; a template that refuses the messages (roles out of order, an unknown
    role) is the row's problem, reported as one line naming it."""
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except (TemplateError, ValueError, TypeError, KeyError, IndexError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(
            f"{where}: the chat template failed on these messages: {type(exc).__name__}: {detail}"
        ) from None
    if not isinstance(text, str):
        raise DataError(f"{where}: the chat template gave {type(text).__name__}, not text")
    return text


def render_rows(rows: list[dict], origin: str, tokenizer: Optional[Callable[[], Any]]) -> list[dict]:
    """Conversational rows as plain-text rows (other columns kept), rendered with ``tokenizer()``'s chat
    template.

    Without a tokenizer (a recipe checked before its model is on disk) the rows are still checked, and each
    column becomes a JSON stand-in: exact for comparing and counting pairs, never meant to train on."""
    conversations = read_conversations(rows, origin)
    if tokenizer is None:
        texts = [(_stand_in(c.prompt), _stand_in(c.chosen), _stand_in(c.rejected)) for c in conversations]
    else:
        loaded = tokenizer()
        require_chat_template(loaded, origin)
        texts = [render(c, loaded) for c in conversations]
    return [{**row, "prompt": p, "chosen": c, "rejected": r} for row, (p, c, r) in zip(rows, texts)]


def plain_text(tokenizer) -> Callable[[str], str]:
    """A function that recovers the text of a rendered single-turn prompt or reply (what a judge with a chat
    template of its own should read, not this tokenizer's turn markers): the markup the template puts around
    one message, found by rendering a marker, is cut off, and any special token left is removed."""
    marker, reply = "\x1e", "\x1d"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                           add_generation_prompt=True)
    full = tokenizer.apply_chat_template([{"role": "user", "content": marker}, {"role": "assistant",
                                                                                "content": reply}],
                                         tokenize=False)
    prompt_before, prompt_after = prompt.split(marker, 1)
    reply_before, reply_after = full[len(prompt):].split(reply, 1) if full.startswith(prompt) else ("", "")
    specials = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)

    def strip(text: str) -> str:
        if prompt_before and text.startswith(prompt_before) and text.endswith(prompt_after):
            text = text[len(prompt_before):len(text) - len(prompt_after)]
        elif reply_after and text.endswith(reply_after) and text.startswith(reply_before):
            text = text[len(reply_before):len(text) - len(reply_after)]
        for token in specials:
            text = text.replace(token, "")
        return text.strip()

    return strip


def _stand_in(messages: list[dict]) -> str:
    return json.dumps(messages, ensure_ascii=False, sort_keys=True)


def render_prompt(messages: Any, tokenizer, where: str) -> str:
    """A prompt on its own (an evaluation prompt), rendered exactly as a pair's prompt is: the template
    applied
    with the assistant's generation header. Without ``tokenizer`` the checked messages' stand-in."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: expected a non-empty list of messages, got {kind_of(messages)}")
    for n, message in enumerate(messages):
        _check_message(message, f"{where}: message {n}")
    if tokenizer is None:
        return _stand_in(messages)
    require_chat_template(tokenizer, where)
    return _apply(tokenizer, [dict(m) for m in messages], where, add_generation_prompt=True)
