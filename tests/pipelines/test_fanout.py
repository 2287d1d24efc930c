"""Fan-out to several sinks: the shared budget, per-sink deliveries and the acknowledgement
ledger that moves checkpoints only past lines every sink they went to acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipelines.delivery import Delivery, DeliverySettings
from pipelines.fanout import AckLedger, Fanout, Ticket
from pipelines.records import Batch, Segment

pytestmark = pytest.mark.timeout(20)


class GateSink:
    """Acknowledges a batch when its gate is open; records what it acknowledged."""

    def __init__(self, name: str, open_: bool = True) -> None:
        self.name = name
        self.gate = asyncio.Event()
        if open_:
            self.gate.set()
        self.records: list[bytes] = []

    async def start(self) -> None: ...

    async def send(self, batch: Batch) -> None:
        await self.gate.wait()
        self.records.extend(batch.iter_records())

    async def close(self, timeout_secs: float) -> None: ...

    def healthy(self) -> bool:
        return True


class Report:
    """Counts what the fan-out reports."""

    def __init__(self) -> None:
        self.drops: dict[str, int] = {}
        self.delivered_records = 0

    def sent(self, sink: str, batch: Batch, secs: float) -> None: ...
    def retried(self, sink: str) -> None: ...
    def failed(self, sink: str) -> None: ...
    def inflight(self, nbytes: int) -> None: ...

    def dropped(self, reason: str, n: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def delivered(self, nrecords: int, nbytes: int) -> None:
        self.delivered_records += nrecords


def seg(key: str, first: int, n: int, *, mask: int = -1, routes: list[int] | None = None,
        size: int = 10) -> Segment:
    s = Segment(key, f"/logs/{key}", {}, mask=mask, routes=routes)
    for i in range(first, first + n):
        s.records.append(f"{key}{i}".encode().ljust(size, b"."))
        s.offsets.append(i * 100)
        s.trace_ids.append(None)
        s.span_ids.append(None)
        s.nbytes += size
    s.safe_offset = (first + n) * 100
    return s


def make(sinks: list[GateSink], *, limit: int = 1 << 20, sink_limit: int = 1 << 20,
         max_records: int = 1000, when_full: str = "block") -> tuple[Fanout, dict[str, int], Report]:
    commits: dict[str, int] = {}
    report = Report()
    ds = DeliverySettings(max_records=max_records, max_bytes=1 << 20, linger_secs=0.01, max_in_flight=1,
                          retry_initial_secs=0.01, retry_max_secs=0.05, memory_limit_bytes=sink_limit)
    deliveries = [Delivery(s, ds, report, lambda exc: None) for s in sinks]
    fan = Fanout(deliveries, limit, when_full, lambda k, o, p: commits.__setitem__(k, o), report)
    return fan, commits, report


async def until(cond: Any, what: str) -> None:
    """Poll `cond` until it holds; fail naming `what` after 10 s."""
    try:
        async with asyncio.timeout(10):
            while not cond():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting for: {what}")


@contextlib.asynccontextmanager
async def running(fan: Fanout) -> AsyncIterator[Fanout]:
    """The deliveries' senders and linger timers run while inside."""
    tasks = [t for d in fan.deliveries for t in d.tasks()]
    try:
        yield fan
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_ledger_commits_only_a_fully_acknowledged_prefix() -> None:
    """Out of order, a ticket done after an undone one of the same file commits nothing."""
    commits: list[tuple[str, int]] = []
    ledger = AckLedger(lambda k, o, p: commits.append((k, o)))
    a1, a2, b1, a3 = (Ticket("a", "/a", 100, pending=1), Ticket("a", "/a", 200, pending=2),
                      Ticket("b", "/b", 50, pending=1), Ticket("a", "/a", 300, pending=1))
    for t in (a1, a2, b1, a3):
        ledger.open(t)
    for t in (a2, b1, a3):
        t.pending = 0
        ledger.settle(t)
    assert commits == [("b", 50)]
    assert ledger.in_flight("a") and not ledger.in_flight("b")
    a1.pending = 0
    ledger.settle(a1)
    assert commits == [("b", 50), ("a", 300)] and not ledger.in_flight("a")


async def test_checkpoint_waits_for_every_sink_of_a_line() -> None:
    """A line sent to two sinks is committed only once the slower one acknowledged it."""
    fast, slow = GateSink("fast"), GateSink("slow", open_=False)
    fan, commits, _ = make([fast, slow])
    async with running(fan):
        await fan.emit(seg("f", 0, 3))
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: len(fast.records) == 3, "fast sink got the records")
        assert commits == {} and fan.budget.used == 30
        slow.gate.set()
        await until(lambda: commits.get("f") == 300, "checkpoint after both sinks")
        assert slow.records == fast.records and fan.budget.used == 0


async def test_records_go_only_to_the_sinks_of_their_mask() -> None:
    """Per-record masks split a segment: each sink gets its records, unrouted ones are counted."""
    a, b = GateSink("a"), GateSink("b")
    fan, commits, report = make([a, b])
    async with running(fan):
        await fan.emit(seg("f", 0, 4, routes=[0b01, 0b11, 0b10, 0]))
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: commits.get("f") == 400, "all routed records acknowledged")
        assert [r[:2] for r in a.records] == [b"f0", b"f1"]
        assert [r[:2] for r in b.records] == [b"f1", b"f2"]
        assert report.drops == {"unrouted": 1} and report.delivered_records == 3


async def test_a_stalled_sink_holds_back_only_its_files() -> None:
    """With one sink's budget full, files routed to it wait; a file routed elsewhere flows on."""
    ok, down = GateSink("ok"), GateSink("down", open_=False)
    fan, commits, _ = make([ok, down], limit=1000, sink_limit=200, max_records=5)

    async def feed(key: str, mask: int, n: int) -> None:
        for i in range(n):
            await fan.emit(seg(key, i * 5, 5, mask=mask))

    blocked = asyncio.create_task(feed("to-down", 0b10, 20))
    async with running(fan):
        try:
            await until(lambda: fan.paused_secs() > 0, "the file routed to the stalled sink waits")
            await asyncio.wait_for(feed("to-ok", 0b01, 20), 5)
            await until(lambda: commits.get("to-ok") == 10000, "the other file is committed to its end")
            assert not blocked.done() and "to-down" not in commits
            assert fan.deliveries[1].budget.used <= 200
            down.gate.set()
            await asyncio.wait_for(blocked, 5)
            await until(lambda: commits.get("to-down") == 10000, "the stalled file catches up")
            assert len(down.records) == 100 and len(ok.records) == 100
        finally:
            blocked.cancel()


async def test_split_pieces_all_count_before_the_checkpoint_moves() -> None:
    """A segment split across batches is one ticket with one piece per batch."""
    a = GateSink("a", open_=False)
    fan, commits, _ = make([a], max_records=2)
    async with running(fan):
        await fan.emit(seg("f", 0, 5))
        await fan.deliveries[0].flush()
        assert commits == {}
        a.gate.set()
        await until(lambda: commits.get("f") == 500, "every piece acknowledged")
        assert len(a.records) == 5


async def test_drop_newest_drops_only_for_the_full_sink() -> None:
    """when_full = drop_newest: a full sink loses the new records (counted), the others get them."""
    ok, down = GateSink("ok"), GateSink("down", open_=False)
    fan, commits, report = make([ok, down], sink_limit=30, when_full="drop_newest")
    async with running(fan):
        await fan.emit(seg("f", 0, 3))   # fills both budgets (30 bytes each)
        await until(lambda: len(ok.records) == 3, "ok acknowledged (its budget is free again)")
        await fan.emit(seg("f", 3, 3))   # "down" is full: dropped there, sent to "ok"
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: len(ok.records) == 6, "ok got every record")
        assert report.drops == {"buffer_full": 3}
        assert commits == {}  # the first segment still waits for "down"
        down.gate.set()
        await until(lambda: commits.get("f") == 600, "committed past the dropped records")
        assert len(down.records) == 3


async def test_files_waiting_for_a_stalled_sink_hold_no_shared_room() -> None:
    """Many files routed to a stalled sink, each waiting for that sink's budget, must not hold
    the shared budget meanwhile: a file routed to another sink still flows."""
    ok, down = GateSink("ok"), GateSink("down", open_=False)
    fan, commits, _ = make([ok, down], limit=100, sink_limit=20)
    async with running(fan):
        blocked = [asyncio.create_task(fan.emit(seg(f"down{i}", 0, 1, mask=0b10))) for i in range(12)]
        try:
            # two segments fill the stalled sink's budget; the ten others wait for it
            await until(lambda: fan._waiting == 10, "ten files wait for the stalled sink")
            await asyncio.wait_for(fan.emit(seg("to-ok", 0, 1, mask=0b01)), 5)
            await fan.deliveries[0].flush()
            await until(lambda: commits.get("to-ok") == 100, "the file routed to ok is committed")
            down.gate.set()
            await asyncio.wait_for(asyncio.gather(*blocked), 5)
            for d in fan.deliveries:
                await d.flush()
            await until(lambda: len(commits) == 13, "every stalled file catches up")
            assert fan.budget.used == 0 and all(d.budget.used == 0 for d in fan.deliveries)
        finally:
            for t in blocked:
                t.cancel()


async def test_an_empty_segment_waits_for_no_sink() -> None:
    """A segment without records (blank or held lines) only moves its file's checkpoint: a file
    whose records all go to one sink is not held back by a stalled sink none of them go to."""
    ok, down = GateSink("ok"), GateSink("down", open_=False)
    fan, commits, _ = make([ok, down])
    async with running(fan):
        await fan.emit(seg("f", 0, 1, routes=[0b01]))
        await fan.emit(seg("f", 2, 0, routes=[]))     # per-record routing, no record
        await fan.emit(seg("g", 0, 0, mask=0b11))     # one mask for the file, no record
        await fan.emit(seg("f", 2, 1, routes=[0b01]))
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: commits.get("f") == 300, "the file's checkpoint past every record")
        await until(lambda: commits.get("g") == 0, "the empty file's checkpoint")
        assert down.records == [] and len(ok.records) == 2


async def test_offer_never_waits_and_moves_no_checkpoint() -> None:
    """Records from no file (metric samples): with the shared budget full `offer` takes nothing
    and says so at once; with room they go to their sinks, `on_done` hears of the
    acknowledgement, no checkpoint is committed, and the budget comes back."""
    sink = GateSink("a", open_=False)
    fan, commits, report = make([sink], limit=100)
    done: list[int] = []
    async with running(fan):
        await fan.emit(seg("file", 0, 10))  # 100 bytes: the shared budget is full
        assert not await fan.offer(seg("metrics:x:1", 0, 3), done.append)
        assert fan.budget.used == 100 and report.drops == {}
        sink.gate.set()
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: fan.budget.used == 0, "the file's lines acknowledged")
        assert await fan.offer(seg("metrics:x:2", 0, 3), done.append)
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: done == [3], "the offered records acknowledged")
        assert fan.budget.used == 0 and commits == {"file": 1000}
        assert sink.records[-3:] == [f"metrics:x:2{i}".encode().ljust(10, b".") for i in range(3)]


async def test_offer_skips_only_the_sink_whose_budget_is_full() -> None:
    """A sink whose own budget is full misses the offered records (counted as buffer_full);
    the other sink gets them."""
    a, b = GateSink("a"), GateSink("b", open_=False)
    fan, _, report = make([a, b], limit=1000, sink_limit=50)
    done: list[int] = []
    async with running(fan):
        await fan.emit(seg("file", 0, 5, mask=0b10))  # 50 bytes for b only: b's budget is full
        assert await fan.offer(seg("metrics:x:1", 0, 3), done.append)
        for d in fan.deliveries:
            await d.flush()
        await until(lambda: done == [3], "sink a acknowledged")
        assert report.drops == {"buffer_full": 3} and len(a.records) == 3 and b.records == []
        b.gate.set()
