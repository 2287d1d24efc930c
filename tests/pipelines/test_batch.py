"""Batching and the byte budget (acknowledgements: test_fanout.py)."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.batch import Batcher, ByteBudget, split_segment
from pipelines.records import Batch, Segment

pytestmark = pytest.mark.timeout(10)


def seg(key: str, offsets: list[int], safe: int, size: int = 10) -> Segment:
    s = Segment(key, f"/logs/{key}", {})
    for o in offsets:
        s.records.append(b"x" * size)
        s.offsets.append(o)
        s.trace_ids.append(None)
        s.span_ids.append(None)
        s.nbytes += size
    s.safe_offset = safe
    return s


def test_split_segment_keeps_safe_offset_below_the_rest():
    """The head's safe offset never passes a record that went to the tail."""
    head, tail = split_segment(seg("f", [0, 10, 20, 30], safe=40), 2)
    assert head.offsets == [0, 10] and tail.offsets == [20, 30]
    assert head.safe_offset == 20 and tail.safe_offset == 40
    assert head.nbytes + tail.nbytes == 40


def test_split_segment_with_out_of_order_joined_record():
    """A joined record emitted late (lower offset) bounds the head's safe offset."""
    head, _ = split_segment(seg("f", [50, 10, 60], safe=70), 1)
    assert head.safe_offset == 10


async def test_batcher_closes_on_records_bytes_and_linger():
    """Batches close at max_records (splitting segments), at max_bytes, and after linger."""
    shipped: list[Batch] = []

    async def ship(b: Batch) -> None:
        shipped.append(b)

    b = Batcher(max_records=3, max_bytes=1000, linger_secs=0.05, ship=ship)
    await b.add(seg("a", [0, 1, 2, 3, 4], 5))
    assert [x.nrecords for x in shipped] == [3]
    assert shipped[0].segments[-1].safe_offset == 3
    await b.add(seg("b", [0], 1, size=2000))
    assert [x.nrecords for x in shipped] == [3, 3]
    task = asyncio.create_task(b.linger())
    await b.add(seg("c", [0], 1))
    try:
        async with asyncio.timeout(5):
            while len(shipped) < 3:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert [(x.file_key, x.safe_offset) for x in shipped[2].segments] == [("c", 1)]
    assert [x.seq for x in shipped] == [1, 2, 3]


async def test_byte_budget_blocks_until_release():
    """A taker waits while the budget is spent and proceeds when bytes come back."""
    budget = ByteBudget(100)
    await budget.acquire(80)
    waiter = asyncio.create_task(budget.acquire(30))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    budget.release(80)
    await asyncio.wait_for(waiter, 2)
    assert budget.used == 30


async def test_byte_budget_admits_oversized_item_when_empty():
    """An item larger than the whole budget still passes once nothing else is in flight."""
    budget = ByteBudget(10)
    await asyncio.wait_for(budget.acquire(50), 1)
    assert budget.used == 50
