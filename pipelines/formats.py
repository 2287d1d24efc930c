"""Container log formats: docker json-file, CRI, plain text; detection and partial-line joining.

A decoder turns complete raw lines (bytes, no newline) into entries
`(offset, stream, timestamp, payload, flags)`, joining the runtime's split lines back together:

* docker json-file: `{"log": "...\\n", "stream": "stdout", "time": "..."}`; a line longer than
  16 KiB arrives as several entries whose `log` lacks the trailing newline.
* CRI: `<RFC3339Nano> <stdout|stderr> <P|F> <message>`; `P` partials are joined until `F`.
* text: each line is the payload; no stream, the read time is the timestamp.

Joins are bounded by `max_line_bytes` (measured in characters of the decoded payload): what
exceeds it is dropped and the entry flagged TRUNCATED. A line that is not valid for its format is
kept as the payload with the MALFORMED flag; invalid UTF-8 is replaced and flagged. Decoders hold
unfinished joins between chunks; `held_offset` tells where the oldest held line starts so that a
checkpoint never moves past it.

Raw payloads (`raw=True`, what the chain asks for): a whole CRI line (`F`, nothing held, short
enough) is cut with byte operations only and its payload left as `bytes`, not decoded: the chain
parses JSON from the bytes (orjson validates UTF-8 on the way) and splices them into the record
as they are; only a payload that turns out not to be JSON is decoded, its invalid UTF-8 replaced,
flagged and counted there (`decode_payload`). Every other entry carries a `str`, as without `raw`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

TRUNCATED = 1
MALFORMED = 2
PARTIAL = 4          # emitted without its end (file ended, or the wait timed out)
INVALID_UTF8 = 8
INHERITED = 16       # trace context inherited from the preceding record
UNPARSABLE = 32      # the chain failed on it: shipped as raw text (pipelines.chain._unparsable)
NO_API_METADATA = 64  # its pod was unknown to the Kubernetes API cache: file-name metadata only

FLAG_NAMES = ("truncated", "malformed", "partial", "invalid_utf8", "trace_inherited", "unparsable",
              "no_api_metadata")

# offset, stream (None for text), timestamp, payload (bytes: raw, not yet decoded), flags
Entry = tuple[int, str | None, str, str | bytes, int]
Counter = Callable[[str, int], None]

_CRI = re.compile(
    rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) (?:stdout|stderr) [PF]"
)
_STREAMS = frozenset(("stdout", "stderr"))
_RAW_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}


def detect_format(line: bytes) -> str:
    """Guess a file's format from its first line."""
    if line.startswith(b'{"log":'):
        return "docker"
    if _CRI.match(line):
        return "cri"
    return "text"


# every combination of the flags, named once (flags < 2 ** len(FLAG_NAMES))
_FLAG_LISTS = tuple(tuple(name for bit, name in enumerate(FLAG_NAMES) if flags >> bit & 1)
                    for flags in range(1 << len(FLAG_NAMES)))


def flag_names(flags: int) -> list[str]:
    return list(_FLAG_LISTS[flags])


def _text(line: bytes) -> tuple[str, int]:
    try:
        return line.decode(), 0
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), INVALID_UTF8


def decode_payload(payload: bytes, count: Counter) -> tuple[str, int]:
    """A raw payload as text: invalid UTF-8 replaced, flagged and counted (as a decoder would)."""
    text, flags = _text(payload)
    if flags:
        count("invalid_utf8", 1)
    return text, flags


class _Join:
    """An unfinished record of one stream: the pieces seen so far."""

    __slots__ = ("offset", "ts", "parts", "size", "flags")

    def __init__(self, offset: int, ts: str, flags: int) -> None:
        self.offset = offset
        self.ts = ts
        self.parts: list[str] = []
        self.size = 0
        self.flags = flags


class Decoder:
    """Common state: per-stream joins, the line bound, counters."""

    name = "text"

    def __init__(self, max_line_bytes: int, count: Counter, raw: bool = False) -> None:
        self.max_line_bytes = max_line_bytes
        self.count = count
        self.raw = raw  # whole CRI payloads as bytes (see the module docstring)
        self.joins: dict[str | None, _Join] = {}

    def decode(self, lines: list[bytes], offset: int, now_ts: str, out: list[Entry]) -> int:
        raise NotImplementedError

    @property
    def held_offset(self) -> int | None:
        if not self.joins:
            return None
        return min(j.offset for j in self.joins.values())

    def flush(self, out: list[Entry]) -> None:
        """Emit every unfinished join as it is, flagged PARTIAL."""
        for stream, j in sorted(self.joins.items(), key=lambda kv: kv[1].offset):
            self.count("partial_emitted", 1)
            out.append((j.offset, stream, j.ts, "".join(j.parts), j.flags | PARTIAL))
        self.joins.clear()

    def _piece(self, stream: str | None, offset: int, ts: str, text: str, flags: int,
               last: bool, out: list[Entry]) -> None:
        """Add one piece of a split record; emit the record when it is the last piece."""
        j = self.joins.get(stream)
        if j is None:
            if last:
                self._emit(offset, stream, ts, text, flags, out)
                return
            j = self.joins[stream] = _Join(offset, ts, flags)
        j.flags |= flags
        room = self.max_line_bytes - j.size
        if len(text) > room:
            text = text[:max(room, 0)]
            j.flags |= TRUNCATED
        if text:
            j.parts.append(text)
            j.size += len(text)
        if last:
            del self.joins[stream]
            if j.flags & TRUNCATED:
                self.count("truncated", 1)
            out.append((j.offset, stream, j.ts, "".join(j.parts), j.flags))

    def _emit(self, offset: int, stream: str | None, ts: str, text: str, flags: int,
              out: list[Entry]) -> None:
        if len(text) > self.max_line_bytes:
            text = text[: self.max_line_bytes]
            flags |= TRUNCATED
            self.count("truncated", 1)
        out.append((offset, stream, ts, text, flags))


class TextDecoder(Decoder):
    name = "text"

    def decode(self, lines: list[bytes], offset: int, now_ts: str, out: list[Entry]) -> int:
        emit = self._emit
        for line in lines:
            n = len(line) + 1
            if line:
                text, flags = _text(line)
                if flags:
                    self.count("invalid_utf8", 1)
                if text[-1:] == "\r":
                    text = text[:-1]
                emit(offset, None, now_ts, text, flags, out)
            offset += n
        return offset


class DockerDecoder(Decoder):
    name = "docker"

    def decode(self, lines: list[bytes], offset: int, now_ts: str, out: list[Entry]) -> int:
        loads = orjson.loads
        joins = self.joins
        for line in lines:
            n = len(line) + 1
            try:
                d = loads(line)
                log = d["log"]
                stream = d["stream"]
                ts = d["time"]
                if type(log) is not str or type(ts) is not str or stream not in _STREAMS:
                    raise TypeError
                flags = 0
            except (orjson.JSONDecodeError, KeyError, TypeError):
                parsed = self._slow(line, offset, now_ts, out)
                if parsed is None:
                    offset += n
                    continue
                log, stream, ts, flags = parsed
            if log[-1:] == "\n" and not joins and not flags and len(log) <= self.max_line_bytes:
                out.append((offset, stream, ts, log[:-1], 0))
            else:
                last = log[-1:] == "\n"
                self._piece(stream, offset, ts, log[:-1] if last else log, flags, last, out)
            offset += n
        return offset

    def _slow(self, line: bytes, offset: int, now_ts: str,
              out: list[Entry]) -> tuple[str, str, str, int] | None:
        """A line the fast path rejected: empty, invalid UTF-8, or not a docker entry."""
        if not line.strip():
            self.count("empty_lines", 1)
            return None
        text, flags = _text(line)
        d: Any = None
        if flags:
            self.count("invalid_utf8", 1)
            try:
                d = orjson.loads(text)
            except orjson.JSONDecodeError:
                d = None
        if (type(d) is dict and type(d.get("log")) is str
                and d.get("stream") in _STREAMS and type(d.get("time")) is str):
            return d["log"], d["stream"], d["time"], flags
        self.count("malformed", 1)
        self._emit(offset, None, now_ts, text, flags | MALFORMED, out)
        return None


class CriDecoder(Decoder):
    name = "cri"

    def decode(self, lines: list[bytes], offset: int, now_ts: str, out: list[Entry]) -> int:
        raw = self.raw
        limit = self.max_line_bytes
        for line in lines:
            n = len(line) + 1
            if raw and not self.joins:
                # bytes only: split, check, and leave the payload undecoded. What this does not
                # take (a partial, a long or odd line) goes the text way below.
                cut = line.split(b" ", 3)
                if (len(cut) == 4 and cut[2] == b"F" and len(cut[0]) >= 20
                        and cut[0][4:5] == b"-" and cut[0].isascii() and len(cut[3]) <= limit):
                    stream = _RAW_STREAMS.get(cut[1])
                    if stream is not None:
                        out.append((offset, stream, cut[0].decode(), cut[3], 0))
                        offset += n
                        continue
            if not line:
                self.count("empty_lines", 1)
                offset += n
                continue
            text, flags = _text(line)
            if flags:
                self.count("invalid_utf8", 1)
            parts = text.split(" ", 3)
            if (len(parts) < 3 or parts[1] not in _STREAMS or parts[2][:1] not in ("P", "F")
                    or len(parts[0]) < 20 or parts[0][4:5] != "-"):
                self.count("malformed", 1)
                self._emit(offset, None, now_ts, text, flags | MALFORMED, out)
                offset += n
                continue
            msg = parts[3] if len(parts) == 4 else ""
            last = parts[2][0] == "F"
            if last and not flags and not self.joins and len(msg) <= self.max_line_bytes:
                out.append((offset, parts[1], parts[0], msg, 0))
            else:
                self._piece(parts[1], offset, parts[0], msg, flags, last, out)
            offset += n
        return offset


DECODERS: dict[str, type[Decoder]] = {
    "docker": DockerDecoder,
    "cri": CriDecoder,
    "text": TextDecoder,
}
