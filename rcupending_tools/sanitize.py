"""Strings from a kernel, a process or a file, made safe to show: a terminal, an HTML page, a
plot or a Prometheus label gets every control character escaped (`\\x1b`, `\\n`), so a comm
or a recording cannot move the cursor, clear the screen, set a terminal title or break a line.
Also escaped: the Unicode line separators, the bidirectional overrides (text that reads
differently from what it is) and lone surrogates (JSON's "\\ud800": no encoding can write it)."""

from __future__ import annotations

import re
from typing import Any

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def text(s: Any) -> str:
    """`s` as a string with every control character escaped."""
    s = s if isinstance(s, str) else str(s)
    return _UNSAFE.sub(_escape, s) if _UNSAFE.search(s) else s


def deep(obj: Any) -> Any:
    """A copy of a JSON value with every string (dict keys too) escaped by `text`; values
    without anything to escape are returned as they are (no copy)."""
    if isinstance(obj, str):
        return text(obj)
    if isinstance(obj, dict):
        out = {text(k): deep(v) for k, v in obj.items()}
        return obj if all(a is b for a, b in zip(out.values(), obj.values(), strict=True)) \
            and all(text(k) == k for k in obj) else out
    if isinstance(obj, list):
        items = [deep(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else items
    return obj
