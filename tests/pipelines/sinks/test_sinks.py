"""One compliance suite run against every local sink, plus file-, stdout-, codec-, registry- and
dead-letter-specific behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import zstandard

from agent.settings import SinkSettings
from pipelines.codec import ZstdCodec, encode_ndjson, split_frames
from pipelines.deadletter import DeadLetter, Reason
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.sinks.base import Sink
from pipelines.sinks.file import FileSink, last_seq, read_dir, read_ndjson_zst
from pipelines.sinks.null import NullSink
from pipelines.sinks.registry import build_sink, parse_sink_url
from pipelines.sinks.stdout import StdoutSink

pytestmark = pytest.mark.timeout(10)

NAME = re.compile(r"tailship-\d{8}T\d{6}-\d{6}\.ndjson\.zst")


def make_segment(start: int, n: int, path: str = "/p") -> Segment:
    seg = Segment(path, path, {})
    for i in range(start, start + n):
        rec = orjson.dumps({"i": i, "message": "x" * 100})
        seg.records.append(rec)
        seg.offsets.append(i)
        seg.trace_ids.append(None)
        seg.span_ids.append(None)
        seg.nbytes += len(rec)
    seg.safe_offset = start + n
    return seg


def make_batch(seq: int, n: int, start: int = 0) -> Batch:
    """`n` records numbered from `start`, split over two segments (two source files)."""
    b = Batch(seq)
    b.add(make_segment(start, n // 2, "/a"))
    b.add(make_segment(start + n // 2, n - n // 2, "/b"))
    return b


def numbers(records: list[bytes]) -> list[int]:
    return [orjson.loads(r)["i"] for r in records]


def out_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".ndjson.zst"))


class Harness:
    """Builds a sink and reads back what it delivered."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.buf = io.BytesIO()
        self.dir = tmp_path / "out"
        self.sink: NullSink | StdoutSink | FileSink
        if kind == "null":
            self.sink = NullSink()
        elif kind == "stdout":
            self.sink = StdoutSink(self.buf)
        else:
            self.sink = FileSink(str(self.dir), compression_level=3, rotate_bytes=2000)

    def delivered(self) -> list[int] | int:
        if isinstance(self.sink, NullSink):
            return self.sink.records
        if self.kind == "stdout":
            return numbers(self.buf.getvalue().splitlines())
        return numbers(read_dir(self.dir))

    def expect(self, n: int) -> list[int] | int:
        return n if self.kind == "null" else list(range(n))


KINDS = ["null", "stdout", "file"]


# -- compliance: every local sink ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
async def test_sink_compliance(kind, tmp_path):
    """start → several batches → every record delivered exactly once, in order → close → no more."""
    h = Harness(kind, tmp_path)
    assert isinstance(h.sink, Sink)
    await h.sink.start()
    assert h.sink.healthy()
    for seq in range(5):
        await h.sink.send(make_batch(seq, 30, start=seq * 30))
    await h.sink.send(Batch(99))  # an empty batch is fine
    await h.sink.close(1.0)
    assert h.delivered() == h.expect(150)
    assert not h.sink.healthy()
    with pytest.raises(FatalSinkError):
        await h.sink.send(make_batch(9, 1))
    assert h.delivered() == h.expect(150)


@pytest.mark.parametrize("kind", KINDS)
async def test_send_before_start_is_fatal(kind, tmp_path):
    """A sink that was never started refuses batches instead of losing them."""
    with pytest.raises(FatalSinkError):
        await Harness(kind, tmp_path).sink.send(make_batch(1, 2))


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_sends_keep_call_order(kind, tmp_path):
    """Batches sent concurrently (max_in_flight > 1) are each delivered once, in call order."""
    h = Harness(kind, tmp_path)
    await h.sink.start()
    await asyncio.gather(*(h.sink.send(make_batch(s, 10, start=s * 10)) for s in range(8)))
    await h.sink.close(1.0)
    assert h.delivered() == h.expect(80)


@pytest.mark.parametrize("kind", KINDS)
async def test_close_twice_and_restart(kind, tmp_path):
    """close is idempotent; a closed sink can be started again and keeps delivering."""
    h = Harness(kind, tmp_path)
    await h.sink.start()
    await h.sink.send(make_batch(1, 4))
    await h.sink.close(1.0)
    await h.sink.close(1.0)
    await h.sink.start()
    await h.sink.send(make_batch(2, 4, start=4))
    await h.sink.close(1.0)
    assert h.delivered() == h.expect(8)


# -- file sink ---------------------------------------------------------------------------------------

async def test_file_sink_rotates_and_is_zstd_readable(tmp_path):
    """rotate_bytes starts new files; each is a valid .zst stream for zstandard and the zstd tools."""
    sink = FileSink(str(tmp_path), compression_level=1, rotate_bytes=4000)
    await sink.start()
    for seq in range(6):
        await sink.send(make_batch(seq, 20, start=seq * 20))
        assert sink._fd is None if seq % 2 else sink._fd is not None  # a full file is closed at once
    await sink.close(1)
    files = out_files(tmp_path)
    assert len(files) == 3  # ~2.4 KB per batch: the second batch crosses 4000 bytes
    assert all(NAME.fullmatch(f.name) for f in files)
    for k, f in enumerate(files):
        with open(f, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(
                fh, read_across_frames=True) as r:
            assert numbers(r.read().splitlines()) == list(range(k * 40, k * 40 + 40))
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-tq", *map(str, files)], check=True)
        out = subprocess.run(["zstdcat", *map(str, files)], capture_output=True, check=True).stdout
        assert numbers(out.splitlines()) == list(range(120))


async def test_each_batch_is_one_frame_with_size_and_checksum(tmp_path):
    """One frame per batch: the frame boundary is the acknowledgement boundary."""
    sink = FileSink(str(tmp_path))
    await sink.start()
    for seq in range(3):
        await sink.send(make_batch(seq, 7, start=seq * 7))
    await sink.close(1)
    [f] = out_files(tmp_path)
    data = f.read_bytes()
    frames, end = split_frames(data)
    assert end == len(data) and len(frames) == 3
    assert all(numbers(fr.splitlines()) == list(range(k * 7, k * 7 + 7)) for k, fr in enumerate(frames))
    params = zstandard.get_frame_parameters(data)
    assert params.content_size == len(frames[0]) and params.has_checksum


async def test_restart_opens_a_new_file_and_continues_the_sequence(tmp_path):
    """A new start never appends to an old file; names keep sorting in creation order."""
    first = FileSink(str(tmp_path))
    await first.start()
    await first.send(make_batch(1, 3))
    await first.close(1)
    [old] = out_files(tmp_path)
    before = old.read_bytes()
    second = FileSink(str(tmp_path))
    await second.start()
    await second.send(make_batch(2, 3, start=3))
    await second.close(1)
    files = out_files(tmp_path)
    assert len(files) == 2 and files[0] == old and old.read_bytes() == before
    assert last_seq(tmp_path) == 2 and files[1].name.endswith("-000002.ndjson.zst")
    assert numbers(read_dir(tmp_path)) == list(range(6))


async def test_no_file_until_the_first_record(tmp_path):
    """Starting and closing without data leaves no empty file behind."""
    sink = FileSink(str(tmp_path / "out"))
    await sink.start()
    await sink.send(Batch(1))
    await sink.close(1)
    assert list((tmp_path / "out").iterdir()) == []


def _file_with_torn_tail(tmp_path: Path, tail: bytes) -> Path:
    f = tmp_path / "tailship-20240101T000000-000001.ndjson.zst"
    codec = ZstdCodec(3)
    f.write_bytes(codec.compress(encode_ndjson(make_batch(1, 10))) + tail)
    return f


@pytest.mark.parametrize("how", ["cut", "zeros", "bad checksum", "garbage"])
def test_torn_final_frame_tolerated(tmp_path, how):
    """A crash mid-frame (cut short, zero-filled, damaged) leaves the complete frames readable."""
    frame = ZstdCodec(3).compress(b'{"i": 10}\n' * 500)
    tail = {"cut": frame[: len(frame) // 2],
            "zeros": frame[: len(frame) // 2] + b"\0" * 4096,
            "bad checksum": frame[:-1] + bytes([frame[-1] ^ 0xFF]),
            "garbage": b"\0" * 100}[how]
    f = _file_with_torn_tail(tmp_path, tail)
    assert numbers(read_ndjson_zst(f)) == list(range(10))
    frames, end = split_frames(f.read_bytes())
    assert len(frames) == 1 and end == f.stat().st_size - len(tail)


def test_torn_file_still_read_by_read_dir(tmp_path):
    """read_dir reads every file, skipping only the torn tail of one."""
    _file_with_torn_tail(tmp_path, b"\x28\xb5\x2f\xfd\x00")
    later = tmp_path / "tailship-20240101T000001-000002.ndjson.zst"
    later.write_bytes(ZstdCodec(1).compress(encode_ndjson(make_batch(2, 5, start=10))))
    assert numbers(read_dir(tmp_path)) == list(range(15))


async def test_unwritable_directory_is_fatal_and_named(tmp_path):
    """An output directory that cannot exist fails start with the path and the cause."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = FileSink(str(blocker / "out"))
    with pytest.raises(FatalSinkError) as e:
        await sink.start()
    assert str(blocker / "out") in str(e.value) and "Not a directory" in str(e.value)
    assert not e.value.retriable
    await sink.close(1)


async def test_write_failure_is_retriable_and_next_write_uses_new_file(tmp_path, monkeypatch):
    """ENOSPC while writing is retriable; the retry goes to a fresh file, nothing is corrupted."""
    sink = FileSink(str(tmp_path))
    await sink.start()
    await sink.send(make_batch(1, 5))
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data)[:7])  # a torn frame, then the disk is full
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(RetriableSinkError) as e:
        await sink.send(make_batch(2, 5, start=5))
    [failed] = out_files(tmp_path)
    assert "No space left on device" in str(e.value) and str(failed) in str(e.value)
    assert not sink.healthy()
    await sink.send(make_batch(2, 5, start=5))  # the sender's retry
    assert sink.healthy()
    await sink.close(1)
    files = out_files(tmp_path)
    assert len(files) == 2 and files[0] == failed
    assert numbers(read_dir(tmp_path)) == list(range(10))
    if shutil.which("zstd"):  # the retried file is whole; the torn one is not
        subprocess.run(["zstd", "-tq", str(files[1])], check=True)


async def test_fsync_failure_is_retriable(tmp_path, monkeypatch):
    """EIO from fsync means not durable: retriable, named, and the retry writes a new file."""
    sink = FileSink(str(tmp_path))
    await sink.start()

    def eio(fd):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", eio)
        with pytest.raises(RetriableSinkError) as e:
            await sink.send(make_batch(1, 4))
    assert "Input/output error" in str(e.value) and "tailship-" in str(e.value)
    await sink.send(make_batch(1, 4))
    await sink.close(1)
    assert len(out_files(tmp_path)) == 2
    assert numbers(read_ndjson_zst(out_files(tmp_path)[1])) == list(range(4))


class BlockedFsync:
    """Replaces os.fsync: the first file fsync waits until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread: str | None = None
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        if not self.entered.is_set() and os.path.isfile(f"/proc/self/fd/{fd}"):
            self.thread = threading.current_thread().name
            self.entered.set()
            assert self.release.wait(5)
        self._real(fd)


async def test_fsync_runs_off_the_event_loop(tmp_path, monkeypatch):
    """While a batch is being fsynced the loop keeps running (here: it is what releases fsync)."""
    blocked = BlockedFsync()
    monkeypatch.setattr(os, "fsync", blocked)
    sink = FileSink(str(tmp_path))
    await sink.start()
    send = asyncio.create_task(sink.send(make_batch(1, 4)))
    assert await asyncio.to_thread(blocked.entered.wait, 5)
    assert not send.done()
    blocked.release.set()
    await send
    await sink.close(1)
    assert blocked.thread is not None and blocked.thread.startswith("tailship-file-sink")
    assert numbers(read_dir(tmp_path)) == list(range(4))


async def test_close_waits_for_a_cancelled_write(tmp_path, monkeypatch):
    """A send cancelled mid-write (shutdown) finishes its frame before close closes the file."""
    blocked = BlockedFsync()
    monkeypatch.setattr(os, "fsync", blocked)
    sink = FileSink(str(tmp_path))
    await sink.start()
    send = asyncio.create_task(sink.send(make_batch(1, 4)))
    assert await asyncio.to_thread(blocked.entered.wait, 5)
    send.cancel()
    closing = asyncio.create_task(sink.close(5))
    await asyncio.sleep(0)
    assert sink._fd is not None  # still open: the write has not ended
    blocked.release.set()
    await closing
    assert sink._fd is None
    assert numbers(read_dir(tmp_path)) == list(range(4))


async def test_close_deadline_with_a_stuck_write(tmp_path, monkeypatch, caplog):
    """close returns at its deadline; the file is closed when the stuck write ends."""
    blocked = BlockedFsync()
    monkeypatch.setattr(os, "fsync", blocked)
    sink = FileSink(str(tmp_path))
    await sink.start()
    send = asyncio.create_task(sink.send(make_batch(1, 4)))
    assert await asyncio.to_thread(blocked.entered.wait, 5)
    t0 = time.monotonic()
    await sink.close(0.1)
    assert time.monotonic() - t0 < 2 and "still running" in caplog.text
    blocked.release.set()
    await send  # acknowledged: the data is durable even though close gave up waiting
    deadline = time.monotonic() + 5
    while sink._fd is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sink._fd is None


# -- stdout sink -------------------------------------------------------------------------------------

async def test_stdout_broken_pipe_is_fatal():
    """A closed standard output stops the agent instead of retrying forever."""
    class Broken(io.BytesIO):
        def write(self, b):  # type: ignore[override]
            raise BrokenPipeError(32, "Broken pipe")

    sink = StdoutSink(Broken())
    await sink.start()
    with pytest.raises(FatalSinkError) as e:
        await sink.send(make_batch(1, 1))
    assert "standard output" in str(e.value) and "broken pipe" in str(e.value)
    assert not e.value.retriable and not sink.healthy()
    await sink.close(1)


async def test_stdout_real_pipe_whose_reader_went_away():
    """A real pipe with its read end closed gives the same fatal error, buffered or not."""
    for n in (2, 2000):  # through the write buffer (error at flush), and past it (error at write)
        r, w = os.pipe()
        os.close(r)
        stream = open(w, "wb")  # closed below, errors and all
        sink = StdoutSink(stream)
        await sink.start()
        with pytest.raises(FatalSinkError, match="broken pipe"):
            await sink.send(make_batch(1, n))
        await sink.close(1)
        with contextlib.suppress(BrokenPipeError):
            stream.close()


async def test_stdout_closed_stream_is_fatal():
    """Writing to a closed stream is fatal and says so."""
    stream = io.BytesIO()
    stream.close()
    sink = StdoutSink(stream)
    await sink.start()
    with pytest.raises(FatalSinkError, match="closed"):
        await sink.send(make_batch(1, 1))
    await sink.close(1)


async def test_stdout_defaults_to_sys_stdout(capsysbinary):
    """Without a stream the sink writes NDJSON to sys.stdout's binary buffer, flushed per batch."""
    sink = StdoutSink()
    await sink.start()
    await sink.send(make_batch(1, 3))
    assert numbers(capsysbinary.readouterr().out.splitlines()) == [0, 1, 2]
    await sink.close(1)


# -- codec ------------------------------------------------------------------------------------------

def test_encode_ndjson_joins_segments():
    """All records of all segments, newline-terminated; an empty batch is empty."""
    b = make_batch(1, 2)
    b.add(make_segment(2, 1))
    b.add(Segment("e", "/e", {}))  # a segment without records adds nothing
    assert encode_ndjson(b) == b"\n".join(b.iter_records()) + b"\n"
    assert numbers(encode_ndjson(b).splitlines()) == [0, 1, 2]
    assert encode_ndjson(Batch(3)) == b""


def test_codec_roundtrip_multiple_frames():
    """Concatenated frames decompress to the concatenated data; a cut stream is an error."""
    c = ZstdCodec(1)
    data = c.compress(b"ab") + c.compress(b"") + c.compress(b"cd")
    assert c.decompress(data) == b"abcd"
    assert zstandard.get_frame_parameters(c.compress(b"abc")).content_size == 3
    with pytest.raises(ValueError, match="truncated or corrupt"):
        c.decompress(data[:-3])


def test_split_frames_across_read_chunks():
    """Frames larger than the decompressor's input chunk are found exactly."""
    big = os.urandom(3 << 20)  # incompressible: a frame over 3 MiB
    c = ZstdCodec(1)
    data = c.compress(big) + c.compress(b"tail") + b"\x28\xb5"
    frames, end = split_frames(data)
    assert frames == [big, b"tail"] and end == len(data) - 2


# -- registry ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,expected", [
    ("stdout", {"type": "stdout"}), ("-", {"type": "stdout"}), ("null", {"type": "null"}),
    ("file:/tmp/x", {"type": "file", "path": "/tmp/x"}),
    ("file:///tmp/x", {"type": "file", "path": "/tmp/x"}),
    ("file:rel/dir", {"type": "file", "path": "rel/dir"}),
    ("kafka://h1:9092,h2:9092/logs", {"type": "kafka", "kafka": {
        "bootstrap_servers": ["h1:9092", "h2:9092"], "topic": "logs", "fallback_topic": "logs"}}),
    ("elasticsearch://h1:9200,h2:9200/logs-x", {"type": "elasticsearch", "elasticsearch": {
        "urls": ["http://h1:9200", "http://h2:9200"], "index": "logs-x", "fallback_index": "logs-x"}}),
    ("elasticsearch+https://h:9243/i", {"type": "elasticsearch", "elasticsearch": {
        "urls": ["https://h:9243"], "index": "i", "fallback_index": "i"}}),
])
def test_parse_sink_url(url, expected):
    """CLI sink URLs map to sink settings."""
    assert parse_sink_url(url) == expected


@pytest.mark.parametrize("url,fragment", [("elasticsearch://h:9200", "needs nodes and an index"),
                                          ("ftp://x", "unsupported sink URL"),
                                          ("file:", "needs a directory"),
                                          ("kafka://h:9092", "needs brokers and a topic")])
def test_parse_sink_url_errors(url, fragment):
    """Unsupported URLs name what is supported."""
    with pytest.raises(ValueError) as e:
        parse_sink_url(url)
    assert fragment in str(e.value)
    if "not available" in fragment or "unsupported" in fragment:
        assert "stdout" in str(e.value) and "file:DIR" in str(e.value)


def test_build_sink_by_type(tmp_path):
    """sink.type picks the implementation; the file sink defaults to <data_dir>/out."""
    assert isinstance(build_sink(SinkSettings(type="null"), str(tmp_path)), NullSink)
    assert isinstance(build_sink(SinkSettings(type="stdout"), str(tmp_path)), StdoutSink)
    sink = build_sink(SinkSettings(type="file"), str(tmp_path))
    assert isinstance(sink, FileSink) and sink.dir == tmp_path / "out"
    custom = build_sink(SinkSettings(type="file", path=str(tmp_path / "x"), rotate_bytes=5000),
                        str(tmp_path))
    assert isinstance(custom, FileSink) and custom.dir == tmp_path / "x" and custom.rotate_bytes == 5000
    with pytest.raises(ValueError, match="supported: file, stdout, null"):
        build_sink(SinkSettings(type="carrier-pigeon"), str(tmp_path))


# -- dead letters -----------------------------------------------------------------------------------

def test_dead_letter_file_contents(tmp_path, monkeypatch):
    """Each rejected record is one durable NDJSON line with the reason and where it came from."""
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    dead = DeadLetter(tmp_path / "deadletter" / "kafka.ndjson", "kafka")
    assert dead.write([]) == 0 and not dead.path.exists()
    rec = orjson.dumps({"message": "é" * 3})
    assert dead.write([(Reason.TOO_LARGE, "too large", "/var/log/a.log", 42, rec),
                       (Reason.INVALID_DESTINATION, "bad topic", "/b", 0, b"{}")]) == 2
    assert len(synced) == 2  # the file, then its new directory entry
    dead.write(iter([(Reason.REJECTED, "again", "/c", 7, b'{"x":1}')]))
    assert len(synced) == 3 and dead.count == 3
    lines = [orjson.loads(x) for x in dead.path.read_bytes().splitlines()]
    assert [(d["reason"], d["detail"], d["file"], d["offset"], d["record"]) for d in lines] == [
        ("too_large", "too large", "/var/log/a.log", 42, rec.decode()),
        ("invalid_destination", "bad topic", "/b", 0, "{}"), ("rejected", "again", "/c", 7, '{"x":1}')]
    assert {d["sink"] for d in lines} == {"kafka"}
    assert all(datetime.fromisoformat(d["time"].replace("Z", "+00:00")).tzinfo for d in lines)
    assert dead.path.read_bytes().endswith(b"\n")
