"""Replay of a dead-letter store through a sink (fakes for the error paths; the real Kafka case
is tests/integration/test_deadletter_replay.py): interrupted replays lose nothing, retries,
batches that keep what a destination template reads, the agent's lock."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import orjson
import pytest

from agent.runtime import Agent
from pipelines import deadletter, layout
from pipelines.deadletter import DeadLetter, DeadLetterSettings, Reason, read_segment, segments
from pipelines.errors import FatalSinkError
from pipelines.records import Batch
from pipelines.replay import ReplayOptions, ReplayReport, batches, replay
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)


def fill(tmp_path: Path, n: int) -> DeadLetter:
    dl = DeadLetter(layout.dead_letter_file(tmp_path, "collect"), "collect",
                    DeadLetterSettings(1 << 20, 4096))
    for i in range(0, n, 5):
        dl.write([(Reason.MISSING_DESTINATION, "no topic", f"/var/log/{i // 20}.log", j,
                   orjson.dumps({"seq": j, "kubernetes": {"namespace": f"ns{i // 20}"}}), f"ns{i // 20}")
                  for j in range(i, i + 5)])
    return dl


def held(dl: DeadLetter) -> list[int]:
    return [orjson.loads(obj["record"])["seq"] for p in segments(dl.path) for _, obj in read_segment(p)
            if obj is not None]


class FailingAfter(CollectSink):
    """Accepts `ok` batches, then refuses for good."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    async def send(self, batch: Batch) -> None:
        if len(self.batches) >= self.ok:
            raise FatalSinkError(self.name, "refused (test)")
        await super().send(batch)


async def test_an_interrupted_replay_loses_nothing_and_says_what_it_may_resend(tmp_path: Path) -> None:
    """The sink fails for good part way: segments fully sent are removed, the one being sent
    stays whole; a second replay sends the rest; together every record arrived, the duplicates
    are at most what the first replay called unsettled."""
    dl = fill(tmp_path, 200)
    nseg = len(segments(dl.path))
    opts = ReplayOptions(max_records=10)
    first = FailingAfter(ok=7)
    r1 = await replay(first, dl, ReplayReport(), opts)
    assert r1.error and "refused (test)" in r1.error
    assert 0 < r1.segments_done < nseg and r1.unsettled > 0
    left = held(dl)
    sent1 = [r["seq"] for r in first.records]
    assert sorted(set(sent1) | set(left)) == list(range(200))  # nothing lost
    second = CollectSink()
    r2 = await replay(second, DeadLetter(dl.path, "collect"), ReplayReport(), opts)
    assert not r2.error and r2.accepted == len(left) and held(dl) == []
    sent2 = [r["seq"] for r in second.records]
    dups = len(sent1) + len(sent2) - 200
    assert sorted(set(sent1 + sent2)) == list(range(200)) and 0 <= dups <= r1.unsettled
    print(f"interrupted replay: 200 records, {len(sent1)} sent before the failure "
          f"({r1.unsettled} unsettled), {len(sent2)} on the second replay, {dups} duplicates")


async def test_a_sink_down_for_a_while_is_retried_then_everything_goes(tmp_path: Path) -> None:
    dl = fill(tmp_path, 30)
    sink = CollectSink()
    sink.down = True
    task = asyncio.create_task(replay(sink, dl, ReplayReport(), ReplayOptions(retry_initial_secs=0.01,
                                                                              retry_max_secs=0.05)))
    await wait_until(lambda: sink.attempts >= 3, what="retries")
    sink.down = False
    result = await asyncio.wait_for(task, 10)
    assert result.accepted == 30 and not result.error and held(dl) == []
    assert sorted(r["seq"] for r in sink.records) == list(range(30))


async def test_a_sink_down_past_the_timeout_stops_the_replay_and_keeps_the_store(tmp_path: Path) -> None:
    dl = fill(tmp_path, 30)
    sink = CollectSink()
    sink.down = True
    opts = ReplayOptions(retry_initial_secs=0.01, retry_max_secs=0.02, timeout_secs=0.1)
    result = await replay(sink, dl, ReplayReport(), opts)
    assert "connection refused" in result.error and result.accepted == 0
    assert sorted(held(dl)) == list(range(30))


def test_batches_keep_file_fields_trace_context_and_limits() -> None:
    objs = [{"file": "/var/log/containers/p_ns-a_c-" + "0" * 64 + ".log", "offset": i,
             "record": orjson.dumps({"seq": i, "trace_id": "ab" * 16} if i % 2 else {"seq": i}).decode()}
            for i in range(5)]
    objs += [{"file": "/other.log", "offset": 9,
              "record": orjson.dumps({"seq": 9, "kubernetes": {"namespace": "from-record"}}).decode()}]
    [b1, b2] = list(batches(objs, ReplayOptions(max_records=4), 7))
    assert (b1.seq, b1.nrecords, b2.seq, b2.nrecords) == (7, 4, 8, 2)
    seg = b1.segments[0]
    assert seg.meta == {"kubernetes": {"namespace": "ns-a", "pod": "p", "container": "c",
                                       "container_id": "0" * 64}}
    assert seg.offsets == [0, 1, 2, 3] and seg.trace_ids == [None, "ab" * 16, None, "ab" * 16]
    assert [s.meta for s in b2.segments] == [seg.meta, {"kubernetes": {"namespace": "from-record"}}]


async def test_a_running_agent_holds_the_store_and_waits_for_a_replay(tmp_path: Path, caplog) -> None:
    log = tmp_path / "a.log"
    log.write_text("line\n")
    s = fast_settings(tmp_path, [str(log)])
    store = layout.dead_letter_dir(s.data_dir)
    caplog.set_level(logging.WARNING, "tailship.agent")
    replaying = deadletter.hold(store, exclusive=True)
    assert replaying is not None
    agent = Agent(s, CollectSink())
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: any("waiting for it to finish" in r.getMessage() for r in caplog.records),
                         what="the agent saying it waits for the replay")
        assert not agent.ready
        os.close(replaying)
        await wait_until(lambda: agent.ready, what="the agent started after the replay")
        assert deadletter.hold(store, exclusive=True) is None  # a replay now is refused
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    fd = deadletter.hold(store, exclusive=True)  # released at the stop
    assert fd is not None
    os.close(fd)


async def test_the_agent_releases_the_store_when_it_stops(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("line\n")
    s = fast_settings(tmp_path, [str(log)])
    sink = CollectSink()
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 1, what="the line shipped")
        assert deadletter.hold(layout.dead_letter_dir(s.data_dir), exclusive=True) is None
    fd = deadletter.hold(layout.dead_letter_dir(s.data_dir), exclusive=True)
    assert fd is not None
    os.close(fd)
