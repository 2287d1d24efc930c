"""The null sink: counts and discards (benchmarks, dry runs)."""

from __future__ import annotations

from pipelines.errors import FatalSinkError
from pipelines.records import Batch


class NullSink:
    name = "null"

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0    # record bytes (no newlines)
        self.batches = 0
        self._closed = True

    async def start(self) -> None:
        self._closed = False

    async def send(self, batch: Batch) -> None:
        if self._closed:
            raise FatalSinkError(self.name, "send before start or after close")
        self.records += batch.nrecords
        self.bytes += batch.nbytes
        self.batches += 1

    async def close(self, timeout_secs: float) -> None:
        self._closed = True

    def healthy(self) -> bool:
        return not self._closed
