"""One file's tailer: reads large chunks, splits lines in C, feeds the chain, follows the file's life.

Life of a file, as seen at end of data:
* grown: keep reading.
* truncated (size below our position, or the first bytes changed — copytruncate): read again from
  offset 0 under the file's new identity; counted.
* rotated (the path now names another file) or deleted: the open descriptor is read to its end,
  once more after a poll interval for late writes, then closed; the new file at the path is
  discovered separately and read from its head.
A last line without newline is held until its newline arrives or `partial_line_timeout_secs`
passes; a line longer than the raw bound is cut, emitted truncated, and its rest skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from agent.filesource.identity import FileId, identify
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import FileProcessor
from pipelines.records import Segment

log = logging.getLogger("tailship.tailer")

# Room for a runtime's wrapper (docker JSON, CRI prefix) around a maximal payload.
RAW_LINE_SLACK = 64 * 1024


class FileTailer:
    def __init__(self, *, path: str, fd: int, fid: FileId, offset: int,
                 new_processor: Callable[[FileId], FileProcessor],
                 emit: Callable[[Segment], Awaitable[None]], metrics: Metrics,
                 settings: SourceSettings, once: bool, stop: asyncio.Event,
                 on_gone: Callable[[], None] | None = None) -> None:
        self.path = path
        self.fd = fd
        self.fid = fid
        self.pos = offset          # next byte to read
        self.offset = offset       # file offset of `rest` (the first byte not yet split into lines)
        self.rest = b""
        self.skipping = False      # discarding the remainder of an over-long line
        self._new_processor = new_processor
        self.processor = new_processor(fid)
        self.emit = emit
        self.metrics = metrics
        self.s = settings
        self.once = once
        self.stop = stop
        self.on_gone = on_gone     # told when the path stops naming this file (rotated, deleted)
        self.raw_limit = settings.max_line_bytes + RAW_LINE_SLACK
        self.gone_polls = 0        # polls at EOF since the file was rotated away or deleted
        self.last_data = 0.0
        self.done = False
        # set when inotify reports a write (or the agent stops): ends the wait before a poll
        self.wake = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.processor.ready()  # a pod's metadata from the API server (bounded wait)
            self.last_data = loop.time()
            while not self.stop.is_set():
                self.wake.clear()  # before reading: a write after this point ends the next wait
                if self.pos and self._replaced():
                    await self._truncated()
                    continue
                if await self._read_some(loop):
                    await asyncio.sleep(0)  # let other files have their turn
                    continue
                if await self._at_eof(loop.time()):
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), self.s.poll_interval_ms / 1000)
                except TimeoutError:
                    pass
            self.done = True
        finally:
            os.close(self.fd)

    async def _read_some(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Read up to the per-cycle budget; returns whether anything was read."""
        total = 0
        while total < self.s.read_budget_bytes:
            data = os.pread(self.fd, self.s.read_chunk_bytes, self.pos)
            if not data:
                break
            self.pos += len(data)
            total += len(data)
            self.metrics.bytes_read.inc(len(data))
            await self._consume(data, loop.time())
        if total:
            self.last_data = loop.time()
        return total > 0

    async def _consume(self, data: bytes, now: float) -> None:
        buf = self.rest + data if self.rest else data
        if self.skipping:
            nl = buf.find(b"\n")
            if nl < 0:
                self.offset += len(buf)
                self.rest = b""
                return
            self.offset += nl + 1
            buf = buf[nl + 1:]
            self.skipping = False
        lines = buf.split(b"\n")
        self.rest = lines.pop()
        if lines:
            consumed = len(buf) - len(self.rest)
            self.metrics.lines_read.inc(len(lines))
            seg = self.processor.process(lines, self.offset, now)
            self.offset += consumed
            await self.emit(seg)
        if len(self.rest) > self.raw_limit:
            await self._cut_long_line(now)

    async def _cut_long_line(self, now: float) -> None:
        self.metrics.event("line_too_long")
        log.warning("%s: line at offset %d exceeds %d bytes; emitted truncated, rest skipped",
                    self.path, self.offset, self.raw_limit)
        seg = self.processor.process([self.rest[: self.raw_limit]], self.offset, now)
        self.offset += len(self.rest)
        self.rest = b""
        self.skipping = True
        seg.safe_offset = self.processor.safe(self.offset)
        await self.emit(seg)

    async def _flush_held(self, now: float) -> None:
        """Emit the held last line and everything the chain holds (file over, or wait timed out)."""
        if self.rest and not self.skipping:
            self.metrics.event("partial_line_emitted")
            self.metrics.lines_read.inc(1)
            seg = self.processor.process([self.rest], self.offset, now)
            self.offset += len(self.rest)
            self.rest = b""
            seg.safe_offset = self.processor.safe(self.offset)
            await self.emit(seg)
        if self.processor.held_offset is not None:
            await self.emit(self.processor.flush(self.offset, now))

    async def _at_eof(self, now: float) -> bool:
        """Decide what end of data means; returns True when this tailer is finished."""
        if self.once:
            await self._flush_held(now)
            return True
        st = os.fstat(self.fd)
        if self._gone(st):
            self.gone_polls += 1
            if self.gone_polls == 1:
                self.metrics.files.labels("deleted" if st.st_nlink == 0 else "rotated").inc()
                if self.on_gone is not None:
                    self.on_gone()
            if self.gone_polls > 1:
                await self._flush_held(now)
                return True
            return False
        idle = now - self.last_data
        if (self.rest or self.processor.held_offset is not None) and \
                idle >= self.s.partial_line_timeout_secs:
            await self._flush_held(now)
        elif self.processor.expired(now):
            await self.emit(self.processor.flush_multiline(self.offset))
        return False

    def _replaced(self) -> bool:
        """Truncated (shorter than our position) or rewritten (its first bytes changed): checked
        before every read cycle, so a copytruncate followed by fast writes is not read mid-way."""
        if os.fstat(self.fd).st_size < self.pos:
            return True
        fid = identify(self.fd, self.s.fingerprint_bytes)
        return fid is not None and fid.fp != self.fid.fp

    def _gone(self, st: os.stat_result) -> bool:
        if st.st_nlink == 0:
            return True
        try:
            now_at_path = os.stat(self.path)
        except OSError:
            return True
        return (now_at_path.st_dev, now_at_path.st_ino) != (st.st_dev, st.st_ino)

    async def _truncated(self) -> None:
        self.metrics.event("file_truncated")
        log.info("%s: truncated; reading again from offset 0", self.path)
        self.pos = self.offset = 0
        self.rest = b""
        self.skipping = False
        while (fid := identify(self.fd, self.s.fingerprint_bytes)) is None:
            if self.stop.is_set() or os.fstat(self.fd).st_nlink == 0:
                break
            try:
                await asyncio.wait_for(self.stop.wait(), self.s.poll_interval_ms / 1000)
            except TimeoutError:
                pass
        if fid is not None:
            self.fid = fid
        self.processor = self._new_processor(self.fid)
