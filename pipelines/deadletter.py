"""Dead letters: records a sink can never deliver, kept with the reason instead of dropped.

An append-only NDJSON file under the data directory, one object per rejected record:
`{"time", "sink", "reason", "file", "offset", "record"}`; fsynced after each write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import orjson


class DeadLetter:
    def __init__(self, path: str | os.PathLike[str], sink: str) -> None:
        self.path = Path(path)
        self.sink = sink
        self.count = 0

    def write(self, entries: Iterable[tuple[str, str, int, bytes]]) -> int:
        """Append (reason, source file, offset, record) entries; returns how many were written."""
        now = time.time()
        lines = [
            orjson.dumps({"time": now, "sink": self.sink, "reason": reason, "file": path,
                          "offset": offset, "record": record.decode("utf-8", "replace")})
            for reason, path, offset, record in entries
        ]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b"\n".join(lines) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += len(lines)
        return len(lines)
