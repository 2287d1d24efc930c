"""Trace context: find trace and span ids under the conventions in real use, normalize them.

Output: top-level `trace_id` (32 lowercase hex) and `span_id` (16 lowercase hex). Hex is
lowercased; a 64-bit trace id (16 hex, or decimal as Datadog writes it) is left-padded with zeros
to 32 hex; all-zero or malformed ids are not attached. Source fields stay as they are, except a
malformed `trace_id`/`span_id` that a valid id from another convention replaces: the original
moves to `trace_id_original`/`span_id_original` so nothing is lost.

Priority (first VALID source wins, separately for the trace and the span id):

    trace_id / span_id                       canonical
    traceId, traceID, TraceId / spanId, ...  camel-case variants
    trace.id / span.id                       ECS, dotted key or nested object
    traceparent                              W3C: 00-<32 hex trace>-<16 hex span>-<2 hex flags>
    X-B3-TraceId / X-B3-SpanId, b3           B3 multi-header (any case) and single-header
    logging.googleapis.com/trace, /spanId    Google Cloud: projects/<p>/traces/<id>
    dd.trace_id / dd.span_id                 Datadog: decimal 64-bit, dotted key or nested object
    X-Amzn-Trace-Id, AWS-XRAY-TRACE-ID,      AWS X-Ray: 1-<8 hex time>-<24 hex>, Root=...;Parent=...
      xray_trace_id

Plain-text lines: `trace_id=<hex>`, `span_id=<hex>` (logfmt; also `:` and quotes, camel-case
keys, `trace.id`, `dd.trace_id`) and `traceparent=00-...`.

The common cases are cheap: a record with none of the known keys costs one set test; a record
whose `trace_id`/`span_id` are already normalized costs two regex matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ZERO32 = "0" * 32
ZERO16 = "0" * 16
_MAX64 = 1 << 64

_LHEX32 = re.compile(r"[0-9a-f]{32}").fullmatch
_LHEX16 = re.compile(r"[0-9a-f]{16}").fullmatch
_HEX = re.compile(r"[0-9a-fA-F]+").fullmatch
_DEC = re.compile(r"[0-9]{1,20}").fullmatch
_XRAY = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})").fullmatch
_TRACEPARENT = re.compile(
    r"([0-9a-fA-F]{2})-([0-9a-fA-F]{32})-([0-9a-fA-F]{16})-([0-9a-fA-F]{2})(-.*)?"
).fullmatch


def _hex_trace(v: str) -> str | None:
    n = len(v)
    if (n == 32 or n == 16) and _HEX(v):
        h = v.lower() if n == 32 else ZERO16 + v.lower()
        return None if h == ZERO32 else h
    m = _XRAY(v)
    if m:
        return (m.group(1) + m.group(2)).lower()
    return None


def _dec_id(v: object, width: int) -> str | None:
    if type(v) is str and _DEC(v):
        v = int(v)
    if type(v) is int and 0 < v < _MAX64:
        return f"{v:0{width}x}"
    return None


def normalize_trace_id(value: object) -> str | None:
    """32 lowercase hex from hex (32 or 16 digits), an X-Ray id, or a decimal int; else None."""
    if type(value) is str:
        return _hex_trace(value)
    return _dec_id(value, 32)


def normalize_span_id(value: object) -> str | None:
    """16 lowercase hex from 16 hex digits or a decimal int; else None."""
    if type(value) is str:
        if len(value) == 16 and _HEX(value):
            h = value.lower()
            return None if h == ZERO16 else h
        return None
    return _dec_id(value, 16)


def _decimal_trace(v: object) -> str | None:
    return _dec_id(v, 32)


def _decimal_span(v: object) -> str | None:
    return _dec_id(v, 16)


def _traceparent(v: object) -> tuple[str | None, str | None]:
    if type(v) is not str:
        return None, None
    m = _TRACEPARENT(v.strip())
    if not m or m.group(1).lower() == "ff" or (m.group(1) == "00" and m.group(5)):
        return None, None
    return normalize_trace_id(m.group(2)), normalize_span_id(m.group(3))


def _b3_single(v: object) -> tuple[str | None, str | None]:
    if type(v) is not str:
        return None, None
    parts = v.split("-")
    if len(parts) < 2:
        return None, None
    return normalize_trace_id(parts[0]), normalize_span_id(parts[1])


def _gcp_trace(v: object) -> str | None:
    if type(v) is not str:
        return None
    _, sep, tail = v.rpartition("/traces/")
    return normalize_trace_id(tail if sep else v)


def _gcp_span(v: object) -> str | None:
    if type(v) is str and len(v) != 16 and _DEC(v):
        return _decimal_span(v)
    return normalize_span_id(v)


def _amzn(v: object) -> tuple[str | None, str | None]:
    if type(v) is not str:
        return None, None
    fields = dict(p.strip().partition("=")[::2] for p in v.split(";"))
    return normalize_trace_id(fields.get("Root", "")), normalize_span_id(fields.get("Parent", ""))


Path = tuple[str, ...]
Getter = Callable[[Any], "str | None"]

_CAMEL_TRACE = ("trace_id", "traceId", "traceID", "TraceId", "trace.id")
_CAMEL_SPAN = ("span_id", "spanId", "spanID", "SpanId", "span.id")

TRACE_SOURCES: list[tuple[Path, Getter]] = [
    *(((k,), normalize_trace_id) for k in _CAMEL_TRACE),
    (("trace", "id"), normalize_trace_id),
    (("traceparent",), lambda v: _traceparent(v)[0]),
    (("X-B3-TraceId",), normalize_trace_id),
    (("x-b3-traceid",), normalize_trace_id),
    (("b3",), lambda v: _b3_single(v)[0]),
    (("logging.googleapis.com/trace",), _gcp_trace),
    (("dd.trace_id",), _decimal_trace),
    (("dd", "trace_id"), _decimal_trace),
    (("X-Amzn-Trace-Id",), lambda v: _amzn(v)[0]),
    (("x-amzn-trace-id",), lambda v: _amzn(v)[0]),
    (("AWS-XRAY-TRACE-ID",), normalize_trace_id),
    (("xray_trace_id",), normalize_trace_id),
]
SPAN_SOURCES: list[tuple[Path, Getter]] = [
    *(((k,), normalize_span_id) for k in _CAMEL_SPAN),
    (("span", "id"), normalize_span_id),
    (("traceparent",), lambda v: _traceparent(v)[1]),
    (("X-B3-SpanId",), normalize_span_id),
    (("x-b3-spanid",), normalize_span_id),
    (("b3",), lambda v: _b3_single(v)[1]),
    (("logging.googleapis.com/spanId",), _gcp_span),
    (("dd.span_id",), _decimal_span),
    (("dd", "span_id"), _decimal_span),
    (("X-Amzn-Trace-Id",), lambda v: _amzn(v)[1]),
    (("x-amzn-trace-id",), lambda v: _amzn(v)[1]),
]
_KEYS = frozenset(p[0] for p, _ in TRACE_SOURCES + SPAN_SOURCES)


def _find(obj: dict[str, Any], sources: list[tuple[Path, Getter]]) -> str | None:
    for path, get in sources:
        v = obj.get(path[0])
        if v is None:
            continue
        if len(path) == 2:
            if type(v) is not dict:
                continue
            v = v.get(path[1])
            if v is None:
                continue
        found = get(v)
        if found is not None:
            return found
    return None


def _settle(obj: dict[str, Any], key: str, found: str | None) -> None:
    """Write a found id to its canonical key, keeping a malformed original it replaces."""
    if found is None:
        return
    old = obj.get(key)
    if old is not None and old != found and (type(old) is not str or old.lower() != found
                                             and normalize_trace_id(old) != found
                                             and normalize_span_id(old) != found):
        obj[f"{key}_original"] = old
    obj[key] = found


def extract_fields(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """Find, normalize and set `trace_id`/`span_id` in a parsed JSON log object."""
    if _KEYS.isdisjoint(obj):
        return None, None
    t = obj.get("trace_id")
    s = obj.get("span_id")
    if (type(t) is str and len(t) == 32 and _LHEX32(t) and t != ZERO32
            and type(s) is str and len(s) == 16 and _LHEX16(s) and s != ZERO16):
        return t, s  # already normalized: the common case for our own users
    tid = _find(obj, TRACE_SOURCES)
    sid = _find(obj, SPAN_SOURCES)
    _settle(obj, "trace_id", tid)
    _settle(obj, "span_id", sid)
    return tid, sid


_TEXT_KV = re.compile(
    r"""(?:^|[\s,;{(\[|])["']?(?P<key>trace_id|traceId|traceID|TraceId|trace\.id|dd\.trace_id|traceparent|"""
    r"""span_id|spanId|spanID|SpanId|span\.id|dd\.span_id)["']?\s*[=:]\s*["']?(?P<val>[0-9A-Za-z-]{1,64})"""
)
_TEXT_TRACE: dict[str, Getter] = {
    "trace_id": normalize_trace_id, "traceId": normalize_trace_id, "traceID": normalize_trace_id,
    "TraceId": normalize_trace_id, "trace.id": normalize_trace_id, "dd.trace_id": _decimal_trace,
}
_TEXT_SPAN: dict[str, Getter] = {
    "span_id": normalize_span_id, "spanId": normalize_span_id, "spanID": normalize_span_id,
    "SpanId": normalize_span_id, "span.id": normalize_span_id, "dd.span_id": _decimal_span,
}


def extract_text(msg: str) -> tuple[str | None, str | None]:
    """Trace and span ids written into a plain-text line (logfmt style or traceparent=)."""
    if "race" not in msg and "pan" not in msg:
        return None, None
    tid = sid = None
    for m in _TEXT_KV.finditer(msg):
        key, val = m.group("key"), m.group("val")
        if key == "traceparent":
            t, s = _traceparent(val)
            tid = tid or t
            sid = sid or s
        elif key in _TEXT_TRACE:
            tid = tid or _TEXT_TRACE[key](val)
        else:
            sid = sid or _TEXT_SPAN[key](val)
        if tid and sid:
            break
    return tid, sid


_CONT_PREFIXES = ("at ", "...", "Caused by:", "Suppressed:", "Traceback (most recent call last):",
                  'File "', "goroutine ", "created by ", "panic: ", "During handling of the above",
                  "The above exception was", "[signal ")
EXCEPTION_LINE = re.compile(
    r"(?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Error|Exception|Throwable|Interrupt|Exit|Warning|Fault)"
    r"\b(?::.*)?"
).fullmatch
GO_FRAME = re.compile(r"[\w./-]+(?:\.\(\*?\w+\))?\.[\w.]+\(.*\)").fullmatch


def is_continuation(msg: str) -> bool:
    """A plain-text line that continues the record before it (a stack-trace line)."""
    if not msg:
        return False
    c = msg[0]
    if c == " " or c == "\t":
        return not msg.isspace()
    if msg.startswith(_CONT_PREFIXES):
        return True
    if c.isalpha() or c == "_" or c == "$":
        return bool(EXCEPTION_LINE(msg) or GO_FRAME(msg))
    return False
