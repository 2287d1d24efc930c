"""The units that travel between the tailers and the sinks.

A `Segment` is what one file's chunk turned into: encoded records (orjson bytes, one JSON object
each, no newline) with, for each record, its offset in the file and its trace context. Keeping the
per-record metadata in parallel lists avoids building one Python object per line.

A `Batch` is a list of segments for one sink; acknowledging it acknowledges each segment's
`ticket` (see `pipelines.fanout`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Segment:
    file_key: str                  # checkpoint key of the source file (identity)
    path: str                      # path the file was found under
    meta: dict[str, Any]           # per-file constant fields (kubernetes.*), for routing
    records: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)      # file offset of each record
    trace_ids: list[str | None] = field(default_factory=list)
    span_ids: list[str | None] = field(default_factory=list)
    nbytes: int = 0                # sum of len(records)
    safe_offset: int = 0           # all lines before this offset are in this or earlier segments
    mask: int = -1                 # sinks of every record (bit i: sink i) when `routes` is None
    routes: list[int] | None = None  # per record: its sinks, where routing depends on record fields
    ticket: Any = None             # the acknowledgement it is part of (pipelines.fanout.Ticket)

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class Batch:
    seq: int
    segments: list[Segment] = field(default_factory=list)
    nrecords: int = 0
    nbytes: int = 0

    def add(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.nrecords += len(seg.records)
        self.nbytes += seg.nbytes

    def iter_records(self) -> Iterator[bytes]:
        for seg in self.segments:
            yield from seg.records
