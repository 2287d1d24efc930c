"""Dead letters: records a sink can never deliver, kept with the reason instead of dropped.

An append-only NDJSON file (by default under `<data_dir>/deadletter/`), one object per rejected
record: `{"time", "sink", "reason", "detail", "file", "offset", "record"}`, `time` in RFC 3339 UTC,
`reason` one of the fixed codes of `Reason` (what metrics are labelled with), `detail` the
sink's message (status, server error, limit) and `record` the record as a string. Each `write` is
one append followed by fsync: once it returns, the entries are durable and the sink may
acknowledge their batch.

`write` blocks (fsync); it is for rare rejections. A sink that dead-letters often should call it
through `asyncio.to_thread`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import orjson


class Reason(enum.StrEnum):
    """Why a record was dead-lettered: a small fixed set (a metric label, never free text)."""

    TOO_LARGE = "too_large"              # above the sink's record limit, or refused as too large
    INVALID_DESTINATION = "invalid_destination"  # a topic or index name the server cannot have
    MISSING_DESTINATION = "missing_destination"  # the topic or index does not exist and is not created
    NOT_AUTHORIZED = "not_authorized"    # the destination refuses writes (ACL, index write block)
    REJECTED = "rejected"                # the server refused the record's content (mapping, corrupt)


# reason, detail (the sink's message), source file path, offset in that file, the record (orjson bytes)
Entry = tuple[Reason, str, str, int, bytes]


class DeadLetter:
    def __init__(self, path: str | os.PathLike[str], sink: str) -> None:
        self.path = Path(path)
        self.sink = sink
        self.count = 0  # entries written by this instance

    def write(self, entries: Iterable[Entry]) -> int:
        """Append the entries durably; returns how many were written."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = [
            orjson.dumps({"time": now, "sink": self.sink, "reason": str(reason), "detail": detail,
                          "file": path, "offset": offset, "record": record.decode("utf-8", "replace")})
            for reason, detail, path, offset, record in entries
        ]
        if not lines:
            return 0
        lines.append(b"")  # the trailing newline, in the same join
        self._append(b"\n".join(lines))
        self.count += len(lines) - 1
        return len(lines) - 1

    def _append(self, data: bytes) -> None:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's name survives a crash too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
