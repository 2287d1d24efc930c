"""The dead-letter store: rotation, the size cap (oldest segment dropped, counted, logged),
writes cut short, torn lines, the lock, the metrics it reports, its options."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

import orjson
import pytest

from agent.config import settings_from_dict
from agent.metrics import Metrics, MetricsReport
from agent.supervisor.worker import worker_settings
from pipelines import deadletter
from pipelines.deadletter import DeadLetter, DeadLetterSettings, Reason, read_segment, segments
from pipelines.errors import ConfigError, RetriableSinkError

pytestmark = pytest.mark.timeout(30)


class Tally:
    """A DeadLetterReport that keeps what it is told."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], int] = {}
        self.dropped: list[tuple[str, int, int]] = []

    def deadlettered(self, sink: str, reason: str, n: int) -> None:
        self.written[(sink, reason)] = self.written.get((sink, reason), 0) + n

    def deadletter_dropped(self, sink: str, records: int, nbytes: int) -> None:
        self.dropped.append((sink, records, nbytes))


def entry(i: int, size: int = 100, reason: Reason = Reason.MISSING_DESTINATION) -> tuple:
    rec = orjson.dumps({"seq": i, "pad": "x" * size})
    return (reason, "topic 'logs-a' does not exist", "/var/log/containers/a.log", i, rec, "logs-a")


def seqs(active: Path) -> list[int]:
    return [orjson.loads(obj["record"])["seq"] for p in segments(active) for _, obj in read_segment(p)
            if obj is not None]


def store(tmp_path: Path, max_bytes: int, segment_bytes: int, report: Tally | None = None) -> DeadLetter:
    return DeadLetter(tmp_path / "deadletter" / "kafka.ndjson", "kafka",
                      DeadLetterSettings(max_bytes, segment_bytes), report)


def test_segments_are_sealed_at_segment_bytes_and_read_back_in_order(tmp_path: Path) -> None:
    """Past segment_bytes the written file is sealed as <sink>.<n>.ndjson; every entry stays,
    read back oldest first; each segment is at most one entry over segment_bytes."""
    dl = store(tmp_path, 1 << 20, 4096)
    for i in range(100):
        dl.write([entry(i)])
    files = segments(dl.path)
    assert len(files) > 3
    assert files[-1] == dl.path and files[0].name == "kafka.00000001.ndjson"
    assert all(p.stat().st_size <= 4096 for p in files)
    assert seqs(dl.path) == list(range(100))
    assert dl.held_bytes == sum(p.stat().st_size for p in files)


def test_at_the_cap_the_oldest_segment_is_dropped_counted_and_logged(tmp_path: Path, caplog) -> None:
    """The store never holds more than max_bytes: the oldest segments go first, each counted
    (records and bytes) and logged at error level with the sink, the path and the count; what is
    left is the newest entries, contiguous."""
    report = Tally()
    dl = store(tmp_path, 16384, 4096, report)
    with caplog.at_level(logging.ERROR, "tailship.deadletter"):
        for i in range(400):
            dl.write([entry(i)])
            assert sum(p.stat().st_size for p in segments(dl.path)) <= 16384
    kept = seqs(dl.path)
    dropped = sum(n for _, n, _ in report.dropped)
    assert dropped > 0 and kept == list(range(dropped, 400))
    assert dropped + len(kept) == 400
    assert report.written == {("kafka", "missing_destination"): 400}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == len(report.dropped)
    assert "sink kafka" in errors[0] and "kafka.00000001.ndjson" in errors[0]
    assert f"{report.dropped[0][1]} record(s)" in errors[0] and "LOST" in errors[0]
    print(f"cap 16384 bytes: 400 written, {dropped} dropped in {len(report.dropped)} segments, "
          f"{len(kept)} kept")


def test_a_write_larger_than_the_cap_is_kept_whole_alone(tmp_path: Path) -> None:
    report = Tally()
    dl = store(tmp_path, 8192, 4096, report)
    for i in range(10):
        dl.write([entry(i)])
    dl.write([entry(99, size=10000)])
    assert seqs(dl.path) == [99]
    assert sum(n for _, n, _ in report.dropped) == 10


def test_a_disk_error_mid_write_is_cut_back_and_raised_retriable(tmp_path: Path, monkeypatch) -> None:
    """A write that fails part way (ENOSPC after some bytes) leaves the file as it was and
    raises RetriableSinkError naming the path and the cause; the next attempt succeeds."""
    dl = store(tmp_path, 1 << 20, 1 << 20)
    dl.write([entry(0)])
    before = dl.path.read_bytes()
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(RetriableSinkError) as err:
        dl.write([entry(1), entry(2)])
    assert str(dl.path) in str(err.value) and "No space left on device" in str(err.value)
    assert dl.path.read_bytes() == before
    monkeypatch.setattr(os, "write", real_write)
    assert dl.write([entry(1), entry(2)]) == 2
    assert seqs(dl.path) == [0, 1, 2]
    assert dl.count == 3


def test_a_torn_line_is_skipped_and_the_next_write_starts_on_a_new_line(tmp_path: Path) -> None:
    """A crash mid-write leaves a last line without newline: readers skip it, and a new writer
    (the restarted agent) starts on a new line, so its first entry is whole."""
    dl = store(tmp_path, 1 << 20, 1 << 20)
    dl.write([entry(0)])
    with open(dl.path, "ab") as f:
        f.write(b'{"time":"2026-12-04T00:00:00Z","sink":"kafka","rea')
    assert seqs(dl.path) == [0]  # the torn tail is not read
    again = store(tmp_path, 1 << 20, 1 << 20)
    again.write([entry(1)])
    lines = list(read_segment(dl.path))
    assert [obj is None for _, obj in lines] == [False, True, False]
    assert seqs(dl.path) == [0, 1]


def test_a_cut_that_cannot_be_taken_back_is_isolated_on_its_line(tmp_path: Path, monkeypatch) -> None:
    dl = store(tmp_path, 1 << 20, 1 << 20)
    dl.write([entry(0)])
    real_write = os.write

    def partial(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.EIO, "Input/output error")

    def no_truncate(fd: int, size: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "write", partial)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(RetriableSinkError):
        dl.write([entry(1)])
    monkeypatch.undo()
    dl.write([entry(1)])
    assert seqs(dl.path) == [0, 1]


def test_entries_carry_reason_detail_origin_and_destination(tmp_path: Path) -> None:
    dl = store(tmp_path, 1 << 20, 1 << 20)
    dl.write([(Reason.TOO_LARGE, "too big", "/f.log", 7, b'{"a":1}'),  # without a destination
              entry(1)])
    a, b = [obj for _, obj in read_segment(dl.path)]
    assert (a["reason"], a["detail"], a["file"], a["offset"], a["record"]) == \
        ("too_large", "too big", "/f.log", 7, '{"a":1}')
    assert "destination" not in a and b["destination"] == "logs-a" and a["sink"] == "kafka"


def test_the_agent_counts_dead_letters_by_sink_and_reason_and_drops(tmp_path: Path) -> None:
    """Through MetricsReport: tailship_records_deadlettered_total{sink,reason},
    tailship_deadletter_dropped_records_total{sink} and _bytes_total."""
    m = Metrics()
    dl = store(tmp_path, 16384, 4096, MetricsReport(m))
    for i in range(300):
        dl.write([entry(i, reason=Reason.TOO_LARGE if i % 3 == 0 else Reason.REJECTED)])
    value = m.registry.get_sample_value
    assert value("tailship_records_deadlettered_total", {"sink": "kafka", "reason": "too_large"}) == 100
    assert value("tailship_records_deadlettered_total", {"sink": "kafka", "reason": "rejected"}) == 200
    dropped = value("tailship_deadletter_dropped_records_total", {"sink": "kafka"})
    assert dropped == 300 - len(seqs(dl.path)) and dropped > 0
    assert (value("tailship_deadletter_dropped_bytes_total", {"sink": "kafka"}) or 0) > 0
    assert m.events["deadlettered"] == 300


def test_the_lock_is_shared_by_writes_and_exclusive_for_a_replay(tmp_path: Path) -> None:
    d = tmp_path / "deadletter"
    a = deadletter.hold(d, exclusive=False)
    b = deadletter.hold(d, exclusive=False)
    assert a is not None and b is not None
    assert deadletter.hold(d, exclusive=True) is None
    os.close(a)
    os.close(b)
    c = deadletter.hold(d, exclusive=True)
    assert c is not None
    assert deadletter.hold(d, exclusive=False) is None
    deadletter.release(d, c)


def test_a_write_during_another_process_replay_is_refused_retriable(tmp_path: Path) -> None:
    """Another process's replay holds the store: the write raises RetriableSinkError saying so
    and leaves the store as it was; the replaying process's own writes go ahead."""
    dl = store(tmp_path, 1 << 20, 1 << 20)
    dl.write([entry(0)])
    other = os.open(dl.path.parent / deadletter.LOCK_FILE, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(RetriableSinkError) as err:
            dl.write([entry(1)])
        assert "is being replayed" in str(err.value) and str(dl.path.parent) in str(err.value)
    finally:
        os.close(other)
    mine = deadletter.hold(dl.path.parent, exclusive=True)
    assert mine is not None
    try:
        dl.write([entry(1)])  # this process is the replay
    finally:
        deadletter.release(dl.path.parent, mine)
    dl.write([entry(2)])
    assert seqs(dl.path) == [0, 1, 2]


def test_options_are_validated_and_shared_among_stores() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"deadletter": {"max_bytes": 2 << 20, "segment_bytes": 4 << 20}})
    assert "deadletter.segment_bytes: expected at most deadletter.max_bytes (2097152)" in str(err.value)
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"deadletter": {"max_bytes": 1000}})
    assert "deadletter.max_bytes" in str(err.value)
    s = settings_from_dict({"deadletter": {"max_bytes": 64 << 20, "segment_bytes": 16 << 20}})
    w = worker_settings(s, 1, 4)
    assert w.deadletter.max_bytes == 16 << 20 and w.deadletter.segment_bytes == 8 << 20
    per_sink = w.deadletter.share(2)
    assert (per_sink.max_bytes, per_sink.segment_bytes) == (8 << 20, 4 << 20)
