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
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from pipelines.backoff import Backoff, send_with_retry
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.refusals import SinkRefusal
from pipelines.sinks.base import Sink

log = logging.getLogger("tailship.buffer")

MAGIC = b"TSB1"
HEAD = struct.Struct("<4sIIQ")  # magic, payload length, crc32, frame id
SEGMENT_FILE_BYTES = 16 << 20   # a new segment file after this many bytes


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
        self._file: Path | None = None
        self._fd = -1
        self._file_size = 0
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
        """Write one frame durably; returns it."""
        if self._fd < 0 or self._file_size >= SEGMENT_FILE_BYTES:
            self._rotate()
        assert self._file is not None
        fid = self.next_id
        self.next_id += 1
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Q", fid)))
        data = HEAD.pack(MAGIC, len(payload), crc, fid) + payload
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        frame = Frame(fid, self._file, self._file_size, len(data))
        self._file_size += len(data)
        self._sizes[self._file] = self._file_size
        self._last_id[self._file] = fid
        self.bytes += len(data)
        self.pending += len(data)
        self.frames.append(frame)
        return frame

    def _rotate(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._file = self.dir / f"seg-{self.next_id:020d}.tsb"
        self._fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._file_size = os.fstat(self._fd).st_size
        self._sizes[self._file] = self._file_size
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

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
        self.delivered = frame.id
        self.pending -= frame.size
        tmp = self.dir / ".delivered.tmp"
        tmp.write_text(f"{frame.id}\n")
        os.replace(tmp, self.dir / "delivered")
        self._drop_if_delivered(frame.path)

    def _drop_if_delivered(self, path: Path) -> None:
        if path == self._file or self._last_id.get(path, 0) > self.delivered:
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self.bytes -= self._sizes.pop(path, 0)
        self._last_id.pop(path, None)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BufferedSink:
    """A sink that puts batches on disk first and delivers them with a background task."""

    def __init__(self, inner: Sink, directory: str | os.PathLike[str], *, max_bytes: int,
                 ack: str = "on_write", when_full: str = "block", retry_initial_secs: float = 0.1,
                 retry_max_secs: float = 10.0, count: Callable[[str, int], None] | None = None,
                 retry_refused: bool = False) -> None:
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

    @property
    def bytes(self) -> int:
        return self.buf.bytes

    async def start(self) -> None:
        if not self._opened:  # once, also when the inner sink's start is tried again
            await asyncio.to_thread(self.buf.open)
            self._opened = True
            if self.buf.corrupt:
                self.count("buffer_corrupt", self.buf.corrupt)
            if self.buf.frames:
                log.info("disk buffer: %d batch(es) from an earlier run are delivered first",
                         len(self.buf.frames))
        await self.inner.start()
        self._task = asyncio.create_task(self._drain(), name="buffer-drain")
        self._wake.set()

    async def send(self, batch: Batch) -> None:
        if self._fatal is not None:
            raise self._fatal
        payload = await asyncio.to_thread(self.buf.compress, batch)
        size = self.buf.frame_size(payload)
        async with self._lock:  # one writer: frames stay in send order
            while self.buf.pending and self.buf.pending + size > self.max_bytes:
                if self.when_full == "drop_newest":
                    self.dropped += batch.nrecords
                    self.count("dropped_buffer_full", batch.nrecords)
                    return
                self._room.clear()
                await self._room.wait()
                if self._fatal is not None:
                    raise self._fatal
            frame = await asyncio.to_thread(self.buf.append, payload)
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
                await self._wake.wait()
                continue
            frame = self.buf.frames[0]
            batch = await asyncio.to_thread(self.buf.read, frame)
            if batch is None:
                self.count("buffer_corrupt", 1)
            elif not await self._deliver(batch):
                return
            self.buf.frames.popleft()
            await asyncio.to_thread(self.buf.mark_delivered, frame)
            self._room.set()
            if not self.buf.frames:
                self._empty.set()
            fut = self._delivered.pop(frame.id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

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
        return {"frames": len(self.buf.frames), "bytes": self.buf.bytes}
