"""The agent's long-lived tasks are supervised (an unexpected exception is logged, counted in
tailship_internal_errors_total{task} and the task restarted), and /readyz is a watchdog: not
ready while a sink has records pending and nothing acknowledged, or while the data directory
cannot be written. Faults are injected (a sink or a store that raises): unit tests of error
paths; the real full and read-only disks are in tests/faults/test_disk.py."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from agent.runtime import Agent
from pipelines.records import Batch
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)


def internal_errors(agent: Agent, task: str) -> float:
    value = agent.metrics.registry.get_sample_value("tailship_internal_errors_total", {"task": task})
    return value or 0.0


class RaisingOnce(CollectSink):
    """Its first send raises an error no sink should (a bug), then it takes everything."""

    async def send(self, batch: Batch) -> None:
        if self.attempts == 0:
            self.attempts += 1
            raise KeyError("a bug in the sink")
        await super().send(batch)


class Hanging(CollectSink):
    """Its sends wait until `go` is set (a send that never returns: a hung connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def send(self, batch: Batch) -> None:
        await self.go.wait()
        await super().send(batch)


def failing_once(real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, except that its first call raises (a bug)."""
    calls = 0

    def call(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError(f"a bug in {real.__name__}")
        return real(*args, **kw)

    return call


async def test_an_exception_in_a_sender_is_logged_counted_and_the_batch_arrives(tmp_path, caplog) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    sink = RaisingOnce()
    with caplog.at_level(logging.ERROR, "tailship.supervise"):
        async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as agent:
            await wait_until(lambda: len(sink.records) == 50, what="every line delivered")
            assert internal_errors(agent, "sender") == 1
            assert 'tailship_internal_errors_total{task="sender"} 1.0' in \
                generate_latest(agent.metrics.registry).decode()
    assert sink.messages() == [f"line {i}" for i in range(50)]
    tracebacks = [r for r in caplog.records if r.exc_info and "internal error in sender" in r.getMessage()]
    assert len(tracebacks) == 1 and "a bug in the sink" in caplog.text


async def test_pending_with_no_acknowledgement_turns_readiness_503_with_the_reason(tmp_path) -> None:
    """A send that hangs (no error, no retry: the old `failing` check never saw it)."""
    log = tmp_path / "app.log"
    log.write_text("one\n")
    s = fast_settings(tmp_path, [str(log)])
    s.metrics = dataclasses.replace(s.metrics, ready_failing_secs=0.2)
    sink = Hanging()
    async with running(Agent(s, sink)) as agent:
        await wait_until(lambda: "failing" in agent.readiness()[1], what="not ready")
        ready, why = agent.readiness()
        assert not ready, why
        assert why.startswith("sink collect failing: 1 records pending, nothing acknowledged for "), why
        sink.go.set()
        await wait_until(lambda: len(sink.records) == 1, what="delivered")
        assert agent.readiness() == (True, "ready")


async def test_an_unwritable_data_dir_is_not_ready_until_a_write_succeeds(tmp_path, monkeypatch) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as agent:
        await wait_until(lambda: len(sink.records) == 1 and agent.checkpoints.age() is not None,
                         what="first checkpoint written")
        real = agent.checkpoints.persist

        def refuse() -> bool:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(agent.checkpoints, "persist", refuse)
        with log.open("a") as f:
            f.write("two\n")
        await wait_until(lambda: not agent.readiness()[0], what="not ready")
        assert agent.readiness()[1] == f"data directory {agent.s.data_dir} cannot be written: " \
                                       "Read-only file system"
        monkeypatch.setattr(agent.checkpoints, "persist", real)
        await wait_until(lambda: agent.readiness()[0], what="ready again")


async def test_the_persister_and_discovery_are_restarted_after_a_bug(tmp_path, monkeypatch) -> None:
    """One unexpected exception in each: counted under its task, and both go on (the file is
    found and shipped, its checkpoint written)."""
    log = tmp_path / "app.log"
    log.write_text("one\n")
    sink = CollectSink()
    agent = Agent(fast_settings(tmp_path, [str(log)]), sink)
    for obj, name in ((agent.source, "discover"), (agent.checkpoints, "persist")):
        monkeypatch.setattr(obj, name, failing_once(getattr(obj, name)))
    async with running(agent):
        size = log.stat().st_size
        await wait_until(lambda: [e.offset for e in agent.checkpoints.entries.values()] == [size]
                         and agent.checkpoints.age() is not None and internal_errors(agent, "persist") == 1,
                         what="the checkpoint written after the persister's restart")
        assert internal_errors(agent, "discovery") == 1
    assert sink.messages() == ["one"]


async def test_a_disk_buffer_that_cannot_deliver_turns_readiness_503(tmp_path) -> None:
    """With `ack = "on_write"` the batches are acknowledged once on disk; the watchdog looks
    behind the buffer too, so a sink that is down is still seen."""
    log = tmp_path / "app.log"
    log.write_text("one\n")
    s = fast_settings(tmp_path, [str(log)])
    s.buffer = dataclasses.replace(s.buffer, type="disk")
    s.metrics = dataclasses.replace(s.metrics, ready_failing_secs=0.2)
    sink = CollectSink()
    sink.down = True
    async with running(Agent(s, sink)) as agent:
        await wait_until(lambda: "failing" in agent.readiness()[1], what="not ready")
        why = agent.readiness()[1]
        assert why.startswith("sink collect failing: 1 batches in its disk buffer, nothing delivered"), why
        assert agent.unacked == 0  # acknowledged on write: only the buffer's clock sees it
        sink.down = False
        await wait_until(lambda: len(sink.records) == 1, what="delivered")
        await wait_until(lambda: agent.readiness()[0], what="ready again")
