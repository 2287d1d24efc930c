"""Reading record fields by dotted path, and field values as text: shared by log metrics
(labels, match rules) and routes (conditions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """Value at a dotted path: nested objects, or the literal dotted key at top level; None when
    absent."""
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda rec: rec.get(key)

    def get(rec: dict[str, Any]) -> Any:
        v: Any = rec
        for p in parts:
            if type(v) is not dict:
                return rec.get(path)
            v = v.get(p)
            if v is None:
                return rec.get(path)
        return v

    return get


def as_text(v: Any, missing: str = "") -> str:
    """A scalar as text (`true`/`false` for booleans); `missing` for None, objects and arrays."""
    if v is None:
        return missing
    if type(v) is str:
        return v
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) in (int, float):
        return str(v)
    return missing
