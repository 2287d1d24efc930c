"""Container formats: detection, docker/CRI partial joining, bounds, malformed input."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.formats import (
    INVALID_UTF8,
    MALFORMED,
    PARTIAL,
    TRUNCATED,
    CriDecoder,
    DockerDecoder,
    TextDecoder,
    detect_format,
    flag_names,
)

TS = "2026-11-24T10:00:00.123456789Z"


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


def docker(log: str, stream: str = "stdout", time: str = TS) -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": time})


def decode(dec, lines, offset=0):
    out: list = []
    end = dec.decode(lines, offset, "NOW", out)
    return out, end


def test_detect_format():
    """First lines identify docker, CRI and text files."""
    assert detect_format(docker("x\n")) == "docker"
    assert detect_format(f"{TS} stdout F hello".encode()) == "cri"
    assert detect_format(b"2026-11-24T10:00:00+01:00 stderr P part") == "cri"
    assert detect_format(b"plain text line") == "text"
    assert detect_format(b'{"msg": "app json, not docker"}') == "text"


def test_docker_simple_lines_and_offsets():
    """Each docker entry becomes one entry with its own offset, stream and time."""
    lines = [docker("a\n"), docker("bb\n", "stderr")]
    out, end = decode(DockerDecoder(1 << 20, Tally()), lines, offset=100)
    assert out == [(100, "stdout", TS, "a", 0), (100 + len(lines[0]) + 1, "stderr", TS, "bb", 0)]
    assert end == 100 + sum(len(x) + 1 for x in lines)


def test_docker_split_lines_are_joined_per_stream():
    """16 KiB pieces without newline are joined; another stream's line in between is not mixed in."""
    dec = DockerDecoder(1 << 20, Tally())
    pieces = [docker("A" * 16384), docker("err\n", "stderr"), docker("B" * 16384), docker("C\n")]
    out, _ = decode(dec, pieces)
    assert [(e[1], e[3]) for e in out] == [("stderr", "err"), ("stdout", "A" * 16384 + "B" * 16384 + "C")]
    assert out[1][0] == 0  # the joined record keeps the offset of its first piece
    assert dec.held_offset is None


def test_docker_join_across_chunks_is_held():
    """An unfinished join is held between calls and reported by held_offset."""
    dec = DockerDecoder(1 << 20, Tally())
    first = docker("part-")
    out, end = decode(dec, [first], offset=10)
    assert out == [] and dec.held_offset == 10 and end == 10 + len(first) + 1
    out, _ = decode(dec, [docker("end\n")], offset=end)
    assert out == [(10, "stdout", TS, "part-end", 0)]
    assert dec.held_offset is None


def test_docker_join_bounded_and_flagged():
    """A join beyond max_line_bytes is truncated, flagged and counted, never unbounded."""
    tally = Tally()
    dec = DockerDecoder(2048, tally)
    out, _ = decode(dec, [docker("x" * 1500), docker("y" * 1500), docker("z" * 1500), docker("!\n")])
    assert len(out) == 1
    assert out[0][3] == "x" * 1500 + "y" * 548
    assert out[0][4] & TRUNCATED
    assert tally.counts["truncated"] == 1


def test_docker_single_line_over_bound_truncated():
    """One complete entry longer than the bound is cut to it."""
    out, _ = decode(DockerDecoder(1024, Tally()), [docker("q" * 5000 + "\n")])
    assert out[0][3] == "q" * 1024 and out[0][4] == TRUNCATED


def test_docker_malformed_lines_kept_as_text():
    """Broken JSON, wrong shapes and missing keys keep the raw text, flagged MALFORMED."""
    tally = Tally()
    bad = [b'{"log": "unterminated', b"[1,2]", b'{"log": 5, "stream": "stdout", "time": "t"}',
           b'{"stream":"stdout"}']
    out, _ = decode(DockerDecoder(1 << 20, tally), bad)
    assert [e[3] for e in out] == [b.decode() for b in bad]
    assert all(e[4] & MALFORMED for e in out)
    assert tally.counts["malformed"] == 4


def test_docker_invalid_utf8_replaced():
    """Invalid UTF-8 inside a docker line is replaced, the entry kept and flagged."""
    raw = b'{"log":"caf\xe9 ok\\n","stream":"stdout","time":"' + TS.encode() + b'"}'
    tally = Tally()
    out, _ = decode(DockerDecoder(1 << 20, tally), [raw])
    assert out == [(0, "stdout", TS, "caf\ufffd ok", INVALID_UTF8)]
    assert tally.counts["invalid_utf8"] == 1


def test_docker_empty_lines_skipped_and_counted():
    """Blank lines carry nothing: skipped, counted, offsets still advance."""
    tally = Tally()
    out, end = decode(DockerDecoder(1 << 20, tally), [b"", docker("a\n")])
    assert out == [(1, "stdout", TS, "a", 0)] and tally.counts["empty_lines"] == 1
    assert end == 1 + len(docker("a\n")) + 1


def test_cri_partial_join():
    """CRI P lines are joined until F, per stream."""
    lines = [f"{TS} stdout P hel".encode(), f"{TS} stderr F oops".encode(),
             f"{TS} stdout P lo ".encode(), f"{TS} stdout F world".encode()]
    out, _ = decode(CriDecoder(1 << 20, Tally()), lines)
    assert [(e[0], e[1], e[3]) for e in out] == [(len(lines[0]) + 1, "stderr", "oops"),
                                                  (0, "stdout", "hello world")]


def test_cri_empty_message_and_malformed():
    """An F line with an empty message is an empty record; a garbage line is kept, flagged."""
    out, _ = decode(CriDecoder(1 << 20, Tally()), [f"{TS} stdout F".encode(), b"garbage here"])
    assert out[0][3] == "" and out[0][4] == 0
    assert out[1][3] == "garbage here" and out[1][4] == MALFORMED


def test_text_lines():
    """Text lines keep their content, lose a trailing CR, use the read time, have no stream."""
    out, _ = decode(TextDecoder(1 << 20, Tally()), [b"one\r", b"", b"tw\xffo"])
    assert out == [(0, None, "NOW", "one", 0), (6, None, "NOW", "tw\ufffdo", INVALID_UTF8)]


def test_flush_emits_partials_flagged():
    """flush() emits held joins marked PARTIAL and clears them."""
    dec = CriDecoder(1 << 20, Tally())
    decode(dec, [f"{TS} stdout P unfinished".encode()])
    out: list = []
    dec.flush(out)
    assert out == [(0, "stdout", TS, "unfinished", PARTIAL)]
    assert dec.held_offset is None


def test_flag_names():
    """Flag bits map to their names."""
    assert flag_names(TRUNCATED | INVALID_UTF8) == ["truncated", "invalid_utf8"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.sampled_from(["docker", "cri", "text"]))
def test_any_bytes_never_raise_and_stay_bounded(lines, fmt):
    """Any bytes in: no exception, every payload within the bound, offsets within the input."""
    lines = [ln.replace(b"\n", b"") for ln in lines]
    dec = {"docker": DockerDecoder, "cri": CriDecoder, "text": TextDecoder}[fmt](128, Tally())
    out, end = decode(dec, lines)
    dec.flush(out)
    assert end == sum(len(x) + 1 for x in lines)
    for off, _stream, _ts, payload, _flags in out:
        assert 0 <= off < end
        assert len(payload) <= 128
