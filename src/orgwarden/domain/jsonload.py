"""Parsing JSON on the data plane: orjson's speed with exactly the standard library's answers.

Every proxied request body is parsed once (model, stream, residency, limits) and every answer once
(metering); ``json.loads`` costs several times what orjson does on them. orjson refuses a few
things ``json.loads`` accepts (``NaN`` and ``Infinity``, lone surrogate escapes, UTF-16/32 input),
and reads an integer beyond 64 bits as a float where ``json.loads`` keeps it an ``int``; those fall
back to the standard library (any run of 19 digits, inside a string or not, sends the input there:
every digit is mapped to ``0`` and everything else to a space, and the result searched for nineteen
``0`` in a row, both in C, several times cheaper than a regular expression). What parses, and what
it parses to, is the same as with ``json.loads``.

One exception: JSON nested deeper than ``MAX_DEPTH`` levels raises ``NestedTooDeeply`` (a
``ValueError``). orjson refuses it, and the standard library would recurse until ``RecursionError``
(the interpreter's limit is about as deep), so callers answer it as a 400 of its own.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# 2**63 has 19 digits: anything shorter fits orjson's integers.
_DIGITS_AS_ZEROS = bytes(ord("0") if chr(c) in "0123456789" else ord(" ") for c in range(256))
_NINETEEN_DIGITS = b"0" * 19
MAX_DEPTH = 1024  # orjson's limit; the standard library's is the interpreter's recursion limit (~1,000)
TOO_DEEP = f"request body is nested too deeply (more than {MAX_DEPTH} levels)"


class NestedTooDeeply(ValueError):
    """JSON nested more than ``MAX_DEPTH`` levels deep (or too deep for the standard library)."""

    def __init__(self) -> None:
        super().__init__(TOO_DEEP)


def loads(data: bytes) -> Any:
    """``json.loads(data)``, faster; raises ``ValueError`` (as it does) on invalid JSON, and
    ``NestedTooDeeply`` on JSON nested too deeply to parse."""
    try:
        if _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZEROS):
            return json.loads(data)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if str(exc).startswith("depth limit exceeded"):
                raise NestedTooDeeply() from None
            return json.loads(data)
    except RecursionError:
        raise NestedTooDeeply() from None
