"""Whether a value fits a type annotation, read from its text as the source writes it
("int | None", "list[dict[str, Any]]"): the one check behind a spec's tier settings, a record's
fields and a model's constructor arguments, which all have their annotations as text (postponed
annotations, or read from source without importing it).

An int is a float; a bool is neither (TOML and JSON keep them apart, and a model given True for
a size would build). Containers are checked one level deep. An annotation this does not read (a
class, a Callable) fits anything: the code that uses the value checks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

PLAIN: dict[str, type] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": type(None),
    "list": list,
    "dict": dict,
    "Any": object,
}  # not tuple: a spec's TOML gives lists, and the constructor takes what it is given


def _top_level(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def readable(hint: str) -> bool:
    """Whether every alternative of `hint` is a plain type this module checks."""
    return all(a.split("[")[0] in PLAIN for a in _top_level(hint, "|")) if hint else False


def _fits_plain(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def why_not(value: Any, hint: str, show: Callable[[Any], str] = repr) -> str:
    """ "" where `value` fits the annotation text `hint` (or `hint` is not readable); else why:
    "expected int | None, got 1.5", or "an item: expected float, got 'x'" for a container's."""
    if not readable(hint):
        return ""
    for alternative in _top_level(hint, "|"):
        base, _, rest = alternative.partition("[")
        if not _fits_plain(value, PLAIN[base]):
            continue
        args = _top_level(rest[:-1], ",") if rest else []
        if base in ("list", "dict") and args:
            items = value.values() if base == "dict" else value
            for item in items:
                if why := why_not(item, args[-1], show):
                    return f"an item: {why}"
        return ""
    return f"expected {hint}, got {show(value)}"


def fits(value: Any, hint: str) -> bool:
    return not why_not(value, hint)


def as_json(value: Any) -> str:
    """A value as a record's file shows it, cut to 40 characters."""
    return json.dumps(value)[:40]
