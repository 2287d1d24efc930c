"""The JSON trace extraction as it was before the plan cache and the hex check in C (commit fb1b331).

Kept as the oracle of tests/pipelines/test_trace_fastpath.py: pipelines.trace must give the same
ids and leave the same object for every input. Not imported by the agent. Changed once since, with
the schema rule of issue 15 (an invalid value under `trace_id`/`span_id` is always set aside, never
left as the id): `_settle` calls pipelines.trace.set_aside.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pipelines.trace import set_aside

ZERO32 = "0" * 32
ZERO16 = "0" * 16
_MAX64 = (1 << 64) - 1
_MAX_DIGITS = len(str(_MAX64))  # 20

Getter = Callable[[Any], "str | None"]

_LHEX32 = re.compile(r"[0-9a-f]{32}").fullmatch
_LHEX16 = re.compile(r"[0-9a-f]{16}").fullmatch
_HEX32 = re.compile(r"[0-9a-fA-F]{32}").fullmatch
_HEX16 = re.compile(r"[0-9a-fA-F]{16}").fullmatch
_XRAY = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})").fullmatch
_TRACEPARENT = re.compile(
    r"([0-9a-fA-F]{2})-([0-9a-fA-F]{32})-([0-9a-fA-F]{16})-[0-9a-fA-F]{2}(-.*)?"
).fullmatch

# -- normalization -----------------------------------------------------------------------------


def _decimal(value: object, width: int) -> str | None:
    """A 64-bit unsigned id given as an int or a string of ASCII digits, as `width` hex."""
    if type(value) is str:
        # isascii: str.isdigit also accepts superscripts and other scripts' digits
        if not (len(value) <= _MAX_DIGITS and value.isdigit() and value.isascii()):
            return None
        value = int(value)
    if type(value) is int and 0 < value <= _MAX64:  # `type is` keeps bools out
        return format(value, f"0{width}x")
    return None


def _hex_trace(value: object) -> str | None:
    """32 hex, or 16 hex padded to 32; no other form."""
    if type(value) is not str:
        return None
    n = len(value)
    if n == 32 and _HEX32(value):
        h = value.lower()
    elif n == 16 and _HEX16(value):
        h = ZERO16 + value.lower()
    else:
        return None
    return None if h == ZERO32 else h


def _hex_span(value: object) -> str | None:
    """16 hex; no other form."""
    if type(value) is str and len(value) == 16 and _HEX16(value):
        h = value.lower()
        return None if h == ZERO16 else h
    return None


def _xray_id(value: object) -> str | None:
    """An X-Ray trace id `1-<8 hex epoch>-<24 hex random>` as 32 hex."""
    if type(value) is not str or len(value) != 35:
        return None
    m = _XRAY(value)
    if m is None:
        return None
    h = (m.group(1) + m.group(2)).lower()
    return None if h == ZERO32 else h


def normalize_trace_id(value: object) -> str | None:
    """32 lowercase hex from 32 or 16 hex (any case), an X-Ray id or a decimal 64-bit id; else None."""
    if type(value) is str:
        n = len(value)
        if n == 32 or n == 16:
            return _hex_trace(value)
        if n == 35:
            return _xray_id(value)
    return _decimal(value, 32)


def normalize_span_id(value: object) -> str | None:
    """16 lowercase hex from 16 hex (any case) or a decimal 64-bit id; else None."""
    if type(value) is str and len(value) == 16:
        return _hex_span(value)
    return _decimal(value, 16)


# -- conventions -------------------------------------------------------------------------------


def _traceparent(value: object) -> tuple[str, str] | None:
    """W3C traceparent; the whole header is invalid if any part is (spec section 3.2.2)."""
    if type(value) is not str:
        return None
    m = _TRACEPARENT(value.strip())
    if m is None:
        return None
    version = m.group(1).lower()
    if version == "ff" or (version == "00" and m.group(4) is not None):
        return None  # ff is forbidden; version 00 has exactly four fields
    trace, span = m.group(2).lower(), m.group(3).lower()
    if trace == ZERO32 or span == ZERO16:
        return None
    return trace, span


def _traceparent_trace(value: object) -> str | None:
    ids = _traceparent(value)
    return ids[0] if ids else None


def _traceparent_span(value: object) -> str | None:
    ids = _traceparent(value)
    return ids[1] if ids else None


def _b3_parts(value: object) -> list[str]:
    # b3: {TraceId}-{SpanId}[-{Sampled}[-{ParentSpanId}]]; a lone "0"/"1"/"d" carries no ids
    return value.split("-", 2) if type(value) is str else []


def _b3_trace(value: object) -> str | None:
    parts = _b3_parts(value)
    return _hex_trace(parts[0]) if len(parts) >= 2 else None


def _b3_span(value: object) -> str | None:
    parts = _b3_parts(value)
    return _hex_span(parts[1]) if len(parts) >= 2 else None


def _gcp_trace(value: object) -> str | None:
    """`projects/<project>/traces/<hex>` or the bare hex id."""
    if type(value) is not str:
        return None
    _, sep, tail = value.rpartition("/traces/")
    return _hex_trace(tail if sep else value)


def _dd_trace(value: object) -> str | None:
    """Datadog writes decimal, or 32 hex for a 128-bit id when 128-bit logging is enabled."""
    found = _decimal(value, 32)
    if found is None and type(value) is str and len(value) == 32:
        return _hex_trace(value)
    return found


def _dd_span(value: object) -> str | None:
    return _decimal(value, 16)


def _xray_header(value: str) -> dict[str, str]:
    fields = {}
    for part in value.split(";"):
        key, _, val = part.partition("=")
        fields[key.strip().lower()] = val.strip()
    return fields


def _xray_trace(value: object) -> str | None:
    """A bare X-Ray id or the `Root=` field of an X-Amzn-Trace-Id header value."""
    if type(value) is not str:
        return None
    if "=" in value:
        return _xray_id(_xray_header(value).get("root"))
    return _xray_id(value)


def _xray_span(value: object) -> str | None:
    """The `Parent=` field of an X-Amzn-Trace-Id header value."""
    if type(value) is not str or "=" not in value:
        return None
    return _hex_span(_xray_header(value).get("parent"))


def _nested(key: str, get: Getter) -> Getter:
    """A getter for `{"<top>": {key: value}}` objects (ECS `trace.id`, Datadog `dd.trace_id`)."""
    def nested(value: object) -> str | None:
        return get(value.get(key)) if type(value) is dict else None
    return nested


# Priority order: the position in these tables is the rank.
_TRACE_TABLE: tuple[tuple[str, Getter], ...] = (
    ("trace_id", normalize_trace_id),
    ("traceId", normalize_trace_id),
    ("traceID", normalize_trace_id),
    ("TraceId", normalize_trace_id),
    ("trace.id", normalize_trace_id),
    ("trace", _nested("id", normalize_trace_id)),
    ("traceparent", _traceparent_trace),
    ("X-B3-TraceId", _hex_trace),
    ("x-b3-traceid", _hex_trace),
    ("b3", _b3_trace),
    ("logging.googleapis.com/trace", _gcp_trace),
    ("dd.trace_id", _dd_trace),
    ("dd", _nested("trace_id", _dd_trace)),
    ("X-Amzn-Trace-Id", _xray_trace),
    ("x-amzn-trace-id", _xray_trace),
    ("AWS-XRAY-TRACE-ID", _xray_trace),
    ("xray_trace_id", _xray_trace),
)
_SPAN_TABLE: tuple[tuple[str, Getter], ...] = (
    ("span_id", normalize_span_id),
    ("spanId", normalize_span_id),
    ("spanID", normalize_span_id),
    ("SpanId", normalize_span_id),
    ("span.id", normalize_span_id),
    ("span", _nested("id", normalize_span_id)),
    ("traceparent", _traceparent_span),
    ("X-B3-SpanId", _hex_span),
    ("x-b3-spanid", _hex_span),
    ("b3", _b3_span),
    ("logging.googleapis.com/spanId", normalize_span_id),  # 16 hex, or decimal
    ("dd.span_id", _dd_span),
    ("dd", _nested("span_id", _dd_span)),
    ("X-Amzn-Trace-Id", _xray_span),
    ("x-amzn-trace-id", _xray_span),
)
_TRACE_GET = dict(_TRACE_TABLE)
_SPAN_GET = dict(_SPAN_TABLE)
_TRACE_RANK = {key: rank for rank, (key, _) in enumerate(_TRACE_TABLE)}
_SPAN_RANK = {key: rank for rank, (key, _) in enumerate(_SPAN_TABLE)}
_TRACE_KEYS = frozenset(_TRACE_GET)
_SPAN_KEYS = frozenset(_SPAN_GET)
_KEYS = _TRACE_KEYS | _SPAN_KEYS

TRACE_SOURCES: list[tuple[str, str]] = [
    ("trace_id / span_id", "canonical; hex of any case, 16-hex trace ids padded, decimal, X-Ray"),
    ("traceId, traceID, TraceId / spanId, spanID, SpanId", "camel case (OpenTelemetry, Go, .NET)"),
    ("trace.id / span.id", "Elastic Common Schema, dotted key or nested object"),
    ("traceparent", "W3C Trace Context: 00-<32 hex trace>-<16 hex span>-<2 hex flags>"),
    ("X-B3-TraceId / X-B3-SpanId (or lowercase), b3", "Zipkin B3 multi and single header, hex"),
    ("logging.googleapis.com/trace / logging.googleapis.com/spanId",
     "Google Cloud: projects/<p>/traces/<hex> or bare hex; span 16 hex or decimal"),
    ("dd.trace_id / dd.span_id", "Datadog: decimal 64-bit (or 32 hex for 128-bit ids), dotted "
                                 "key or nested object"),
    ("X-Amzn-Trace-Id, AWS-XRAY-TRACE-ID, xray_trace_id",
     "AWS X-Ray: 1-<8 hex>-<24 hex> or Root=1-...;Parent=<16 hex>;Sampled=1"),
]
"""The conventions in priority order, as (fields, description), for documentation."""


# -- JSON objects ------------------------------------------------------------------------------


def _first_valid(obj: dict[str, Any], keys: set[str] | frozenset[str],
                 getters: dict[str, Getter], rank: dict[str, int]) -> tuple[str | None, str]:
    """The first valid id among `keys` (present in `obj`) in priority order, and its key."""
    ordered = sorted(keys, key=rank.__getitem__) if len(keys) > 1 else keys
    for key in ordered:
        found = getters[key](obj[key])
        if found is not None:
            return found, key
    return None, ""


def _settle(obj: dict[str, Any], canon: str, found: str | None, source: str) -> str | None:
    """Write a found id to its canonical key; a value there that did not win is set aside (the
    rule is pipelines.trace.set_aside's, shared: this reference checks the finding, not it)."""
    if source != canon and canon in obj:
        old = obj[canon]
        if found is None:
            del obj[canon]
        else:
            obj[canon] = found
        set_aside(obj, canon, old, None)
    elif found is not None:
        obj[canon] = found
    return found


def _span(obj: dict[str, Any], present: set[str] | frozenset[str]) -> str | None:
    found, source = _first_valid(obj, present & _SPAN_KEYS, _SPAN_GET, _SPAN_RANK)
    return _settle(obj, "span_id", found, source)


def extract_fields(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """Find, normalize and set `trace_id`/`span_id` in a parsed JSON log object."""
    if _KEYS.isdisjoint(obj):
        return None, None
    t = obj.get("trace_id")
    if type(t) is str and len(t) == 32 and _LHEX32(t) and t != ZERO32:
        # already normalized (the common case for instrumented apps): no priority work for it
        s = obj.get("span_id")
        if type(s) is str and len(s) == 16 and _LHEX16(s) and s != ZERO16:
            return t, s
        if _SPAN_KEYS.isdisjoint(obj):
            return t, None
        return t, _span(obj, _SPAN_KEYS.intersection(obj))
    present = _KEYS.intersection(obj)
    found, source = _first_valid(obj, present & _TRACE_KEYS, _TRACE_GET, _TRACE_RANK)
    return _settle(obj, "trace_id", found, source), _span(obj, present)
