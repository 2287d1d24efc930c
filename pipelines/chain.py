"""The per-file processing chain: decode → parse → trace context → enrich → encode.

One `FileProcessor` per tailed file turns chunks of complete raw lines into a `Segment` of encoded
records. Everything configurable is decided when the processor is built (`ChainSpec`); the per-line
loop only does the work. JSON records take an inlined fast path; plain-text records (rarer) go
through methods that handle text trace ids, continuation lines and multiline merging.

The file's `kubernetes` object is the same for all its records: it is encoded once (when it is
set or changes) and spliced onto each encoded record, which moves it to the record's end.
Metadata that can change while the file is read (pod metadata from the API server, `LiveMeta`)
is looked at once per chunk: a change applies from the next chunk on, with its routing and what
the pod's annotations steer (skip the file, a multiline preset, no JSON parsing).

Whole CRI lines reach the chain with their payload as bytes (`formats`, `raw=True`): JSON is
parsed from the bytes (orjson checks UTF-8 on the way) and only a payload that is not JSON is
decoded, its invalid UTF-8 replaced, flagged and counted here.

Splicing (`ChainSpec.splice`, off by default). A JSON record is normally its payload parsed into
a dict, changed, and encoded again: duplicate keys keep their last value, integers beyond 64
bits become floats, escapes and whitespace are rewritten. With `splice`, a payload that needs no
change is shipped as the app wrote it: its bytes without the closing brace, then the ids the
chain found under another name (`trace_id`, `span_id`), `@timestamp`, `stream`, `log` {offset,
flags, file} and the per-file part (`host`, `kubernetes`, encoded once per file) — the same
fields and values, in another key order, except that duplicate keys and big integers stay as
written (tests/pipelines/test_chain_splice.py compares both paths record for record). Anything
the dict path would change takes the dict path: a collision with AGENT_KEYS, an id the trace
extraction normalizes, sets aside or removes, a `target`, invalid UTF-8, whitespace around the
object, an empty object, a payload that may nest deeper than orjson encodes (shipped raw and
flagged unparsable). Observers and per-record routes still get the record as a dict.

It is off because it does not pay in CPython: orjson encodes a 750-byte enriched dict in
~0.3 us, what the Python assembly of the spliced bytes costs too, and with log metrics on (the
default) the dict is built for the observer anyway. Measured in-process on the benchmark
workload (medians of 5 alternated runs): CRI 8.1-8.9 us a line by the dict path vs 8.8-9.8
spliced with the default observer, 7.7-8.4 vs 7.3-8.6 without one; docker 9.6 vs 10.3-10.6 and
8.9-9.1 vs 9.2-9.4. Before a sink takes spliced records by default, a record it refuses as
unparsable (Elasticsearch refuses duplicate keys) should be re-encoded through the dict path
once before it is dead-lettered.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pipelines import trace
from pipelines.enrich import LiveMeta
from pipelines.formats import (
    DECODERS,
    FLAG_NAMES,
    INHERITED,
    INVALID_UTF8,
    TRUNCATED,
    UNPARSABLE,
    Counter,
    Decoder,
    Entry,
    decode_payload,
    detect_format,
    flag_names,
)
from pipelines.multiline import Merged, Multiline
from pipelines.records import Segment
from pipelines.routes import FileRoutes

log = logging.getLogger("tailship.chain")

# Keys the agent writes into every record. An app field with the same name is kept: merged when
# both are objects (the agent's keys win inside), otherwise renamed to `<key>_app`.
AGENT_KEYS = frozenset(("@timestamp", "stream", "kubernetes", "log", "host"))


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """What the chain does, fixed once from settings."""

    format: str = "auto"            # auto | docker | cri | text
    max_line_bytes: int = 1 << 20
    parse_json: bool = True
    target: str = ""                # "" merges parsed fields at top level
    trace: bool = True
    inherit_window_secs: float = 1.0
    multiline: str = "none"         # none | java | python | go | auto
    multiline_max_lines: int = 500
    multiline_max_bytes: int = 1 << 20
    multiline_timeout_secs: float = 1.0
    host_name: str = ""
    splice: bool = False            # True: splice payloads that need no change (measured slower)
    observe: Callable[[dict[str, Any], str | None], None] | None = None  # log metrics: (record, trace id)


@dataclass(slots=True)
class Parked:
    """What a file's chain must remember when it is dropped while its file is idle (see
    `FileProcessor.park`), for the next chain of the same file to carry on as it would have."""

    live: LiveMeta | None          # the file's view of its pod (its `ready()` was awaited)
    decoder: str | None            # the format found in the file (`format = "auto"`)
    last: dict[str | None, tuple[str | None, str | None, str]]  # trace context to inherit
    reported: set[str]             # invalid-id events already logged for the file
    unparsable_seen: bool


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch_of(ts: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp with up to nanosecond precision."""
    head, dot, rest = ts.partition(".")
    if dot:
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        ts = f"{head}.{rest[:min(i, 6)].ljust(6, '0')}{rest[i:]}"
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _merge_agent_keys(rec: dict[str, Any]) -> None:
    """Move app fields that collide with agent keys out of the way (see AGENT_KEYS)."""
    for key in AGENT_KEYS.intersection(rec):
        if key in ("kubernetes", "log", "host") and type(rec[key]) is dict:
            continue  # merged when the agent sets its own keys
        rec[f"{key}_app"] = rec.pop(key)


_MISSING: Any = object()
_STREAM_BYTES = {s: b',"stream":' + orjson.dumps(s) for s in ("stdout", "stderr")}
# `,"flags":[...]` of each combination of flags (b"" for none), as the spliced `log` carries it
_FLAG_BYTES = tuple(b',"flags":' + orjson.dumps(flag_names(f)) if f else b""
                    for f in range(1 << len(FLAG_NAMES)))


def _exact(b: bytes) -> bytes:
    """`b` re-allocated at its exact size.

    orjson.dumps leaves each result in an allocation of several KiB (measured: ~8 KiB for a
    1 KiB record), so 60k records in flight held ~500 MB. A copy through a memoryview is
    exact-size (0.5 us for 1 KiB). Spliced records and `dumps(...)[:-1] + tail` are built at
    their size already and need no copy.
    """
    return bytes(memoryview(b))


# orjson parses JSON nested up to 1024 deep but encodes only 254 deep; the dict path ships a
# deeper record as its raw text, flagged unparsable. Splicing keeps that: a payload that may be
# that deep (more opening brackets than 254, possible from 510 bytes on) takes the dict path.
_MAX_DEPTH = 254
_DEEP_BYTES = 2 * _MAX_DEPTH + 2


def _deep(raw: bytes) -> bool:
    """Whether `raw` may nest deeper than orjson encodes. Two C searches clear a payload with no
    nested container (0.2 us for 1 KiB); only one with some counts its brackets (0.5 us)."""
    if raw.find(b"[") < 0 and raw.find(b"{", 1) < 0:
        return False
    return raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH


def _utf8(text: str) -> bytes | None:
    """`text` as UTF-8, or None when it holds a lone surrogate."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


class FileProcessor:
    """Turns one file's raw lines into encoded records, holding unfinished joins between calls."""

    def __init__(self, spec: ChainSpec, file_key: str, path: str, meta: dict[str, Any],
                 count: Counter, routes: FileRoutes | None = None, live: LiveMeta | None = None) -> None:
        self.spec = spec
        self.base_spec = spec   # the spec before a pod's annotations changed it
        # the sinks of this file's records: one mask for all, or one per record (routes that
        # test record fields), computed where the record is still a dict
        self._mask = -1 if routes is None else routes.mask
        self._route = None if routes is None else routes.per_record
        self.file_key = file_key
        self.path = path
        self.meta = meta
        self.count = count
        self.decoder: Decoder | None = (
            None if spec.format == "auto" else self._decoder(spec.format)
        )
        self._file = {"path": path}
        self._k8s: dict[str, Any] | None = None
        self._k8s_tail: bytes | None = None
        self._set_k8s(meta.get("kubernetes"))
        self._live = live
        self._generation = -1
        self._xflags = 0          # flags of every record (no_api_metadata)
        self._exclude = False     # a pod annotation says: do not ship this file
        self._multi_stale = False  # the multiline preset changed: flush what the old one holds
        self._host = {"name": spec.host_name} if spec.host_name else None
        # per stream: (trace_id, span_id, epoch) of the last record that was not a continuation
        self._last: dict[str | None, tuple[str | None, str | None, str]] = {}
        self._multi: dict[str | None, Multiline] = {}
        self._multi_flags: dict[int, int] = {}  # held record offset → flags of its lines
        self._prev_epoch: dict[str | None, tuple[str, float | None]] = {}  # per stream: ts, epoch
        self._inherited = 0  # records given inherited trace context, not yet counted
        self._unparsable_seen = False
        self._trace_reported: set[str] = set()  # events of invalid app ids already logged
        self._tail_key: tuple[bytes | None, dict[str, str] | None] | None = None
        self._tail = b"}"

    @property
    def format(self) -> str | None:
        return self.decoder.name if self.decoder else None

    # -- public ---------------------------------------------------------------------------------

    async def ready(self) -> None:
        """Wait (bounded) for the file's metadata before its first read (see `LiveMeta`)."""
        if self._live is not None:
            await self._live.ready()

    def process(self, lines: list[bytes], offset: int, now: float) -> Segment:
        """Decode `lines` (starting at `offset`) into a segment; unfinished joins stay held."""
        self._refresh()
        seg = self._segment()
        if self._exclude:
            return self._skip(lines, offset, seg)
        if self._multi_stale:
            self._flush_stale(seg)
        if not lines:
            seg.safe_offset = self.safe(offset)
            return seg
        if self.decoder is None:
            first = next((ln for ln in lines if ln.strip()), None)
            if first is None:
                seg.safe_offset = self.safe(offset + sum(len(ln) + 1 for ln in lines))
                return seg
            self.decoder = self._decoder(detect_format(first))
        entries: list[Entry] = []
        end = self.decoder.decode(lines, offset, rfc3339_now(), entries)
        self._build(entries, seg, now)
        self._count_inherited()
        seg.safe_offset = self.safe(end)
        return seg

    def flush(self, end_offset: int, now: float) -> Segment:
        """Emit everything held (file ended, or the wait for the rest timed out)."""
        self._refresh()
        seg = self._segment()
        if self._exclude:
            return self._skip([], end_offset, seg)
        entries: list[Entry] = []
        if self.decoder is not None:
            self.decoder.flush(entries)
        self._build(entries, seg, now)
        for stream in list(self._multi):
            self._emit_merged(self._multi[stream].flush(), stream, seg)
        self._count_inherited()
        seg.safe_offset = end_offset
        return seg

    def expired(self, now: float) -> bool:
        return any(m.expired(now) for m in self._multi.values())

    def flush_multiline(self, end_offset: int) -> Segment:
        """Emit held multiline records whose wait is over; decoder joins stay held."""
        self._refresh()
        seg = self._segment()
        for stream, m in self._multi.items():
            self._emit_merged(m.flush(), stream, seg)
        self._count_inherited()
        seg.safe_offset = self.safe(end_offset)
        return seg

    @property
    def held_offset(self) -> int | None:
        held = [o for o in (m.held_offset for m in self._multi.values()) if o is not None]
        if self.decoder is not None and self.decoder.held_offset is not None:
            held.append(self.decoder.held_offset)
        return min(held) if held else None

    def park(self) -> Parked | None:
        """The file is idle and nothing is held (`held_offset` is None): this chain is about to
        be dropped (10,000 idle files hold no chain). What a new chain for the file needs to
        carry on as this one would (`resume`); None when that is nothing: no live metadata, the
        format fixed by the spec, no trace context to inherit, nothing logged once."""
        last = {stream: v for stream, v in self._last.items() if v[0] is not None or v[1] is not None}
        decoder = self.decoder.name if self.decoder is not None and self.base_spec.format == "auto" else None
        if (self._live is None and decoder is None and not last and not self._trace_reported
                and not self._unparsable_seen):
            return None
        return Parked(self._live, decoder, last, self._trace_reported, self._unparsable_seen)

    def resume(self, parked: Parked) -> None:
        """Carry on from the chain that `park` gave `parked` (before the first `process`)."""
        if parked.live is not None:
            self._live = parked.live   # not a new one: its pod was waited for, its flags kept
            self._generation = -1
        if parked.decoder is not None:
            self.decoder = DECODERS[parked.decoder](self.spec.max_line_bytes, self.count)
        self._last.update(parked.last)
        self._trace_reported = parked.reported
        self._unparsable_seen = parked.unparsable_seen

    # -- changing metadata ------------------------------------------------------------------------

    def _set_k8s(self, k8s: dict[str, Any] | None) -> None:
        self._k8s = k8s or None
        self._k8s_tail = None if not k8s else b',"kubernetes":' + orjson.dumps(k8s) + b"}"

    def _refresh(self) -> None:
        """Take the file's current view of its live metadata, if it changed (once per chunk)."""
        live = self._live
        if live is None or live.generation == self._generation:
            return
        self._generation = live.generation
        view = live.view()
        self.meta = view.meta
        self._set_k8s(view.meta.get("kubernetes"))
        if view.routes is not None:
            self._mask, self._route = view.routes.mask, view.routes.per_record
        self._xflags = view.flags
        if view.exclude and not self._exclude:
            self._drop_held()
        self._exclude = view.exclude
        base = self.base_spec
        spec = dataclasses.replace(
            base, multiline=view.multiline or base.multiline,
            parse_json=base.parse_json if view.parse_json is None else view.parse_json)
        if spec != self.spec:
            self._multi_stale = self._multi_stale or spec.multiline != self.spec.multiline
            self.spec = spec

    def _skip(self, lines: list[bytes], offset: int, seg: Segment) -> Segment:
        """A file its pod's annotation excludes: lines are passed over (counted), not decoded."""
        if lines:
            self.count("kubernetes_excluded", len(lines))
        seg.safe_offset = offset + sum(len(ln) + 1 for ln in lines)
        return seg

    def _drop_held(self) -> None:
        """Forget half-joined lines (the file is excluded from now on)."""
        if self.decoder is not None and self.decoder.held_offset is not None:
            self.decoder = self._decoder(self.decoder.name)
        self._multi.clear()
        self._multi_flags.clear()

    def _flush_stale(self, seg: Segment) -> None:
        self._multi_stale = False
        for stream in list(self._multi):
            self._emit_merged(self._multi.pop(stream).flush(), stream, seg)

    def _dump(self, rec: dict[str, Any]) -> bytes:
        """Encode a record the agent built; its `kubernetes` (set for observers and routes) is
        spliced on encoded once."""
        tail = self._k8s_tail
        if tail is None:
            return _exact(orjson.dumps(rec))
        rec.pop("kubernetes", None)
        return orjson.dumps(rec)[:-1] + tail

    # -- internals ------------------------------------------------------------------------------

    def _segment(self) -> Segment:
        return Segment(self.file_key, self.path, self.meta, mask=self._mask,
                       routes=None if self._route is None else [])

    def _decoder(self, name: str) -> Decoder:
        return DECODERS[name](self.spec.max_line_bytes, self.count, raw=True)

    def safe(self, end: int) -> int:
        held = self.held_offset
        return end if held is None else min(held, end)

    def _build(self, entries: list[Entry], seg: Segment, now: float) -> None:
        """The hot loop: JSON payloads inline (spliced where they need no change, see the module
        docstring), everything else through `_text`."""
        spec = self.spec
        loads = orjson.loads
        dumps = orjson.dumps
        json_error = orjson.JSONDecodeError
        extract = trace.extract_fields if spec.trace else None
        report = self._trace_report
        parse = spec.parse_json
        target = spec.target
        multi = spec.multiline != "none"
        k8s, k8s_tail, host, file_ = self._k8s, self._k8s_tail, self._host, self._file
        xflags = self._xflags
        last = self._last
        records, offsets, tids, sids = seg.records, seg.offsets, seg.trace_ids, seg.span_ids
        nbytes = 0
        agent_keys = AGENT_KEYS
        observe = spec.observe
        route, routes = self._route, seg.routes
        keep_k8s = observe is not None or route is not None  # they read the record's kubernetes
        # splicing: never with a target (the payload moves under it)
        splice = spec.splice and not target
        as_dict = keep_k8s  # observers and routes read the record as a dict: built, not encoded
        tail_bytes = self._splice_tail() if splice else b""
        stream_bytes = _STREAM_BYTES
        flag_bytes = _FLAG_BYTES
        count = self.count
        missing = _MISSING
        for off, stream, ts, payload, flags in entries:
            if xflags:
                flags |= xflags
            text = ""  # the payload as text, where it is needed (not for spliced raw payloads)
            try:
                obj: Any = None
                raw: bytes | None = None  # the payload's bytes, valid UTF-8 JSON, when known
                if type(payload) is bytes:
                    if parse and payload[:1] == b"{":
                        try:
                            obj = loads(payload)
                            raw = payload
                        except json_error:
                            obj = None
                    if raw is None:  # not JSON after all (or not valid UTF-8): as text from here
                        text, bad = decode_payload(payload, count)
                        if bad:
                            flags |= bad
                            if parse and text[:1] == "{":
                                try:
                                    obj = loads(text)
                                except json_error:
                                    obj = None
                else:
                    text = payload  # type: ignore[assignment]
                    if parse and text[:1] == "{":
                        try:
                            obj = loads(text)
                        except json_error:
                            obj = None
                if type(obj) is not dict:
                    if multi:
                        self._to_multiline(off, stream, ts, text, flags, seg, now)
                    else:
                        nbytes += self._text(off, stream, ts, text, flags, seg)
                    continue
                if multi and stream in self._multi:
                    self._emit_merged(self._multi[stream].flush(), stream, seg)
                tid = sid = None
                b = None
                if splice and obj and not flags & INVALID_UTF8 and agent_keys.isdisjoint(obj):
                    # the payload as written, unless trace extraction changes it
                    t0 = obj.get("trace_id", missing)
                    s0 = obj.get("span_id", missing)
                    if extract is not None:
                        tid, sid = extract(obj, report)
                        # unchanged: absent, or already the normalized id (a null is removed)
                        ok = ((t0 is missing or (tid is not None and t0 == tid))
                              and (s0 is missing or (sid is not None and s0 == sid))
                              and "log" not in obj)  # set_aside may add `log`
                    else:
                        ok = True
                    if ok:
                        if raw is None:
                            raw = _utf8(text)
                        if (raw is not None and raw[-1:] == b"}"
                                and (len(raw) < _DEEP_BYTES or not _deep(raw))):
                            ids = b""
                            if tid is not None and t0 is missing:
                                ids = b',"trace_id":"' + tid.encode() + b'"'
                            if sid is not None and s0 is missing:
                                ids += b',"span_id":"' + sid.encode() + b'"'
                            sb = b"" if stream is None else stream_bytes.get(stream)
                            if sb is None:
                                sb = b',"stream":' + dumps(stream)
                            b = b"".join((raw[:-1], ids, b',"@timestamp":', dumps(ts), sb,
                                          b',"log":{"offset":', b"%d" % off, flag_bytes[flags],
                                          tail_bytes))
                            if not as_dict:
                                last[stream] = (tid, sid, ts)
                                records.append(b)
                                offsets.append(off)
                                tids.append(tid)
                                sids.append(sid)
                                nbytes += len(b)
                                continue
                    rec: dict[str, Any] = obj
                elif target:
                    tid, sid = extract(obj, report) if extract else (None, None)
                    rec = {target: obj}
                    if tid:
                        rec["trace_id"] = tid
                    if sid:
                        rec["span_id"] = sid
                else:
                    rec = obj
                    if extract is not None:
                        tid, sid = extract(obj, report)
                if not target and not agent_keys.isdisjoint(rec):
                    _merge_agent_keys(rec)
                last[stream] = (tid, sid, ts)
                rec["@timestamp"] = ts
                if stream is not None:
                    rec["stream"] = stream
                tail = None
                if k8s is not None:
                    if "kubernetes" in rec:
                        rec["kubernetes"] = {**rec["kubernetes"], **k8s}
                    else:
                        tail = k8s_tail
                        if keep_k8s:
                            rec["kubernetes"] = k8s
                logd = {"file": file_, "offset": off}
                if flags:
                    logd["flags"] = flag_names(flags)
                if "log" in rec:
                    rec["log"] = {**rec["log"], **logd}
                else:
                    rec["log"] = logd
                if host is not None:
                    rec["host"] = {**rec["host"], **host} if "host" in rec else host
                if observe is not None:
                    observe(rec, tid)
                sinks = route(rec) if route is not None else 0
                if b is None:  # not spliced: the dict encoded
                    if tail is not None:
                        if keep_k8s:
                            del rec["kubernetes"]
                        b = dumps(rec)[:-1] + tail
                    else:
                        b = _exact(dumps(rec))
                if route is not None:
                    routes.append(sinks)  # type: ignore[union-attr]
                records.append(b)
                offsets.append(off)
                tids.append(tid)
                sids.append(sid)
                nbytes += len(b)
            except Exception as exc:  # one line we cannot process must not stop its file
                if type(payload) is bytes:
                    text = payload.decode("utf-8", "replace")
                nbytes += self._unparsable(off, stream, ts, text, flags, seg, exc)
        seg.nbytes += nbytes

    def _splice_tail(self) -> bytes:
        """What follows a spliced record's `log.offset` (and flags): the file, then the per-file
        part (`host`, `kubernetes`), encoded once per file and metadata change."""
        key = (self._k8s_tail, self._host)
        if self._tail_key != key:
            self._tail_key = key
            part = b',"file":' + orjson.dumps(self._file) + b"}"
            if self._host is not None:
                part += b',"host":' + orjson.dumps(self._host)
            self._tail = part + (self._k8s_tail or b"}")
        return self._tail

    def _text(self, off: int, stream: str | None, ts: str, text: str, flags: int,
              seg: Segment, lines: int = 1) -> int:
        """Encode one plain-text record; returns its encoded size."""
        rec: dict[str, Any] = {"message": text}
        tid = sid = None
        if self.spec.trace:
            tid, sid = trace.extract_text(text)
            if tid is None and sid is None and trace.is_continuation(text):
                tid, sid = self._inherit(stream, ts)
                if tid is not None or sid is not None:
                    flags |= INHERITED
            else:
                self._last[stream] = (tid, sid, ts)
            if tid is not None:
                rec["trace_id"] = tid
            if sid is not None:
                rec["span_id"] = sid
        rec["@timestamp"] = ts
        if stream is not None:
            rec["stream"] = stream
        if self._k8s is not None:
            rec["kubernetes"] = self._k8s
        logd: dict[str, Any] = {"file": self._file, "offset": off}
        flags |= self._xflags
        if lines > 1:
            logd["lines"] = lines
        if flags:
            logd["flags"] = flag_names(flags)
        rec["log"] = logd
        if self._host is not None:
            rec["host"] = self._host
        if self.spec.observe is not None:
            self.spec.observe(rec, tid)
        return self._append(seg, rec, off, tid, sid)

    def _append(self, seg: Segment, rec: dict[str, Any], off: int, tid: str | None,
                sid: str | None) -> int:
        """Route, encode and add `rec` to `seg`; its size. The route mask is appended after the
        encode, so a record that fails to encode never misaligns the masks."""
        sinks = self._route(rec) if self._route is not None else 0
        b = self._dump(rec)
        if self._route is not None:
            seg.routes.append(sinks)  # type: ignore[union-attr]
        seg.records.append(b)
        seg.offsets.append(off)
        seg.trace_ids.append(tid)
        seg.span_ids.append(sid)
        return len(b)

    def _trace_report(self, event: str, n: int) -> None:
        """An app's invalid `trace_id`/`span_id` was set aside or dropped (see
        `trace.set_aside`): counted, and logged once per file and kind."""
        self.count(event, n)
        if event not in self._trace_reported:
            self._trace_reported.add(event)
            key, _, what = event.rpartition("_id_")
            if what == "dropped":
                log.warning("%s: an invalid %s_id value was dropped: %s_id_original and "
                            "log.original.%s_id are taken too (logged once per file, counted in "
                            "tailship_events_total{event=\"%s\"})", self.path, key, key, key, event)
            else:
                log.info("%s: invalid %s_id values are kept in %s_id_original (or "
                         "log.original.%s_id), not shipped as ids (logged once per file, counted "
                         "in tailship_events_total{event=\"%s\"})", self.path, key, key, key, event)

    def _unparsable(self, off: int, stream: str | None, ts: str, payload: str, flags: int,
                    seg: Segment, exc: Exception) -> int:
        """A line the chain failed on (JSON nested deeper than orjson encodes, a bug of ours):
        shipped as its raw text in `message`, flagged `unparsable`, counted; its file goes on."""
        self.count("unparsable", 1)
        if not self._unparsable_seen:
            self._unparsable_seen = True
            log.warning("%s: the line at offset %d cannot be processed (%s: %.200s); shipped as its "
                        "raw text, flagged unparsable (logged once per file, counted in "
                        "tailship_parse_errors_total{kind=\"unparsable\"})", self.path, off,
                        type(exc).__name__, exc)
        rec: dict[str, Any] = {"message": payload.encode("utf-8", "replace").decode("utf-8"),
                               "@timestamp": ts}
        if stream is not None:
            rec["stream"] = stream
        if self._k8s is not None:
            rec["kubernetes"] = self._k8s
        rec["log"] = {"file": self._file, "offset": off,
                      "flags": flag_names(flags | UNPARSABLE | self._xflags)}
        if self._host is not None:
            rec["host"] = self._host
        return self._append(seg, rec, off, None, None)

    def _inherit(self, stream: str | None, ts: str) -> tuple[str | None, str | None]:
        prev = self._last.get(stream)
        if prev is None or (prev[0] is None and prev[1] is None):
            return None, None
        # every line of a stack trace is compared with the same record: its time is parsed once
        memo = self._prev_epoch.get(stream)
        if memo is None or memo[0] != prev[2]:
            memo = self._prev_epoch[stream] = (prev[2], epoch_of(prev[2]))
        t0, t1 = memo[1], epoch_of(ts)
        if t0 is None or t1 is None or not 0 <= t1 - t0 <= self.spec.inherit_window_secs:
            return None, None
        self._inherited += 1  # counted once per call of process/flush (see _count_inherited)
        return prev[0], prev[1]

    def _count_inherited(self) -> None:
        if self._inherited:
            self.count("trace_inherited", self._inherited)
            self._inherited = 0

    def _to_multiline(self, off: int, stream: str | None, ts: str, text: str, flags: int,
                      seg: Segment, now: float) -> None:
        m = self._multi.get(stream)
        if m is None:
            s = self.spec
            m = self._multi[stream] = Multiline(s.multiline, s.multiline_max_lines,
                                                s.multiline_max_bytes, s.multiline_timeout_secs)
        self._emit_merged(m.push(text, off, ts, now), stream, seg)
        held = m.held_offset
        if flags and held is not None:
            # flags of any line belong to the record it ends up in (bounded: held records only)
            self._multi_flags[held] = self._multi_flags.get(held, 0) | flags

    def _emit_merged(self, merged: list[Merged], stream: str | None, seg: Segment) -> None:
        for item in merged:
            flags = self._multi_flags.pop(item.offset, 0)
            if item.truncated:
                flags |= TRUNCATED
                self.count("multiline_truncated", 1)
            seg.nbytes += self._text(item.offset, stream, item.ts, item.text, flags, seg,
                                     lines=item.lines)
