"""Dead letters: records a sink can never deliver, kept with the reason instead of dropped.

A bounded store of NDJSON segments per sink, under `<state dir>/deadletter/` (see
`pipelines.layout`): `<sink>.ndjson` is written to, `<sink>.<n>.ndjson` are full segments, the
oldest with the smallest `n`. One object per rejected record: `{"time", "sink", "reason",
"detail", "file", "offset", "record"}` and `"destination"` when the sink knows it (the topic or
index); `time` in RFC 3339 UTC, `reason` one of the fixed codes of `Reason` (what metrics are
labelled with), `detail` the sink's message (status, server error, limit), `record` the record as
a string. Each `write` is one append followed by fsync: once it returns, the entries are durable
and the sink may acknowledge their batch.

Bounded: the written segment is sealed once it holds `segment_bytes`; when the store would hold
more than `max_bytes`, its OLDEST sealed segments are deleted, counted and logged at error level
(the only place the agent drops data by design: a node's disk is never filled by rejections).
A single write larger than what is left after dropping every older segment is still kept whole.

A disk that refuses the write (full, read-only) raises `RetriableSinkError` naming the path and
the cause: the sink's batch is retried with backoff (backpressure), nothing is acknowledged and
nothing lost, and it succeeds once space returns. A write cut short is truncated back; if even
that fails (or the process died mid-write), the next write starts on a new line and readers skip
the torn line (`read_segment`): its entries were never acknowledged, so they were written again.

Each write holds the store directory's lock (`.lock`, flock) shared; `tailship deadletter replay`
holds it exclusively for its whole run, during which the agent's dead-letter writes are refused
as retriable (those batches wait, the rest flows) and the replay's own sink writes freely.

`write` blocks (fsync); it is for rare rejections. A sink that dead-letters often should call it
through `asyncio.to_thread` (it is thread-safe).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipelines.errors import RetriableSinkError
from pipelines.options import opt

log = logging.getLogger("tailship.deadletter")

SUFFIX = ".ndjson"
LOCK_FILE = ".lock"  # flock: shared by each write, exclusive by a replay
_SEALED = re.compile(r"^(?P<sink>[^.]+)\.(?P<n>\d+)\.ndjson$")


class Reason(enum.StrEnum):
    """Why a record was dead-lettered: a small fixed set (a metric label, never free text)."""

    TOO_LARGE = "too_large"              # above the sink's record limit, or refused as too large
    INVALID_DESTINATION = "invalid_destination"  # a topic or index name the server cannot have
    MISSING_DESTINATION = "missing_destination"  # the topic or index does not exist and is not created
    NOT_AUTHORIZED = "not_authorized"    # the destination refuses writes (ACL, index write block)
    REJECTED = "rejected"                # the server refused the record's content (mapping, corrupt)


# reason, detail (the sink's message), source file path, offset in that file, the record (orjson bytes)
Entry = tuple[Reason, str, str, int, bytes]
# the same with the destination (topic, index) the record was refused for, as `list` shows it
DestinedEntry = tuple[Reason, str, str, int, bytes, str]


@dataclass(slots=True)
class DeadLetterSettings:
    max_bytes: int = opt(256 << 20, min=1 << 20,
                         help="bytes of dead letters kept, all sinks (divided among them and the "
                              "workers); beyond it the oldest segment is dropped and counted")
    segment_bytes: int = opt(16 << 20, min=64 << 10,
                             help="a dead-letter segment is sealed at this size; the cap drops "
                                  "whole segments, oldest first")

    def check(self, path: str) -> list[tuple[str, str]]:
        if self.segment_bytes > self.max_bytes:
            return [(f"{path}.segment_bytes", f"expected at most {path}.max_bytes "
                     f"({self.max_bytes}), got {self.segment_bytes}")]
        return []

    def share(self, stores: int) -> DeadLetterSettings:
        """The part of one of `stores` stores (sinks × workers): the cap divided, a segment at
        most half of it (so that the cap drops a part of the store, not all of it)."""
        cap = max(64 << 10, self.max_bytes // max(1, stores))
        return DeadLetterSettings(cap, max(4096, min(self.segment_bytes, cap // 2)))


class DeadLetterReport(Protocol):
    """What a store reports (the agent counts it in its metrics; `tailship deadletter replay`
    in its summary)."""

    def deadlettered(self, sink: str, reason: str, n: int) -> None: ...

    def deadletter_dropped(self, sink: str, records: int, nbytes: int) -> None: ...


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(sink: str, entries: Iterable[Entry | DestinedEntry], when: str) -> tuple[bytes, Counter[str]]:
    """The NDJSON lines of `entries` (each ending in a newline) and how many per reason."""
    lines = []
    reasons: Counter[str] = Counter()
    for reason, detail, path, offset, record, *dest in entries:
        obj: dict[str, Any] = {"time": when, "sink": sink, "reason": str(reason), "detail": detail,
                               "file": path, "offset": offset,
                               "record": record.decode("utf-8", "replace")}
        if dest and dest[0]:
            obj["destination"] = dest[0]
        lines.append(orjson.dumps(obj))
        reasons[str(reason)] += 1
    if lines:
        lines.append(b"")  # the trailing newline, in the same join
    return b"\n".join(lines), reasons


class DeadLetter:
    """The store of one sink in one process: `path` is its written segment
    (`layout.dead_letter_file`), the sealed ones lie beside it."""

    def __init__(self, path: str | os.PathLike[str], sink: str,
                 settings: DeadLetterSettings | None = None,
                 report: DeadLetterReport | None = None) -> None:
        self.path = Path(path)
        self.sink = sink
        self.settings = settings or DeadLetterSettings()
        self.report = report
        self.count = 0  # entries written by this instance
        self._lock = threading.Lock()
        self._active = 0  # bytes in the written segment
        self._sealed: list[tuple[int, Path, int]] = []  # (n, path, bytes), oldest first
        self._torn = False  # the written segment does not end with a newline

    def write(self, entries: Iterable[Entry | DestinedEntry]) -> int:
        """Append the entries durably; returns how many were written. A disk error raises
        `RetriableSinkError` (nothing of this write is kept)."""
        data, reasons = encode(self.sink, entries, now_text())
        if not data:
            return 0
        try:
            with self._locked():
                self._store(data)
        except OSError as exc:
            raise RetriableSinkError(self.sink, f"cannot write dead letters to {self.path}: "
                                     f"{exc.strerror or exc} (the batch is retried; nothing "
                                     f"is acknowledged before they are written)") from exc
        n = sum(reasons.values())
        self.count += n
        if self.report is not None:
            for reason, k in reasons.items():
                self.report.deadlettered(self.sink, reason, k)
        return n

    def seal(self) -> None:
        """Seal the written segment (if it holds anything): a new write starts a new one."""
        with self._locked():
            if self._active:
                self._rotate()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store to this writer alone, as it is on disk now: the thread lock, the store's
        lock shared with the other writers (other sinks' stores are apart; a replay takes it
        exclusively, and then the write is refused as retriable), the segments read again
        (a replay may have removed some)."""
        store_dir = self.path.parent
        with self._lock:
            fd = None if _replaying(store_dir) else hold(store_dir, exclusive=False)
            if fd is None and not _replaying(store_dir):
                raise RetriableSinkError(self.sink, f"the dead-letter store {store_dir} is being "
                                         "replayed (tailship deadletter replay): the batch waits for it")
            try:
                self._scan()
                yield
            finally:
                if fd is not None:
                    os.close(fd)

    @property
    def held_bytes(self) -> int:
        """Bytes this store holds (as last seen by this instance)."""
        return self._active + sum(size for _, _, size in self._sealed)

    def _store(self, data: bytes) -> None:
        if self._active and self._active + len(data) > self.settings.segment_bytes:
            self._rotate()
        self._make_room(len(data))
        self._append(data)

    def _scan(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sealed = [(n, p, p.stat().st_size) for n, p in sealed_segments(self.path)]
        try:
            self._active = self.path.stat().st_size
        except FileNotFoundError:
            self._active = 0
        self._torn = self._active > 0 and _last_byte(self.path) != b"\n"

    def _rotate(self) -> None:
        n = self._sealed[-1][0] + 1 if self._sealed else 1
        dest = sealed_name(self.path, n)
        os.rename(self.path, dest)
        _fsync_dir(self.path.parent)
        self._sealed.append((n, dest, self._active))
        self._active = 0

    def _make_room(self, incoming: int) -> None:
        """Drop the oldest segments until `incoming` more bytes fit under the cap."""
        while self.held_bytes + incoming > self.settings.max_bytes and (self._sealed or self._active):
            if not self._sealed:
                self._rotate()
            _, oldest, size = self._sealed.pop(0)
            try:
                records = oldest.read_bytes().count(b"\n")
                oldest.unlink()
            except FileNotFoundError:  # removed meanwhile (a replay): nothing dropped
                continue
            _fsync_dir(self.path.parent)
            log.error("dead letters of sink %s over the cap (deadletter.max_bytes, %d bytes for this "
                      "store): dropped the oldest segment %s: %d record(s), %d bytes LOST",
                      self.sink, self.settings.max_bytes, oldest, records, size)
            if self.report is not None:
                self.report.deadletter_dropped(self.sink, records, size)

    def _append(self, data: bytes) -> None:
        if self._torn:
            data = b"\n" + data  # the torn line stays alone on its line (readers skip it)
        created = not self._active and not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                self._cut(fd, before)
                raise
        finally:
            os.close(fd)
        if created:  # the new file's name survives a crash too
            _fsync_dir(self.path.parent)
        self._active = before + len(data)
        self._torn = False

    def _cut(self, fd: int, size: int) -> None:
        """Take back a write that failed part way; if that fails too, the next write starts on a
        new line."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            self._torn = True


def sealed_name(active: Path, n: int) -> Path:
    return active.with_name(f"{active.name.removesuffix(SUFFIX)}.{n:08d}{SUFFIX}")


def sealed_segments(active: Path) -> list[tuple[int, Path]]:
    """(n, path) of the sealed segments beside the written one `active`, oldest first."""
    sink = active.name.removesuffix(SUFFIX)
    found = []
    if active.parent.is_dir():
        for p in active.parent.iterdir():
            m = _SEALED.match(p.name)
            if m and m["sink"] == sink:
                found.append((int(m["n"]), p))
    return sorted(found)


def segments(active: Path) -> list[Path]:
    """Every segment of one sink's store, oldest first, the written one last."""
    out = [p for _, p in sealed_segments(active)]
    return [*out, active] if active.exists() else out


def store_sinks(store_dir: Path) -> list[str]:
    """The names of the sinks that have dead letters in `store_dir`."""
    if not store_dir.is_dir():
        return []
    return sorted({p.name.split(".", 1)[0] for p in store_dir.glob(f"*{SUFFIX}")})


def read_segment(path: Path) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """Each line of a segment (without its newline) and its object, None for a line that is
    not one (a torn write): a caller skips and counts those. A last line without newline is a
    write cut short, never acknowledged: not yielded."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if not line:
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        yield line, obj if isinstance(obj, dict) and "record" in obj else None


def hold(store_dir: Path, exclusive: bool) -> int | None:
    """Lock a store directory: shared for each write of the agent's sinks, exclusive for a
    whole replay (whose own sink's writes then go ahead within this process). The locked file
    descriptor (`release` it), or None when the other kind holds it."""
    store_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    if exclusive:
        _REPLAYING.add(store_dir.resolve())
    return fd


def release(store_dir: Path, fd: int) -> None:
    _REPLAYING.discard(store_dir.resolve())
    os.close(fd)


_REPLAYING: set[Path] = set()  # store directories this process holds exclusively (a replay)


def _replaying(store_dir: Path) -> bool:
    return bool(_REPLAYING) and store_dir.resolve() in _REPLAYING


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
