"""The stdout sink: NDJSON, one record per line, flushed per batch.

Writes run on one writer thread: a reader that stops reading blocks that thread, not the event
loop (signals still work), and batches come out in the order `send` was called. Any write error is
fatal: a closed pipe does not reopen, and a retry after a partial write would break a line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from pipelines.codec import encode_ndjson
from pipelines.errors import FatalSinkError
from pipelines.records import Batch

log = logging.getLogger("tailship.sinks.stdout")


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self._writer: ThreadPoolExecutor | None = None
        self._closed = True
        self._ok = True

    async def start(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer
        self._writer = self._writer or ThreadPoolExecutor(1, thread_name_prefix="tailship-stdout-sink")
        self._closed = False
        self._ok = True

    async def send(self, batch: Batch) -> None:
        if self._closed or self._writer is None:
            raise FatalSinkError(self.name, "send before start or after close")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self._write, batch)
        except BrokenPipeError as exc:
            self._ok = False
            raise FatalSinkError(self.name, "standard output was closed by its reader "
                                 "(broken pipe); stopping") from exc
        except ValueError as exc:  # "I/O operation on closed file"
            self._ok = False
            raise FatalSinkError(self.name, f"standard output is closed: {exc}") from exc
        except OSError as exc:
            self._ok = False
            raise FatalSinkError(self.name, f"cannot write to standard output: "
                                 f"{exc.strerror or exc}") from exc

    def _write(self, batch: Batch) -> None:
        data = encode_ndjson(batch)
        if data:
            assert self._stream is not None
            self._stream.write(data)
            self._stream.flush()

    async def close(self, timeout_secs: float) -> None:
        """Wait (within the deadline) for writes already handed over; the stream stays open."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is None:
            return
        done = asyncio.wrap_future(writer.submit(lambda: None))
        writer.shutdown(wait=False)
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_secs)
        except TimeoutError:
            log.warning("stdout sink: standard output still blocked after %.1f s", timeout_secs)

    def healthy(self) -> bool:
        return self._ok and not self._closed
