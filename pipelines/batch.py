"""Batching and the in-flight byte budget.

* `ByteBudget` bounds the bytes in flight between the tailers and the sink: a tailer awaits room
  before its records enter a batch and the room comes back only when the sink acknowledged them.
  This is the backpressure: with the budget spent, tailers stop reading and files wait on disk.
* `Batcher` packs segments into batches closed on `max_records`, `max_bytes` or `linger`.

(Acknowledgements become checkpoints in `pipelines.fanout`, across every sink a line went to.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pipelines.records import Batch, Segment


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    def has_room(self, n: int) -> bool:
        """Whether `n` bytes fit now; an item larger than the whole budget fits an empty one."""
        return self.used == 0 or self.used + n <= self.limit

    async def acquire(self, n: int) -> None:
        """Wait for room for `n` bytes and take it."""
        await self.wait_room(n)
        self.take(n)

    async def wait_room(self, n: int) -> None:
        """Wait until there is room for `n` bytes, without taking it."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.has_room(n))

    def take(self, n: int) -> None:
        """Take room without waiting (the caller checked that there is room)."""
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()


def split_segment(seg: Segment, k: int) -> tuple[Segment, Segment]:
    """First `k` records and the rest; the first part's safe offset stops at the rest's records."""
    head = Segment(seg.file_key, seg.path, seg.meta, seg.records[:k], seg.offsets[:k],
                   seg.trace_ids[:k], seg.span_ids[:k])
    tail = Segment(seg.file_key, seg.path, seg.meta, seg.records[k:], seg.offsets[k:],
                   seg.trace_ids[k:], seg.span_ids[k:])
    head.nbytes = sum(map(len, head.records))
    tail.nbytes = seg.nbytes - head.nbytes
    head.safe_offset = min(min(tail.offsets, default=seg.safe_offset), seg.safe_offset)
    tail.safe_offset = seg.safe_offset
    head.ticket = tail.ticket = seg.ticket
    if seg.ticket is not None:
        seg.ticket.pending += 1  # two pieces to acknowledge where there was one
    return head, tail


class Batcher:
    """Accumulates segments; hands each closed batch to `ship` (which must not block for long)."""

    def __init__(self, max_records: int, max_bytes: int, linger_secs: float,
                 ship: Callable[[Batch], Awaitable[None]]) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.linger_secs = linger_secs
        self._ship = ship
        self._seq = 0
        self._current: Batch | None = None
        self._opened = 0.0
        self._lock = asyncio.Lock()

    @property
    def open_bytes(self) -> int:
        """Bytes in the batch being filled."""
        return self._current.nbytes if self._current is not None else 0

    async def add(self, seg: Segment) -> None:
        async with self._lock:
            while True:
                batch = self._open()
                room = self.max_records - batch.nrecords
                if len(seg) > room and room > 0:
                    head, seg = split_segment(seg, room)
                    batch.add(head)
                    await self._close()
                    continue
                batch.add(seg)
                if batch.nrecords >= self.max_records or batch.nbytes >= self.max_bytes:
                    await self._close()
                return

    async def flush(self) -> None:
        async with self._lock:
            await self._close()

    async def linger(self) -> None:
        """Close the open batch once it is `linger_secs` old (run as a task)."""
        loop = asyncio.get_running_loop()
        while True:
            wait = self.linger_secs
            if self._current is not None:
                wait = self._opened + self.linger_secs - loop.time()
                if wait <= 0:
                    await self.flush()
                    continue
            await asyncio.sleep(max(wait, 0.005))

    def _open(self) -> Batch:
        if self._current is None:
            self._seq += 1
            self._current = Batch(self._seq)
            self._opened = asyncio.get_running_loop().time()
        return self._current

    async def _close(self) -> None:
        batch, self._current = self._current, None
        if batch is not None and batch.segments:
            await self._ship(batch)
