"""One compliance suite run against every local sink, plus file- and stdout-specific behaviour."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import orjson
import pytest
import zstandard

from agent.settings import SinkSettings
from pipelines.codec import ZstdCodec, encode_ndjson
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.sinks.file import FileSink, read_dir, read_ndjson_zst
from pipelines.sinks.null import NullSink
from pipelines.sinks.registry import build_sink, parse_sink_url
from pipelines.sinks.stdout import StdoutSink

pytestmark = pytest.mark.timeout(20)


def make_batch(seq: int, n: int, start: int = 0) -> Batch:
    seg = Segment("k", "/p", {})
    for i in range(start, start + n):
        rec = orjson.dumps({"i": i, "message": "x" * 100})
        seg.records.append(rec)
        seg.offsets.append(i)
        seg.trace_ids.append(None)
        seg.span_ids.append(None)
        seg.nbytes += len(rec)
    seg.safe_offset = start + n
    b = Batch(seq)
    b.add(seg)
    return b


class Harness:
    """Builds a sink and reads back what it delivered."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        self.buf = io.BytesIO()
        self.dir = tmp_path / "out"
        if kind == "null":
            self.sink = NullSink()
        elif kind == "stdout":
            self.sink = StdoutSink(self.buf)
        else:
            self.sink = FileSink(str(self.dir), compression_level=3, rotate_bytes=2000)

    def delivered(self) -> list[int] | int:
        if self.kind == "null":
            return self.sink.records
        if self.kind == "stdout":
            return [orjson.loads(x)["i"] for x in self.buf.getvalue().splitlines()]
        return [orjson.loads(x)["i"] for x in read_dir(self.dir)]


@pytest.mark.parametrize("kind", ["null", "stdout", "file"])
async def test_sink_compliance(kind, tmp_path):
    """start → several batches → every record delivered exactly once, in order → close → no more."""
    h = Harness(kind, tmp_path)
    await h.sink.start()
    assert h.sink.healthy()
    for seq in range(5):
        await h.sink.send(make_batch(seq, 30, start=seq * 30))
    await h.sink.send(Batch(99))  # an empty batch is fine
    await h.sink.close(1.0)
    got = h.delivered()
    assert got == 150 if kind == "null" else got == list(range(150))
    with pytest.raises(FatalSinkError):
        await h.sink.send(make_batch(9, 1))


async def test_file_sink_rotates_and_is_zstdcat_readable(tmp_path):
    """rotate_bytes starts new files; each is a valid .zst stream readable by zstd tools."""
    sink = FileSink(str(tmp_path), compression_level=1, rotate_bytes=4000)
    await sink.start()
    for seq in range(6):
        await sink.send(make_batch(seq, 20, start=seq * 20))
    await sink.close(1)
    files = sorted(p for p in tmp_path.iterdir() if p.name.endswith(".ndjson.zst"))
    assert len(files) == 3  # ~2.4 KB per batch: two batches per file
    with open(files[0], "rb") as f, zstandard.ZstdDecompressor().stream_reader(
            f, read_across_frames=True) as r:
        assert [orjson.loads(x)["i"] for x in r.read().splitlines()] == list(range(40))
    if shutil.which("zstdcat"):
        out = subprocess.run(["zstdcat", *map(str, files)], capture_output=True, check=True).stdout
        assert [orjson.loads(x)["i"] for x in out.splitlines()] == list(range(120))


async def test_torn_final_frame_tolerated(tmp_path):
    """A crash mid-frame leaves complete earlier records readable."""
    sink = FileSink(str(tmp_path))
    await sink.start()
    await sink.send(make_batch(1, 10))
    await sink.close(1)
    [f] = list(tmp_path.iterdir())
    frame = ZstdCodec(3).compress(b'{"i": 10}\n' * 50)
    with open(f, "ab") as fh:
        fh.write(frame[: len(frame) // 2])
    assert [orjson.loads(x)["i"] for x in read_ndjson_zst(f)] == list(range(10))


async def test_unwritable_directory_is_fatal_and_named(tmp_path):
    """An output directory that cannot exist fails start with the path and the cause."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = FileSink(str(blocker / "out"))
    with pytest.raises(FatalSinkError) as e:
        await sink.start()
    assert str(blocker / "out") in str(e.value) and "Not a directory" in str(e.value)


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
    assert "No space left on device" in str(e.value)
    assert not sink.healthy()
    await sink.send(make_batch(2, 5, start=5))  # the sender's retry
    await sink.close(1)
    assert len(list(tmp_path.iterdir())) == 2
    assert [orjson.loads(x)["i"] for x in read_dir(tmp_path)] == list(range(10))


async def test_stdout_broken_pipe_is_fatal():
    """A closed standard output stops the agent instead of retrying forever."""
    class Broken(io.BytesIO):
        def write(self, b):  # type: ignore[override]
            raise BrokenPipeError(32, "Broken pipe")

    sink = StdoutSink(Broken())
    await sink.start()
    with pytest.raises(FatalSinkError) as e:
        await sink.send(make_batch(1, 1))
    assert "standard output" in str(e.value)


def test_encode_ndjson_joins_segments():
    """All records of all segments, newline-terminated; an empty batch is empty."""
    b = make_batch(1, 2)
    b.add(make_batch(2, 1, start=2).segments[0])
    assert [orjson.loads(x)["i"] for x in encode_ndjson(b).splitlines()] == [0, 1, 2]
    assert encode_ndjson(b).endswith(b"\n") and encode_ndjson(Batch(3)) == b""


def test_codec_roundtrip_multiple_frames():
    """Concatenated frames decompress to the concatenated data."""
    c = ZstdCodec(1)
    assert c.decompress(c.compress(b"ab") + c.compress(b"cd")) == b"abcd"


@pytest.mark.parametrize("url,expected", [
    ("stdout", {"type": "stdout"}), ("null", {"type": "null"}),
    ("file:/tmp/x", {"type": "file", "path": "/tmp/x"}),
    ("file:///tmp/x", {"type": "file", "path": "/tmp/x"}),
])
def test_parse_sink_url(url, expected):
    """CLI sink URLs map to sink settings."""
    assert parse_sink_url(url) == expected


@pytest.mark.parametrize("url,fragment", [("elasticsearch://h:9200/i", "not available yet"),
                                          ("ftp://x", "unsupported sink URL"),
                                          ("file:", "needs a directory")])
def test_parse_sink_url_errors(url, fragment):
    """Unsupported URLs name what is supported."""
    with pytest.raises(ValueError) as e:
        parse_sink_url(url)
    assert fragment in str(e.value)


def test_build_sink_defaults_file_dir_under_data_dir(tmp_path):
    """The file sink writes to <data_dir>/out unless a path is set."""
    sink = build_sink(SinkSettings(type="file"), str(tmp_path))
    assert isinstance(sink, FileSink) and sink.dir == tmp_path / "out"
