"""Re-sending dead letters through their sink (`tailship deadletter replay`), and counting them
(`tailship deadletter list`).

Replay of one sink's store, with the store locked (`deadletter.hold`, exclusive: the agent's
own writes to it wait meanwhile, see `pipelines.deadletter`):
1. the segment being written is sealed, so that whatever the sink dead-letters again during the
   replay goes to a new segment, apart from what is being replayed;
2. each sealed segment, oldest first: its entries (those written at or after `since`) are sent
   in batches through the sink's normal `send`, retried with backoff like the agent's delivery;
3. once every batch of a segment is acknowledged, the segment is removed, or rewritten (to a
   temporary file renamed over it) with only the entries that were not selected.

What a replay removes is exactly what the sink acknowledged: an entry the sink refuses again is
written back to the store by the sink itself (with its new reason) before `send` returns. An
interruption (signal, crash, the sink failing past the timeout) leaves the current segment whole:
nothing is lost, and the next replay sends its entries again (duplicates, for the ones already
delivered). Torn lines (a write cut by a crash) are skipped and counted; they were never
acknowledged, so their records were written again whole.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from pipelines.backoff import Backoff, send_with_retry
from pipelines.deadletter import DeadLetter, read_segment, segments
from pipelines.enrich import file_meta
from pipelines.errors import RetriableSinkError, SinkError
from pipelines.records import Batch, Segment
from pipelines.sinks.base import Sink


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    since: datetime | None = None  # only entries written at or after this (aware, UTC)
    max_records: int = 2000        # per batch
    max_bytes: int = 2 << 20       # per batch
    retry_initial_secs: float = 0.1
    retry_max_secs: float = 10.0
    timeout_secs: float = 60.0     # a batch still failing after this long stops the replay


@dataclass
class ReplayResult:
    selected: int = 0              # entries taken from the store to send
    accepted: int = 0              # acknowledged by the sink and removed from the store
    again: Counter[str] = field(default_factory=Counter)  # dead-lettered again, by reason
    kept: int = 0                  # older than `since`: left in the store
    torn: int = 0                  # unreadable lines skipped (and removed with their segment)
    segments_done: int = 0         # segments removed or rewritten
    unsettled: int = 0             # sent in the segment being replayed when the replay stopped
    error: str = ""                # why the replay stopped early ("" = it did not)

    def add(self, other: ReplayResult) -> None:
        for name in ("selected", "accepted", "kept", "torn", "segments_done", "unsettled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.again.update(other.again)
        self.error = self.error or other.error


class ReplayReport:
    """The `DeadLetterReport` of the sink during a replay: counts what it dead-letters again."""

    def __init__(self) -> None:
        self.again: Counter[str] = Counter()
        self.dropped = 0

    def deadlettered(self, sink: str, reason: str, n: int) -> None:
        self.again[reason] += n

    def deadletter_dropped(self, sink: str, records: int, nbytes: int) -> None:
        self.dropped += records


def entry_time(obj: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(obj.get("time", "")))
    except ValueError:
        return None


def selected(obj: dict[str, Any], since: datetime | None) -> bool:
    if since is None:
        return True
    when = entry_time(obj)
    return when is not None and when >= since


async def replay(sink: Sink, dead: DeadLetter, report: ReplayReport, opts: ReplayOptions) -> ReplayResult:
    """Replay the store of `dead` (the sink's own store, reporting to `report`, new for this
    replay) through `sink` (started)."""
    result = ReplayResult()
    dead.seal()
    sealed = [p for p in segments(dead.path) if p != dead.path]
    seq = 0
    for path in sealed:
        try:
            lines = list(read_segment(path))
        except FileNotFoundError:  # dropped at the cap by the sink's own dead letters meanwhile
            continue
        keep = [line for line, obj in lines if obj is not None and not selected(obj, opts.since)]
        chosen = [obj for _, obj in lines if obj is not None and selected(obj, opts.since)]
        result.torn += sum(1 for _, obj in lines if obj is None)
        result.kept += len(keep)
        result.selected += len(chosen)
        before = sum(report.again.values())
        sent = 0
        for batch in batches(chosen, opts, seq):
            seq = batch.seq + 1
            try:
                await _send(sink, batch, opts)
            except SinkError as exc:
                result.unsettled += sent + batch.nrecords
                result.error = str(exc)
                result.again = Counter(report.again)
                return result
            sent += batch.nrecords
        again = sum(report.again.values()) - before
        result.accepted += len(chosen) - again
        _settle(path, keep)
        result.segments_done += 1
    result.again = Counter(report.again)
    return result


async def _send(sink: Sink, batch: Batch, opts: ReplayOptions) -> None:
    start = time.monotonic()

    def on_retry(exc: RetriableSinkError, attempt: int) -> None:
        if time.monotonic() - start >= opts.timeout_secs:
            raise exc

    await send_with_retry(lambda: sink.send(batch), Backoff(opts.retry_initial_secs, opts.retry_max_secs),
                          on_retry)


def batches(entries: Iterable[dict[str, Any]], opts: ReplayOptions, first_seq: int) -> Iterator[Batch]:
    """The entries as batches of segments: consecutive entries of one source file (and the same
    file fields, which a topic or index template reads) make one segment."""
    batch = Batch(first_seq)
    seg: Segment | None = None
    for obj in entries:
        rec = str(obj["record"]).encode()
        if batch.nrecords and (batch.nrecords >= opts.max_records
                               or batch.nbytes + len(rec) > opts.max_bytes):
            yield batch
            batch, seg = Batch(batch.seq + 1), None
        path = str(obj.get("file", ""))
        meta, tid, sid = _fields(rec, path)
        if seg is None or seg.path != path or seg.meta != meta:
            seg = Segment(file_key=path, path=path, meta=meta)
            batch.segments.append(seg)
        offset = int(obj.get("offset", 0))
        seg.records.append(rec)
        seg.offsets.append(offset)
        seg.trace_ids.append(tid)
        seg.span_ids.append(sid)
        seg.nbytes += len(rec)
        seg.safe_offset = offset
        batch.nrecords += 1
        batch.nbytes += len(rec)
    if batch.nrecords:
        yield batch


def _fields(rec: bytes, path: str) -> tuple[dict[str, Any], str | None, str | None]:
    """The file fields a destination template reads (the record's own `kubernetes`, as the agent
    set it, else what the file's name tells) and the record's trace context."""
    try:
        obj = orjson.loads(rec)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return file_meta(path, None), None, None
    k8s = obj.get("kubernetes")
    meta = {"kubernetes": k8s} if isinstance(k8s, dict) and k8s else file_meta(path, None)
    tid, sid = obj.get("trace_id"), obj.get("span_id")
    return meta, tid if isinstance(tid, str) else None, sid if isinstance(sid, str) else None


def _settle(path: Path, keep: list[bytes]) -> None:
    """Remove a replayed segment, or replace it by the lines it keeps (atomically)."""
    if not keep:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"\n".join(keep) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def summarize(paths: Iterable[Path], since: datetime | None = None) -> dict[str, Any]:
    """What `tailship deadletter list` shows of one sink's store: entries by reason and by
    destination, the oldest and newest time, torn lines, bytes."""
    by_reason: Counter[str] = Counter()
    by_dest: Counter[str] = Counter()
    times: list[str] = []
    torn = nbytes = 0
    for path in paths:
        try:
            nbytes += path.stat().st_size
            lines = list(read_segment(path))
        except FileNotFoundError:
            continue
        for _, obj in lines:
            if obj is None:
                torn += 1
            elif selected(obj, since):
                by_reason[str(obj.get("reason", "?"))] += 1
                by_dest[str(obj.get("destination") or "-")] += 1
                times.append(str(obj.get("time", "")))
    return {"records": sum(by_reason.values()), "reasons": dict(by_reason), "destinations": dict(by_dest),
            "oldest": min(times, default=""), "newest": max(times, default=""), "torn": torn,
            "bytes": nbytes}
