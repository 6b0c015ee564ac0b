"""The user's text, checked before anything renders or tokenises it: no value longer than
``MAX_TEXT_CHARS`` characters, and no special token of the policy's tokenizer inside it. trl and tokenizers
read such a string (``<|im_end|>``, ``<|endoftext|>``) as the real control token, not as text, so a fake
turn or an EOS in mid-sentence would be trained on: it is refused at load, in one line naming the row, the
column and the count."""

from __future__ import annotations

import re
from typing import Any, Iterator

from alignkit.errors import DataError

MAX_TEXT_CHARS = 1_000_000  # far beyond any context alignkit trains at; longer text would only be cut, slowly
TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion")


def special_tokens(tokenizer) -> list[str]:
    """The strings ``tokenizer`` turns into special tokens: its ``all_special_tokens`` and the added tokens
    marked special (none without a tokenizer)."""
    if tokenizer is None:
        return []
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found |= {token.content for token in added.values() if getattr(token, "special", False)}
    return sorted((t for t in found if isinstance(t, str) and t), key=len, reverse=True)


def _texts(value: Any) -> Iterator[str]:
    """The text of a column's value: the string itself, or each message's role and content."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for message in value:
            if isinstance(message, dict):
                yield from (message[k] for k in ("role", "content") if isinstance(message.get(k), str))


def check_texts(rows: list[dict], origin: str, specials: list[str] = ()) -> None:
    """Refuse, in one line, a text value longer than ``MAX_TEXT_CHARS``, or text holding any of ``specials``
    (naming the first row and column, and how many rows hold one)."""
    pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
    first, count = None, 0
    for i, row in enumerate(rows):
        hit = None
        for column in TEXT_COLUMNS:
            for text in _texts(row.get(column)):
                if len(text) > MAX_TEXT_CHARS:
                    raise DataError(f"{origin}: row {i}: column {column!r} holds {len(text):,} characters "
                                    f"(at most {MAX_TEXT_CHARS:,}: model.max_length would cut it to a "
                                    f"fraction anyway); shorten or drop the row")
                found = pattern.search(text) if pattern is not None and hit is None else None
                hit = hit or (found and (column, found.group()))
        if hit:
            count += 1
            first = first or (i, *hit)
    if first:
        row, column, token = first
        raise DataError(f"{origin}: row {row}: column {column!r} holds {token!r}, a special token of the "
                        f"policy's tokenizer ({count} row(s) hold one); it would be read as the real control "
                        f"token, not as text: remove it from the data (preferences.append_eos adds a real "
                        f"EOS after completions)")


def kind_of(value) -> str:
    """A value as an error line shows it: its type and (the start of) its repr, or "nothing"."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:60]
