"""From the files to the sinks: one shared memory budget, routing of segments to the deliveries
of their sinks, and the acknowledgement ledger that moves checkpoints.

    tailer ─► Fanout.emit(segment) ─► shared budget ─► split by route mask ─► Delivery per sink
                                                                                   │ acked
    checkpoint ◄── every sink of every earlier segment of the file acknowledged ◄──┘

* One `ByteBudget` per process bounds what all sinks hold together: a segment takes room once,
  whatever the number of sinks it goes to (its records are shared, not copied), and gives it
  back when the last of its sinks acknowledged it. Each sink's own budget (in its `Delivery`)
  bounds what that sink alone holds, so a sink that is down stops only the files routed to it
  once its budget is full; the other sinks go on within what remains of the shared budget.
* A `Ticket` per emitted segment counts the sink parts not yet acknowledged (a part split across
  batches counts once per piece). Per file, tickets wait in emission order; a file's checkpoint
  moves to the safe offset of the last ticket of the longest fully acknowledged prefix, so it
  never passes a line some sink has not acknowledged, also when batches or sinks acknowledge out
  of order.
* Records routed to no sink (`routing.unmatched = "drop"`) are counted as dropped
  (`unrouted`) and their lines count as done.
* Segments that come from no file (metric samples) enter through `offer`, which never waits:
  without room in the shared budget it takes nothing and says so (the scrape is a gap, as in
  Prometheus when a scrape fails), so a full budget holds up no metric source and a metric source
  never holds up the files. No checkpoint moves with them; their ticket's `on_done` is called
  once every sink acknowledged them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipelines.batch import ByteBudget
from pipelines.delivery import Delivery
from pipelines.records import Batch, Segment


class FanoutReport(Protocol):
    def dropped(self, reason: str, n: int) -> None:
        """`n` records dropped on purpose (`buffer_full`, `unrouted`)."""

    def delivered(self, nrecords: int, nbytes: int) -> None:
        """Records acknowledged by every sink they were routed to."""

    def inflight(self, nbytes: int) -> None:
        """Bytes now held in the shared budget."""


@dataclass(slots=True, eq=False)
class Ticket:
    file_key: str
    path: str
    safe_offset: int
    nrecords: int = 0       # records routed to at least one sink
    nbytes: int = 0         # room taken in the shared budget
    pending: int = 0        # sink parts (pieces) not acknowledged yet
    on_done: Callable[[int], None] | None = None  # not from a file: called with nrecords, no ledger


class AckLedger:
    """Per file, the tickets not yet committed, in the order they were emitted."""

    def __init__(self, commit: Callable[[str, int, str], None]) -> None:
        self.commit = commit  # (file key, offset, path): every line before offset is delivered
        self._pending: dict[str, deque[Ticket]] = {}

    def open(self, ticket: Ticket) -> None:
        self._pending.setdefault(ticket.file_key, deque()).append(ticket)

    def settle(self, ticket: Ticket) -> None:
        """`ticket` is done: commit what it completes of its file's prefix."""
        q = self._pending.get(ticket.file_key)
        last = None
        while q and q[0].pending == 0:
            last = q.popleft()
        if q is not None and not q:
            del self._pending[ticket.file_key]
        if last is not None:
            self.commit(last.file_key, last.safe_offset, last.path)

    def in_flight(self, key: str) -> bool:
        return key in self._pending


class Fanout:
    def __init__(self, deliveries: list[Delivery], memory_limit_bytes: int, when_full: str,
                 commit: Callable[[str, int, str], None], report: FanoutReport) -> None:
        self.deliveries = deliveries
        self.budget = ByteBudget(memory_limit_bytes)
        self.drop_newest = when_full == "drop_newest"
        self.ledger = AckLedger(commit)
        self.report = report
        self._waiting = 0              # emits waiting for room
        self._paused_since = 0.0
        self._paused_secs = 0.0        # wall time with at least one emit waiting
        for d in deliveries:
            d.on_acked = self.acked

    async def emit(self, seg: Segment) -> None:
        """Route `seg` to its sinks, waiting for room (backpressure) unless `when_full` drops."""
        ticket = Ticket(seg.file_key, seg.path, seg.safe_offset)
        self.ledger.open(ticket)
        await self._hand_over(seg, ticket, wait=True)

    async def offer(self, seg: Segment, on_done: Callable[[int], None] | None = None) -> bool:
        """Route `seg`, records from no file, only where there is room now (never waits). False
        when the shared budget has no room: nothing was taken. A sink whose own budget is full
        misses its part (counted as dropped, `buffer_full`). `on_done(nrecords)`: every sink
        that got a part acknowledged it."""
        if not self.budget.has_room(seg.nbytes):
            return False
        await self._hand_over(seg, Ticket(seg.file_key, seg.path, seg.safe_offset, on_done=on_done),
                              wait=False)
        return True

    async def _hand_over(self, seg: Segment, ticket: Ticket, wait: bool) -> None:
        """Give each sink its part of `seg` under `ticket`; `wait`: for room in every budget
        (backpressure), else parts go only where there is room now (`_drop_where_full`)."""
        parts, unrouted = self.split(seg)
        if unrouted:
            self.report.dropped("unrouted", unrouted)
        if self.drop_newest or not wait:
            parts = self._drop_where_full(seg, parts)
        if parts:
            ticket.nrecords = len(seg) - unrouted
            ticket.pending = len(parts)
            needs = [(self.budget, seg.nbytes)] + [(d.budget, p.nbytes) for d, p in parts]
            if wait:
                # room in every budget at once: waiting for one sink while holding room in another
                # (or in the shared budget) would let files stalled on one sink stop the others
                await self._acquire(needs)
            else:
                for b, n in needs:
                    b.take(n)  # no await since `_drop_where_full` checked: the room is there
            ticket.nbytes = seg.nbytes
            self.report.inflight(self.budget.used)
            for d, part in parts:
                part.ticket = ticket
                await d.add(part)
        if ticket.pending == 0:
            self._done(ticket)

    def split(self, seg: Segment) -> tuple[list[tuple[Delivery, Segment]], int]:
        """The part of `seg` each sink gets (records shared, not copied), and how many records
        go to no sink."""
        if not seg.records:  # it only moves its file's checkpoint: no sink has to acknowledge it
            return [], 0
        ds = self.deliveries
        routes = seg.routes
        if routes is None:
            targets = [d for i, d in enumerate(ds) if seg.mask >> i & 1]
            if len(targets) == 1:
                return [(targets[0], seg)], 0
            return [(d, _view(seg)) for d in targets], 0 if targets else len(seg)
        parts = []
        for i, d in enumerate(ds):
            bit = 1 << i
            picked = [k for k, m in enumerate(routes) if m & bit]
            if len(picked) == len(routes):
                parts.append((d, _view(seg)))
            elif picked:
                parts.append((d, _pick(seg, picked)))
        return parts, routes.count(0)

    def acked(self, batch: Batch) -> None:
        """A delivery's batch was acknowledged."""
        for seg in batch.segments:
            t = seg.ticket
            if t is not None:
                t.pending -= 1
                if t.pending == 0:
                    self._done(t)

    def paused_secs(self) -> float:
        ongoing = time.monotonic() - self._paused_since if self._waiting else 0.0
        return self._paused_secs + ongoing

    def _done(self, t: Ticket) -> None:
        if t.nbytes:
            self.budget.release(t.nbytes)
            self.report.inflight(self.budget.used)
        if t.nrecords:
            self.report.delivered(t.nrecords, t.nbytes)
        if t.on_done is not None:
            t.on_done(t.nrecords)
        else:
            self.ledger.settle(t)

    def _drop_where_full(self, seg: Segment, parts: list[tuple[Delivery, Segment]]
                         ) -> list[tuple[Delivery, Segment]]:
        """`when_full = "drop_newest"`: the user prefers fresh logs to complete ones. Records
        that would wait are counted and dropped: all of them when the shared budget is full,
        else those of each sink whose own budget is; later segments of the file move its
        checkpoint past them."""
        shared_full = not self.budget.has_room(seg.nbytes)
        kept = []
        for d, p in parts:
            if shared_full or not d.budget.has_room(p.nbytes):
                self.report.dropped("buffer_full", len(p))
            else:
                kept.append((d, p))
        return kept

    async def _acquire(self, needs: list[tuple[ByteBudget, int]]) -> None:
        """Take room in every budget of `needs`, holding none while waiting for one."""
        waited = False
        try:
            while (full := next(((b, n) for b, n in needs if not b.has_room(n)), None)) is not None:
                if not waited:
                    waited = True
                    if self._waiting == 0:
                        self._paused_since = time.monotonic()
                    self._waiting += 1
                await full[0].wait_room(full[1])
            for b, n in needs:  # no await since the last check: the room is still there
                b.take(n)
        finally:
            if waited:
                self._waiting -= 1
                if self._waiting == 0:
                    self._paused_secs += time.monotonic() - self._paused_since


def _view(seg: Segment) -> Segment:
    """Another segment over the same records (each sink's batcher may split its own)."""
    return Segment(seg.file_key, seg.path, seg.meta, seg.records, seg.offsets, seg.trace_ids,
                   seg.span_ids, seg.nbytes, seg.safe_offset)


def _pick(seg: Segment, picked: list[int]) -> Segment:
    records = [seg.records[k] for k in picked]
    return Segment(seg.file_key, seg.path, seg.meta, records, [seg.offsets[k] for k in picked],
                   [seg.trace_ids[k] for k in picked], [seg.span_ids[k] for k in picked],
                   sum(map(len, records)), seg.safe_offset)
