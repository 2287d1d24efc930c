"""TaskSupervisor: an unexpected exception is logged with its traceback, counted by task and the
work run again after a backoff; expected errors and cancellation pass through. A Delivery's
sender that raises loses no batch and keeps the queue's accounting whole."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipelines.delivery import Delivery, DeliverySettings
from pipelines.errors import FatalSinkError
from pipelines.records import Batch, Segment
from pipelines.supervise import Every, Stall, TaskSupervisor

pytestmark = pytest.mark.timeout(10)


def counted() -> tuple[TaskSupervisor, list[str]]:
    seen: list[str] = []
    return TaskSupervisor(seen.append, initial_secs=0.001, max_secs=0.01), seen


async def test_an_exception_is_logged_counted_and_the_work_runs_again(caplog) -> None:
    """Two failures, then the run returns: two counts under the fixed task name, two tracebacks."""
    sup, seen = counted()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"bug {calls}")

    with caplog.at_level(logging.ERROR, "tailship.supervise"):
        await sup.keep("persist", work)
    assert calls == 3 and seen == ["persist", "persist"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info and "internal error in persist" in r.getMessage()
                                    for r in errors)


async def test_expected_errors_and_cancellation_pass_through() -> None:
    sup, seen = counted()

    async def fatal() -> None:
        raise FatalSinkError("s", "no such topic")

    with pytest.raises(FatalSinkError):
        await sup.keep("sender", fatal, expected=(FatalSinkError,))
    task = sup.spawn("discovery", lambda: asyncio.sleep(3600), "t")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == []


def test_stall_and_every() -> None:
    st = Stall()
    assert st.secs(1e9) == 0.0
    st.pending()
    since = st.since
    assert since is not None and st.secs(since + 5) == 5
    st.progressed(still_pending=False)
    assert st.since is None
    every = Every(3600)
    assert every.due() and not every.due()


class FlakySink:
    """Raises an unexpected error at its first send, then takes everything."""

    name = "flaky"

    def __init__(self) -> None:
        self.attempts = 0
        self.got: list[Batch] = []

    async def start(self) -> None: ...
    async def close(self, timeout_secs: float) -> None: ...
    def healthy(self) -> bool:
        return True

    async def send(self, batch: Batch) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise OSError(28, "No space left on device")
        self.got.append(batch)


class Report:
    def sent(self, sink: str, batch: Batch, secs: float) -> None: ...
    def retried(self, sink: str) -> None: ...
    def failed(self, sink: str) -> None: ...


async def test_a_sender_that_raises_sends_the_same_batch_again() -> None:
    """The batch arrives once, after one counted failure; `join` returns (task_done balanced)
    and the budget is released."""
    sup, seen = counted()
    sink = FlakySink()
    s = DeliverySettings(max_records=10, max_bytes=1 << 20, linger_secs=0.01, max_in_flight=1,
                         retry_initial_secs=0.001, retry_max_secs=0.01, memory_limit_bytes=1 << 20)
    d = Delivery(sink, s, Report(), lambda exc: None, task_supervisor=sup)  # type: ignore[arg-type]
    acked: list[Batch] = []
    d.on_acked = acked.append
    tasks = d.tasks()
    try:
        seg = Segment("k", "/x.log", {}, [b'{"m":1}'], [0], [None], [None], 7, 8)
        await d.budget.acquire(seg.nbytes)
        await d.add(seg)
        await d.flush()
        await asyncio.wait_for(d.join(), 5)
        assert seen == ["sender"] and sink.attempts == 2
        assert len(sink.got) == 1 and acked == sink.got
        assert d.unacked == 0 and d.budget.used == 0 and d.stall.since is None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
