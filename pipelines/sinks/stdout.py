"""The stdout sink: NDJSON, one record per line, flushed per batch."""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

from pipelines.codec import encode_ndjson
from pipelines.errors import FatalSinkError
from pipelines.records import Batch


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self._closed = False

    async def start(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer
        self._closed = False

    async def send(self, batch: Batch) -> None:
        if self._closed or self._stream is None:
            raise FatalSinkError(self.name, "send after close")
        try:
            # in a thread: a reader that stops reading must not freeze the event loop (signals!)
            await asyncio.to_thread(self._write, encode_ndjson(batch))
        except (BrokenPipeError, ValueError, OSError) as exc:
            # a closed pipe will not reopen: stop instead of retrying forever
            raise FatalSinkError(self.name, f"cannot write to standard output: {exc}") from exc

    def _write(self, data: bytes) -> None:
        assert self._stream is not None
        self._stream.write(data)
        self._stream.flush()

    async def close(self, timeout_secs: float) -> None:
        self._closed = True

    def healthy(self) -> bool:
        return not self._closed
