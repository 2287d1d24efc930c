"""One file's tailer: reads large chunks, splits lines in C, feeds the chain, follows the file's life.

Life of a file, as seen at end of data:
* grown: keep reading.
* truncated (size below our position, or the first bytes changed — copytruncate): read again from
  offset 0 under the file's new identity; counted.
* rotated (the path now names another file) or deleted: the open descriptor is read to its end,
  once more after a poll interval for late writes, then closed; the new file at the path is
  discovered separately and read from its head.
* idle: with nothing held, a file lets go of its descriptor after `close_inactive_secs`, or at
  once while other files wait for one (`descriptors.Slots`); it is reopened by identity (device,
  inode, fingerprint) when it grows, at its path or, rotated meanwhile, beside its real path.
Where inotify covers the file (`watched()`), an idle tailer parks after `PARK_AFTER_SECS` (at
once when what it read came after such a quiet spell, or was the file's first data): its
task ends and its chain is dropped (what the chain must remember is kept: `FileProcessor.park`),
so an idle file costs no task, timer or chain; an inotify event, or the source's sweep when `due`
says so, starts it again (`FileSource._resume`). Elsewhere it checks every `poll_interval_ms`.
The chain is made when the first bytes are read (`_chain`).
A last line without newline is held until its newline arrives or `partial_line_timeout_secs`
passes; a line longer than the raw bound is cut, emitted truncated, and its rest skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable

from agent.filesource import descriptors
from agent.filesource.discovery import rotated_siblings
from agent.filesource.identity import FileId, identify
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import FileProcessor, Parked
from pipelines.records import Segment

log = logging.getLogger("tailship.tailer")

# Room for a runtime's wrapper (docker JSON, CRI prefix) around a maximal payload.
RAW_LINE_SLACK = 64 * 1024
# Where inotify covers a file, a tailer idle this long parks (see the module's docstring): a
# busy file keeps its task and chain between writes, an idle one lets go of them.
PARK_AFTER_SECS = 5.0


class FileTailer:
    """`new_processor(fid, label, real)` makes the file's chain; `covers(directories)`: whether
    inotify reports writes in all of them now."""

    __slots__ = ("path", "label", "real", "fd", "slots", "covers", "wants_slot", "fid", "pos",
                 "offset", "rest", "skipping", "_new_processor", "processor", "_parked", "_ready",
                 "emit", "metrics", "s", "once", "stop", "on_gone", "raw_limit", "gone_polls",
                 "last_data", "read_at", "quiet", "done", "parked", "_woken", "_waiter")

    def __init__(self, *, path: str, fd: int, fid: FileId, offset: int,
                 new_processor: Callable[[FileId, str, str], FileProcessor],
                 emit: Callable[[Segment], Awaitable[None]], metrics: Metrics,
                 settings: SourceSettings, once: bool, stop: asyncio.Event,
                 on_gone: Callable[[], None] | None = None, real: str | None = None,
                 label: str | None = None, slots: descriptors.Slots | None = None,
                 covers: Callable[[Iterable[str]], bool] = lambda _dirs: False) -> None:
        self.path = path
        self.label = label or path  # the path its records are reported under
        self.real = real or path   # where its rotations are looked for once it is closed
        self.fd = fd               # -1 while it has let go of its descriptor (idle)
        self.slots = slots         # its descriptor counts here (taken by whoever opened it)
        self.covers = covers
        self.wants_slot = False    # closed, grown, and waiting for a free descriptor
        self.fid = fid
        self.pos = offset          # next byte to read
        self.offset = offset       # file offset of `rest` (the first byte not yet split into lines)
        self.rest = b""
        self.skipping = False      # discarding the remainder of an over-long line
        self._new_processor = new_processor
        self.processor: FileProcessor | None = None  # made with the first bytes (`_chain`)
        self._parked: Parked | None = None  # what the chain dropped at parking remembers
        self._ready = False        # the chain's `ready()` was awaited (once per file)
        self.emit = emit
        self.metrics = metrics
        self.s = settings
        self.once = once
        self.stop = stop
        self.on_gone = on_gone     # told when the path stops naming this file (rotated, deleted)
        self.raw_limit = settings.max_line_bytes + RAW_LINE_SLACK
        self.gone_polls = 0        # polls at EOF since the file was rotated away or deleted
        self.last_data = 0.0       # when data was last read (or the tailer started)
        self.read_at = -math.inf   # when data was last read
        # what was read last came after `PARK_AFTER_SECS` without data (or was the first): a
        # lone write, read, and the tailer parks at once (10,000 files read at start-up do
        # not hold 10,000 chains and tasks at a time)
        self.quiet = True
        self.done = False
        self.parked = False        # `run` returned to be started again (see the module's docstring)
        # inotify reported a write (or the agent stops): the next wait ends at once; `_waiter`
        # is what a waiting tailer awaits (no Event per file: thousands of them)
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def watched(self) -> bool:
        """Whether inotify reports writes to this file now."""
        return self.covers((os.path.dirname(self.path), os.path.dirname(self.real)))

    def wake(self) -> None:
        """A write was reported (or the agent stops): look at the file now."""
        self._woken = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def run(self) -> None:
        """Follow the file until it is finished (`done`), the agent stops, or it parks."""
        loop = asyncio.get_running_loop()
        self.parked = False
        if not self.last_data:
            self.last_data = loop.time()
        try:
            while not self.stop.is_set():
                self._woken = False  # before reading: a write after this point ends the next wait
                if self.fd < 0:
                    reopened = self._reopen()
                    if reopened is None:
                        break  # rotated away or deleted while closed, and read to its end
                    if not reopened:
                        if self._park(loop.time()):
                            return
                        await self._wait(loop.time())
                        continue
                if self.pos and self._replaced():
                    await self._truncated()
                    continue
                if await self._read_some(loop):
                    await asyncio.sleep(0)  # let other files have their turn
                    continue
                if await self._at_eof(loop.time()):
                    break
                if self._park(loop.time()):
                    return
                await self._wait(loop.time())
            self.done = True
        finally:
            if not self.parked:
                self._let_go()

    async def _wait(self, now: float) -> None:
        """Until inotify (or a stop) wakes this tailer, or its next check is due."""
        if self._woken:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        # a timer, not `wait_for` (a task per wait): thousands of idle tailers
        timer = loop.call_later(self._next_check(now), self.wake)
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    def _holds(self) -> bool:
        """A partial last line, or records the chain holds (joins, multiline)."""
        p = self.processor
        return bool(self.rest) or (p is not None and p.held_offset is not None)

    def _next_check(self, now: float) -> float:
        """Seconds until this tailer must look at its file again on its own. Polls where inotify
        does not cover the file, while it holds a partial line or records, while it is rotated
        away and while it waits for a descriptor; else it waits for inotify until it parks (or
        closes its file first)."""
        poll = self.s.poll_interval_ms / 1000
        if self.gone_polls or self.wants_slot or self._holds() or not self.watched():
            return poll
        wait = self.last_data + PARK_AFTER_SECS - now
        if self.fd >= 0:
            wait = min(wait, self.last_data + self.s.close_inactive_secs - now)
        return max(poll, wait)

    def _park(self, now: float) -> bool:
        """Park (see the module's docstring) if the file is idle long enough, inotify covers
        it and nothing is held: the chain is dropped, what it must remember kept. Never with
        `once`, nor while rotated away or waiting for a descriptor (those poll)."""
        if (self.once or self._woken or self.gone_polls or self.wants_slot or self._holds()
                or (not self.quiet and now - self.last_data < PARK_AFTER_SECS) or not self.watched()):
            return False
        if self.processor is not None:
            self._parked = self.processor.park()
            self.processor = None
        self.parked = True
        return True

    def due(self, now: float) -> bool:
        """Whether a parked tailer must run again though inotify reported nothing: inotify no
        longer covers its file, it should let go of its descriptor (idle `close_inactive_secs`,
        or other files wait for one), or its file changed unreported (another size than what
        was read, deleted or rotated away; closed: its path leads elsewhere)."""
        if not self.watched():
            return True
        try:
            if self.fd >= 0:
                if self._may_close(now):
                    return True
                st = os.fstat(self.fd)
                return st.st_size != self.pos or self._gone(st)
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != (self.fid.dev, self.fid.ino) or st.st_size != self.pos

    async def _chain(self) -> FileProcessor:
        """The file's chain, made when first needed (again after parking, carrying on from the
        dropped one); its `ready()` (a pod's metadata from the API server, a bounded wait) is
        awaited once per file."""
        p = self.processor
        if p is None:
            p = self.processor = self._new_processor(self.fid, self.label, self.real)
            if self._parked is not None:
                p.resume(self._parked)
                self._parked = None
            if not self._ready:
                self._ready = True
                await p.ready()
        return p

    def _let_go(self) -> None:
        """Close the descriptor (and give back its slot)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if self.slots is not None:
                self.slots.give()

    def _may_close(self, now: float) -> bool:
        """Idle at the end of its file with nothing held: other files wait for a descriptor,
        or it has been idle for `close_inactive_secs`."""
        if self.slots is None or self._holds():
            return False
        return self.slots.wanted or now - self.last_data >= self.s.close_inactive_secs

    def _reopen(self) -> bool | None:
        """Open the file again if it grew (or shrank) while closed: True when open, False to
        wait (no change, or no descriptor free), None when it is gone for good (deleted, or
        rotated away with nothing more to read)."""
        found = self._find()
        if found is None:
            return None
        path, st = found
        if st.st_size == self.pos:
            return False if path == self.path else None  # rotated away with nothing unread
        self.wants_slot = self.slots is not None and not self.slots.take()
        if self.wants_slot:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if self.slots is not None:
                self.slots.give()
            if descriptors.is_out_of_descriptors(exc):
                descriptors.exhausted(self.metrics, path)
                self.wants_slot = True
                if self.slots is not None:
                    self.slots.want()
                return False
            return None if path != self.path else False  # gone between the stat and the open
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (self.fid.dev, self.fid.ino):
            os.close(fd)  # another file took its place since the stat: this one is gone
            if self.slots is not None:
                self.slots.give()
            return None
        self.fd = fd  # rewritten meanwhile (copytruncate): `_replaced` tells, next
        self.metrics.event("file_reopened")
        return True

    def _find(self) -> tuple[str, os.stat_result] | None:
        """Where this (closed) file is now: at its path, else rotated beside its real path."""
        ident = (self.fid.dev, self.fid.ino)
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == ident:
                return self.path, st
        except OSError:
            pass
        for cand, st in rotated_siblings(self.real):
            if (st.st_dev, st.st_ino) == ident:
                return cand, st
        return None

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
            now = loop.time()
            self.quiet = now - self.read_at >= PARK_AFTER_SECS
            self.read_at = self.last_data = now
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
            seg = (await self._chain()).process(lines, self.offset, now)
            await self.emit(seg)
            self.offset += consumed  # after: a tailer released while it waits (`_release_held`)
            # counts the bytes of this segment as never handed on
        if len(self.rest) > self.raw_limit:
            await self._cut_long_line(now)

    async def _cut_long_line(self, now: float) -> None:
        self.metrics.event("line_too_long")
        log.warning("%s: line at offset %d exceeds %d bytes; emitted truncated, rest skipped",
                    self.path, self.offset, self.raw_limit)
        chain = await self._chain()
        seg = chain.process([self.rest[: self.raw_limit]], self.offset, now)
        self.offset += len(self.rest)
        self.rest = b""
        self.skipping = True
        seg.safe_offset = chain.safe(self.offset)
        await self.emit(seg)

    async def _flush_held(self, now: float) -> None:
        """Emit the held last line and everything the chain holds (file over, or wait timed out)."""
        if self.rest and not self.skipping:
            self.metrics.event("partial_line_emitted")
            self.metrics.lines_read.inc(1)
            chain = await self._chain()
            seg = chain.process([self.rest], self.offset, now)
            self.offset += len(self.rest)
            self.rest = b""
            seg.safe_offset = chain.safe(self.offset)
            await self.emit(seg)
        p = self.processor
        if p is not None and p.held_offset is not None:
            await self.emit(p.flush(self.offset, now))

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
        p = self.processor
        if self._holds() and idle >= self.s.partial_line_timeout_secs:
            await self._flush_held(now)
        elif p is not None and p.expired(now):
            await self.emit(p.flush_multiline(self.offset))
        elif self._may_close(now):
            self.metrics.event("file_closed_idle")
            self._let_go()
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
        self.processor = None  # a new chain for the new file, made with its first bytes
        self._parked = None
