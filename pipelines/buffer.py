"""The disk buffer: batches written to zstd-compressed, checksummed segment files under the data
directory, then delivered to the real sink in order, by a background task, with retries.

`BufferedSink` wraps any sink and is a sink itself. `send(batch)` appends the batch to the buffer
(fsynced). With `ack = "on_write"` it returns then: the runtime counts the batch acknowledged,
its files' checkpoints move on and its memory is freed — the buffer, not memory, absorbs an
outage. With `ack = "on_delivery"` it returns once the real sink took the batch; the buffer then
only makes undelivered batches survive a restart (their lines are read again too: duplicates).

On start, frames left by an earlier run are delivered first, in order. A frame that fails its
checksum, or a torn one at the end of a file (a crash mid-write), is copied to
`<buffer>/corrupt/`, counted and warned about; the frames after it are delivered. A full buffer
(`max_size_bytes` of undelivered frames; the files on disk may exceed it by one segment file,
16 MiB, until that file is complete and delivered) makes `send` wait (`when_full = "block"`) or
drops the batch, counted (`"drop_newest"`).

A disk that refuses a write (full: ENOSPC, read-only: EROFS) loses nothing: the append is tried
again with backoff while the batch waits (the sender, then the budget, then the tailers wait:
backpressure), each failure is counted (`buffer_write_failed`), one message per 30 s names the
directory and the cause, and `write_error` makes the agent not ready until a write succeeds. A
failed append is cut off the file (then, or before the next append if the disk refuses even
that), so a torn frame never sits before good ones. The drain goes on delivering while the disk
refuses to record it (delivering is what frees the disk: a segment file whose frames are all
delivered is deleted, and while appends fail the one being written too) and records it at the
next chance; reading a frame is retried like an append. Every task here is supervised (`pipelines.supervise`).

Files: `<buffer>/seg-<first frame id>.tsb`, a concatenation of frames
`b"TSB1" | u32 length | u32 crc32(id + payload) | u64 id | payload` where payload is the zstd
frame of `header JSON + b"\\n" + records joined by b"\\n"` (records are orjson output: no raw
newline). `<buffer>/delivered` holds the id of the last delivered frame (written after each
delivery, atomically); files whose frames are all delivered are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import zstandard

from pipelines.backoff import Backoff, send_with_retry
from pipelines.durable import append_synced, fsync_dir
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.refusals import SinkRefusal
from pipelines.sinks.base import Sink
from pipelines.supervise import WARN_EVERY_SECS, Every, Stall, TaskSupervisor

log = logging.getLogger("tailship.buffer")

MAGIC = b"TSB1"
HEAD = struct.Struct("<4sIIQ")  # magic, payload length, crc32, frame id
SEGMENT_FILE_BYTES = 16 << 20   # a new segment file after this many bytes
T = TypeVar("T")


@dataclass(slots=True)
class Frame:
    id: int
    path: Path
    offset: int   # of the frame header in its file
    size: int     # header + payload


def encode_batch(batch: Batch) -> bytes:
    segs = [{"file_key": s.file_key, "path": s.path, "meta": s.meta, "offsets": s.offsets,
             "trace_ids": s.trace_ids, "span_ids": s.span_ids, "safe_offset": s.safe_offset,
             "nbytes": s.nbytes, "n": len(s.records)} for s in batch.segments]
    records = [r for s in batch.segments for r in s.records]
    return orjson.dumps({"segments": segs}) + b"\n" + b"\n".join(records)


def decode_batch(data: bytes, seq: int) -> Batch:
    head, _, body = data.partition(b"\n")
    records = body.split(b"\n") if body else []
    batch = Batch(seq=seq)
    i = 0
    for d in orjson.loads(head)["segments"]:
        n = d["n"]
        seg = Segment(d["file_key"], d["path"], d["meta"], records[i:i + n], d["offsets"],
                      d["trace_ids"], d["span_ids"], d["nbytes"], d["safe_offset"])
        i += n
        batch.add(seg)
    return batch


class DiskBuffer:
    """The files and the bookkeeping; blocking I/O, called from a thread."""

    def __init__(self, directory: str | os.PathLike[str], level: int = 1) -> None:
        self.dir = Path(directory)
        self.level = level
        self.frames: deque[Frame] = deque()   # written, not yet delivered, in order
        self.bytes = 0                        # size of the segment files on disk
        self.pending = 0                      # bytes of the frames not delivered yet
        self.corrupt = 0                      # damaged regions set aside
        self.next_id = 1
        self.delivered = 0
        self.unsynced = False                 # delivered frames not recorded on disk yet
        self._file: Path | None = None        # the file appends go to
        self._file_size = 0
        self._torn: tuple[Path, int] | None = None  # a file to cut back to its whole frames
        self._refused = False                 # the last append failed (a full or read-only disk)
        # appends and deliveries run on different threads: deleting a delivered file must not
        # race an append that is about to write to it
        self._lock = threading.Lock()
        self._sizes: dict[Path, int] = {}
        self._last_id: dict[Path, int] = {}
        self._c = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._d = zstandard.ZstdDecompressor()

    # -- recovery ------------------------------------------------------------------------------

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.delivered = int((self.dir / "delivered").read_text().strip() or 0)
        except (OSError, ValueError):
            self.delivered = 0
        for path in sorted(self.dir.glob("seg-*.tsb")):
            self._scan(path)
        self.next_id = max([self.delivered, *self._last_id.values()], default=0) + 1
        for path in list(self._sizes):
            self._drop_if_delivered(path)

    def _scan(self, path: Path) -> None:
        data = path.read_bytes()
        pos, last = 0, 0
        while pos < len(data):
            ok = len(data) - pos >= HEAD.size
            if ok:
                magic, length, crc, fid = HEAD.unpack_from(data, pos)
                end = pos + HEAD.size + length
                payload = data[pos + HEAD.size:end]
                ok = (magic == MAGIC and end <= len(data)
                      and zlib.crc32(payload, zlib.crc32(struct.pack("<Q", fid))) == crc)
            if not ok:
                nxt = data.find(MAGIC, pos + 1)
                stop = len(data) if nxt < 0 else nxt
                self._set_aside(path, pos, data[pos:stop])
                pos = stop
                continue
            if fid > self.delivered:
                self.frames.append(Frame(fid, path, pos, end - pos))
                self.pending += end - pos
            last = max(last, fid)
            pos = end
        self._sizes[path] = len(data)
        self._last_id[path] = last
        self.bytes += len(data)

    def _set_aside(self, path: Path, offset: int, data: bytes) -> None:
        self.corrupt += 1
        where = self.dir / "corrupt"
        where.mkdir(exist_ok=True)
        target = where / f"{path.stem}-{offset}.bin"
        target.write_bytes(data)
        log.warning("disk buffer: %d damaged bytes at offset %d of %s (checksum or torn write) set "
                    "aside as %s; the rest is delivered", len(data), offset, path.name, target)

    # -- writing -------------------------------------------------------------------------------

    def frame_size(self, payload: bytes) -> int:
        return HEAD.size + len(payload)

    def compress(self, batch: Batch) -> bytes:
        return self._c.compress(encode_batch(batch))

    def append(self, payload: bytes) -> Frame:
        """Write one frame durably; returns it. On an error (a full or read-only disk) the file
        is cut back to its last whole frame — at once, or before the next append when the disk
        refuses even that — so a torn frame never sits before good ones; the error is raised
        and the caller tries again. No descriptor stays open between appends: a data
        directory can be remounted read-only under a running agent."""
        with self._lock:
            return self._append(payload)

    def _append(self, payload: bytes) -> Frame:
        if self._torn is not None:
            self._cut(*self._torn)
        if self._file is None or self._file_size >= SEGMENT_FILE_BYTES:
            self._new_file()
        assert self._file is not None
        path, size, fid = self._file, self._file_size, self.next_id
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Q", fid)))
        data = HEAD.pack(MAGIC, len(payload), crc, fid) + payload
        try:
            append_synced(path, data)
        except OSError:
            self._torn = (path, size)
            self._refused = True
            with contextlib.suppress(OSError):
                self._cut(path, size)
            raise
        self._refused = False
        self.next_id += 1
        frame = Frame(fid, path, size, len(data))
        self._file_size += len(data)
        self._sizes[path] = self._file_size
        self._last_id[path] = fid
        self.bytes += len(data)
        self.pending += len(data)
        self.frames.append(frame)
        return frame

    def _cut(self, path: Path, size: int) -> None:
        """Cut `path` back to `size` bytes (a torn append after it)."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_size > size:
                os.truncate(path, size)
        self._torn = None

    def _new_file(self) -> None:
        path = self.dir / f"seg-{self.next_id:020d}.tsb"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        fsync_dir(self.dir)
        old, self._file, self._file_size = self._file, path, size
        self.bytes += size - self._sizes.get(path, 0)
        self._sizes[path] = size
        if old is not None:
            self._drop_if_delivered(old)

    # -- delivering ----------------------------------------------------------------------------

    def read(self, frame: Frame) -> Batch | None:
        """The batch of a frame; None (set aside) if it no longer reads back intact."""
        with open(frame.path, "rb") as f:
            f.seek(frame.offset)
            data = f.read(frame.size)
        try:
            magic, length, crc, fid = HEAD.unpack_from(data, 0)
            payload = data[HEAD.size:HEAD.size + length]
            if magic != MAGIC or fid != frame.id or len(payload) != length or \
                    zlib.crc32(payload, zlib.crc32(struct.pack("<Q", fid))) != crc:
                raise ValueError("checksum")
            return decode_batch(self._d.decompress(payload), seq=frame.id)
        except (ValueError, struct.error, zstandard.ZstdError, KeyError, TypeError):
            self._set_aside(frame.path, frame.offset, data)
            return None

    def mark_delivered(self, frame: Frame) -> None:
        """`frame` was delivered: counted now, then written to disk by `sync` (whose error is
        raised; the next `sync` catches up)."""
        with self._lock:
            self.delivered = frame.id
            self.pending -= frame.size
            self.unsynced = True
            self._sync()

    def sync(self) -> None:
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        """Delete the files whose frames are all delivered (first: on a full disk that is what
        makes room), then write the id of the last delivered frame. A `delivered` file left
        behind by a failure only means frames delivered again after a restart."""
        for path in list(self._sizes):
            self._drop_if_delivered(path)
        tmp = self.dir / ".delivered.tmp"
        tmp.write_text(f"{self.delivered}\n")
        os.replace(tmp, self.dir / "delivered")
        self.unsynced = False

    def _drop_if_delivered(self, path: Path) -> None:
        last = self._last_id.get(path, 0)
        if last > self.delivered or (path == self._file and (not last or not self._refused)):
            # undelivered frames; or the file being written, kept unless the disk refuses appends
            # (then deleting it once delivered is what makes room)
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if path == self._file:  # all delivered: the next append starts a new file
            self._file, self._file_size = None, 0
        self.bytes -= self._sizes.pop(path, 0)
        self._last_id.pop(path, None)

    def close(self) -> None:
        """Cut a torn append left by the last failure, if the disk allows it now."""
        if self._torn is not None:
            with contextlib.suppress(OSError):
                self._cut(*self._torn)


class BufferedSink:
    """A sink that puts batches on disk first and delivers them with a background task."""

    def __init__(self, inner: Sink, directory: str | os.PathLike[str], *, max_bytes: int,
                 ack: str = "on_write", when_full: str = "block", retry_initial_secs: float = 0.1,
                 retry_max_secs: float = 10.0, count: Callable[[str, int], None] | None = None,
                 retry_refused: bool = False, task_supervisor: TaskSupervisor | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.buf = DiskBuffer(directory)
        self.max_bytes = max_bytes
        self.ack = ack
        self.when_full = when_full
        self.retry_initial = retry_initial_secs
        self.retry_max = retry_max_secs
        self.count = count or (lambda name, n: None)
        self.dropped = 0
        self.dead = getattr(inner, "dead", None)
        self._fatal: FatalSinkError | None = None
        # the daemon: a FatalSinkError of the inner sink is tried again (pipelines.delivery)
        self.refusal = (SinkRefusal(self.name, retry_initial_secs, "the disk buffer holds the "
                                    "batches") if retry_refused else None)
        self._opened = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._empty = asyncio.Event()  # set when the buffer has been drained
        self._delivered: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.task_supervisor = task_supervisor or TaskSupervisor()
        self.stall = Stall()                  # frames waiting and none delivered since
        self.write_error: str | None = None   # the disk's last refusal, until a write succeeds
        self._warn = Every(WARN_EVERY_SECS)
        self.full = False  # the last batch sent found no room (it waits, or was dropped)

    @property
    def bytes(self) -> int:
        return self.buf.bytes

    @property
    def absorbs(self) -> bool:
        """Whether a batch sent now is taken at once (acknowledged on write, room left, the disk
        writing): what is read goes to disk, not to memory waiting on the sink."""
        return self.ack == "on_write" and not self.full and self.write_error is None

    async def start(self) -> None:
        if not self._opened:  # once, also when the inner sink's start is tried again
            await asyncio.to_thread(self.buf.open)
            self._opened = True
            if self.buf.corrupt:
                self.count("buffer_corrupt", self.buf.corrupt)
            if self.buf.frames:
                self.stall.pending()
                log.info("disk buffer: %d batch(es) from an earlier run are delivered first",
                         len(self.buf.frames))
        await self.inner.start()
        self._task = self.task_supervisor.spawn("buffer_drain", self._drain, "buffer-drain")
        self._wake.set()

    async def send(self, batch: Batch) -> None:
        if self._fatal is not None:
            raise self._fatal
        payload = await asyncio.to_thread(self.buf.compress, batch)
        size = self.buf.frame_size(payload)
        async with self._lock:  # one writer: frames stay in send order
            while self.buf.pending and self.buf.pending + size > self.max_bytes:
                self.full = True
                if self.when_full == "drop_newest":
                    self.dropped += batch.nrecords
                    self.count("dropped_buffer_full", batch.nrecords)
                    return
                self._room.clear()
                await self._room.wait()
                if self._fatal is not None:
                    raise self._fatal
            frame = await self._on_disk("append to", self.buf.append, payload)
            self.full = False
        self.stall.pending()
        done: asyncio.Future[None] | None = None
        if self.ack == "on_delivery":
            done = self._delivered[frame.id] = asyncio.get_running_loop().create_future()
        self._wake.set()
        if done is not None:
            await done

    async def _drain(self) -> None:
        while True:
            if not self.buf.frames:
                self._wake.clear()
                if not self.buf.unsynced:
                    await self._wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):  # record the deliveries a disk error held up
                    await asyncio.wait_for(self._wake.wait(), self.retry_max)
                await self._record(self.buf.sync)
                continue
            frame = self.buf.frames[0]
            batch = await self._on_disk("read", self.buf.read, frame)
            if batch is None:
                self.count("buffer_corrupt", 1)
            elif not await self._deliver(batch):
                return
            self.buf.frames.popleft()
            self.stall.progressed(bool(self.buf.frames))
            await self._record(self.buf.mark_delivered, frame)
            self._room.set()
            if not self.buf.frames:
                self._empty.set()
            fut = self._delivered.pop(frame.id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _on_disk(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a thread, tried again with backoff while the disk refuses it (full,
        read-only): the batch waits — and through the full budget the tailers — nothing is
        dropped."""
        backoff = Backoff(self.retry_initial, self.retry_max)
        while True:
            try:
                result = await asyncio.to_thread(fn, *args)
            except OSError as exc:
                self._disk_failed(what, exc)
                await asyncio.sleep(backoff.next())
                continue
            if what != "read":  # reading works on a read-only disk: it says nothing of writes
                self._disk_ok()
            return result

    async def _record(self, fn: Callable[..., None], *args: Any) -> None:
        """Record deliveries on disk; a failure is reported and left to the next one (the
        drain goes on: delivering is what frees the disk)."""
        try:
            await asyncio.to_thread(fn, *args)
        except OSError as exc:
            self._disk_failed("record delivered batches in", exc)
        else:
            self._disk_ok()

    def _disk_failed(self, what: str, exc: OSError) -> None:
        """Count the failure, keep it for readiness, log it (naming the directory and the
        cause) at most once per `WARN_EVERY_SECS`."""
        self.count("buffer_write_failed" if what != "read" else "buffer_read_failed", 1)
        self.write_error = f"disk buffer cannot {what} {self.buf.dir}: {exc.strerror or exc}"
        if self._warn.due():
            log.error("%s (batches wait, nothing is dropped; retrying; the disk buffer holds %d "
                      "batch(es))", self.write_error, len(self.buf.frames))

    def _disk_ok(self) -> None:
        if self.write_error is not None:
            log.info("disk buffer: %s works again", self.buf.dir)
            self.write_error = None
            self._warn = Every(WARN_EVERY_SECS)

    async def _deliver(self, batch: Batch) -> bool:
        def on_retry(exc: RetriableSinkError, attempt: int) -> None:
            self.count("buffer_retry", 1)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s (attempt %d; the disk buffer holds %d batch(es), %d bytes)",
                            exc, attempt, len(self.buf.frames), self.buf.bytes)

        refusal = self.refusal
        try:
            await send_with_retry(lambda: self.inner.send(batch),
                                  Backoff(self.retry_initial, self.retry_max), on_retry,
                                  on_refused=None if refusal is None else refusal.refused)
            if refusal is not None and refusal.current is not None:
                refusal.accepted()
            return True
        except FatalSinkError as exc:
            log.error("%s", exc)
            self._fatal = exc
            self._room.set()
            self._empty.set()
            for fut in self._delivered.values():
                if not fut.done():
                    fut.set_exception(exc)
            return False

    async def close(self, timeout_secs: float) -> None:
        """Deliver what the buffer holds within the deadline; the rest waits for the next start."""
        if self._task is not None:
            if self.buf.frames and self._fatal is None:
                self._empty.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._empty.wait(), timeout_secs)
                if self.buf.frames:
                    log.warning("disk buffer: %d batch(es) not delivered before the shutdown deadline; "
                                "they are delivered at the next start", len(self.buf.frames))
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.buf.close()
        await self.inner.close(timeout_secs)

    def healthy(self) -> bool:
        return self._fatal is None and self.inner.healthy()

    def state(self) -> dict[str, Any]:
        return {"frames": len(self.buf.frames), "bytes": self.buf.bytes, "write_error": self.write_error}
