"""`opt`: one option of a settings dataclass, with the metadata validation reads.

Settings classes live next to what they configure (a sink's options beside the sink);
`agent.config` validates any of them from its fields: type hints give the types, metadata gives
`choices`, `min`, `max` and `help`. Option names carry their units (`_secs`, `_ms`, `_bytes`).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def opt(default: Any = None, *, help: str, factory: Any = None, **rules: Any) -> Any:  # noqa: A002
    meta = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
