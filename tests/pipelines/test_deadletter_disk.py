"""Dead letters on a full or read-only disk (a small tmpfs; tests run as root): the write is
refused as retriable, nothing is kept half-written, nothing is lost, and it succeeds once the
disk takes writes again; the agent backpressures meanwhile instead of dropping or dying."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import orjson
import pytest

from agent.runtime import Agent
from pipelines import layout
from pipelines.deadletter import DeadLetter, DeadLetterSettings, Reason, read_segment, segments
from pipelines.errors import RetriableSinkError
from pipelines.records import Batch
from tests.agent.filesource import test_checkpoints_disk as disk
from tests.conftest import fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(60)
small_disk = disk.small_disk  # the fixture: a 256 KiB tmpfs
fill = disk.fill


def entries(start: int, n: int, size: int = 2000) -> list[tuple]:
    return [(Reason.MISSING_DESTINATION, "no topic", "/a.log", i,
             orjson.dumps({"seq": i, "pad": "x" * size}), "logs-a") for i in range(start, start + n)]


def stored(active: Path) -> list[int]:
    return [orjson.loads(obj["record"])["seq"] for p in segments(active) for _, obj in read_segment(p)
            if obj is not None]


def test_a_full_disk_refuses_the_write_whole_then_takes_it_when_space_returns(small_disk: Path) -> None:
    dl = DeadLetter(small_disk / "data" / "deadletter" / "kafka.ndjson", "kafka",
                    DeadLetterSettings(1 << 20, 1 << 20))
    dl.write(entries(0, 10))
    before = dl.path.read_bytes()
    pages = fill(small_disk)
    pages.pop().unlink()  # one page free: less than the write needs
    with pytest.raises(RetriableSinkError) as err:
        dl.write(entries(10, 20))
    assert str(dl.path) in str(err.value) and "No space left on device" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert dl.path.read_bytes() == before  # the part written was taken back
    for p in pages:
        p.unlink()
    assert dl.write(entries(10, 20)) == 20
    assert stored(dl.path) == list(range(30))
    print(f"dead letters on a full disk: 10 written, 20 refused whole ({len(before)} bytes kept), "
          f"{len(stored(dl.path))} held once space returned")


def test_a_read_only_disk_refuses_the_write_then_takes_it_back_read_write(small_disk: Path) -> None:
    dl = DeadLetter(small_disk / "deadletter" / "kafka.ndjson", "kafka")
    dl.write(entries(0, 3))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(RetriableSinkError) as err:
            dl.write(entries(3, 3))
        assert "Read-only file system" in str(err.value) and str(dl.path) in str(err.value)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    dl.write(entries(3, 3))
    assert stored(dl.path) == list(range(6))


class HalfDeadSink:
    """Dead-letters every record with an odd sequence number (before acknowledging the batch,
    as the real sinks do), keeps the others."""

    name = "half"

    def __init__(self, dead: DeadLetter) -> None:
        self.dead = dead
        self.kept: list[int] = []
        self.attempts = 0

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        self.attempts += 1
        odd, even = [], []
        for seg in batch.segments:
            for off, rec in zip(seg.offsets, seg.records, strict=True):
                seq = int(orjson.loads(rec)["message"].split()[1])
                (odd if seq % 2 else even).append((Reason.REJECTED, "odd", seg.path, off, rec, "x"))
        self.dead.write(odd)  # raises RetriableSinkError on a full disk: the batch is retried
        self.kept.extend(int(orjson.loads(e[4])["message"].split()[1]) for e in even)

    async def close(self, timeout_secs: float) -> None:
        pass

    def healthy(self) -> bool:
        return True


async def test_the_agent_backpressures_on_a_full_dead_letter_disk_and_loses_nothing(
        small_disk: Path, tmp_path: Path) -> None:
    """The data directory fills up: the sink's dead-letter writes fail, the batch is retried (the
    agent keeps running, nothing acknowledged); once space returns every line is either delivered
    or dead-lettered, each exactly once."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i} {'p' * 200}\n" for i in range(200)))
    s = fast_settings(tmp_path, [str(log)])
    s.data_dir = str(small_disk / "data")
    sink = HalfDeadSink(DeadLetter(layout.dead_letter_file(s.data_dir, "half"), "half"))
    async with running(Agent(s, sink)) as agent:
        await wait_until(lambda: len(sink.kept) == 100, what="first 200 lines settled")
        pages = fill(small_disk)
        with open(log, "a") as f:
            f.write("".join(f"line {i} {'p' * 200}\n" for i in range(200, 400)))
        await wait_until(lambda: agent.summary().events.get("sink_retry", 0) >= 3,
                         what="dead-letter writes refused and retried")
        retries = agent.summary().events["sink_retry"]
        assert len(sink.kept) == 100  # nothing of the new lines acknowledged without its dead letters
        for p in pages:
            p.unlink()
        await wait_until(lambda: len(sink.kept) == 200, timeout=20, what="all lines settled")
    dead = stored_lines(sink.dead.path)
    assert sorted(sink.kept) == list(range(0, 400, 2))
    assert sorted(dead) == list(range(1, 400, 2))  # each once: a refused write left nothing behind
    print(f"full dead-letter disk: 400 lines written, {len(sink.kept)} delivered, {len(dead)} "
          f"dead-lettered, 0 duplicates, {retries} retries during the fault")


def stored_lines(active: Path) -> list[int]:
    return [int(orjson.loads(obj["record"])["message"].split()[1])
            for p in segments(active) for _, obj in read_segment(p) if obj is not None]
