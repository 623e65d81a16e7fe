"""The one token estimate used for chunk budgets.

A chunk's budget is checked against every line of every file, so it cannot run a real tokenizer.
The estimate: each run of word characters (ASCII letters, digits, ``_`` and any non-ASCII
character) is one token, and so is each other visible character. That is close to what a code BPE
tokenizer does with ordinary code (common identifiers are one token, operators and brackets one
each), deterministic, and fast: per-line counts come from one vectorised pass over the bytes.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = r"A-Za-z0-9_\u0080-\U0010ffff"
TOKEN_RE = re.compile(rf"[{_WORD}]+|[^ \t\n\r\x0b\x0c{_WORD}]")

# Byte classes: 0 whitespace, 1 word (UTF-8 bytes of non-ASCII characters included), 2 other.
_CLASS = np.full(256, 2, dtype=np.uint8)
_CLASS[[ord(c) for c in " \t\n\r\x0b\x0c"]] = 0
_CLASS[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"]] = 1
_CLASS[0x80:] = 1


def count_tokens(text: str) -> int:
    """Estimated number of model tokens in ``text``."""
    return len(TOKEN_RE.findall(text))


def line_token_counts(text: str) -> list[int]:
    """``count_tokens`` of each "\\n"-separated line of ``text``, computed for all lines at once."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    cls = _CLASS[data]
    word = cls == 1
    tokens = cls == 2
    tokens[0:1] |= word[0:1]
    tokens[1:] |= word[1:] & ~word[:-1]  # a word starts where the previous byte is not a word byte
    cumulative = np.concatenate(([0], np.cumsum(tokens, dtype=np.int64)))
    bounds = np.concatenate(([0], np.flatnonzero(data == 10) + 1, [len(data)]))
    return (cumulative[bounds[1:]] - cumulative[bounds[:-1]]).tolist()


def token_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each estimated token, for cutting an over-long line."""
    return [m.span() for m in TOKEN_RE.finditer(text)]
