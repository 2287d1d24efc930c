"""Replay of a dead-letter store through a sink (fakes for the error paths; the real Kafka case
is tests/integration/test_deadletter_replay.py): interrupted replays lose nothing, retries,
batches that keep what a destination template reads, an agent writing while a replay runs."""

from __future__ import annotations

import asyncio
import fcntl
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


class HalfDeadSink(CollectSink):
    """Dead-letters the lines whose number is odd (before acknowledging, as real sinks do)."""

    def __init__(self, dead: DeadLetter) -> None:
        super().__init__()
        self.dead = dead

    async def send(self, batch: Batch) -> None:
        self.attempts += 1
        odd = [(Reason.REJECTED, "odd", seg.path, off, rec) for seg in batch.segments
               for off, rec in zip(seg.offsets, seg.records, strict=True)
               if int(orjson.loads(rec)["message"].split()[1]) % 2]
        self.dead.write(odd)
        self.batches.append(batch)
        self.records.extend(orjson.loads(r) for r in batch.iter_records()
                            if int(orjson.loads(r)["message"].split()[1]) % 2 == 0)


async def test_while_another_process_replays_the_agent_retries_its_dead_letters(tmp_path: Path) -> None:
    """A replay (another process: its exclusive lock) holds the store: the agent's batches with
    dead letters are retried, not acknowledged, not lost; once the replay ends they go through,
    each line delivered or dead-lettered once."""
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    s = fast_settings(tmp_path, [str(log)])
    sink = HalfDeadSink(DeadLetter(layout.dead_letter_file(s.data_dir, "collect"), "collect"))
    async with running(Agent(s, sink)) as agent:
        await wait_until(lambda: len(sink.records) == 25, what="the first lines settled")
        other = os.open(layout.dead_letter_dir(s.data_dir) / deadletter.LOCK_FILE, os.O_RDWR)
        fcntl.flock(other, fcntl.LOCK_EX)  # as `tailship deadletter replay` does, elsewhere
        try:
            with open(log, "a") as f:
                f.write("".join(f"line {i}\n" for i in range(50, 100)))
            await wait_until(lambda: agent.summary().events.get("sink_retry", 0) >= 2,
                             what="dead-letter writes refused during the replay")
            assert len(sink.records) == 25
        finally:
            os.close(other)
        await wait_until(lambda: len(sink.records) == 50, what="the rest settled after the replay")
    dead = [int(orjson.loads(obj["record"])["message"].split()[1])
            for p in segments(sink.dead.path) for _, obj in read_segment(p) if obj is not None]
    assert sorted(dead) == list(range(1, 100, 2))
    assert sorted(int(r["message"].split()[1]) for r in sink.records) == list(range(0, 100, 2))
