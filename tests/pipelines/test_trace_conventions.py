"""Trace context conventions, normalization rules, priority, text extraction, continuation lines."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.trace import (
    extract_fields,
    extract_text,
    is_continuation,
    normalize_span_id,
    normalize_trace_id,
)

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.mark.parametrize("obj,trace,span", [
    ({"trace_id": T, "span_id": S}, T, S),
    ({"traceId": T.upper(), "spanId": S.upper()}, T, S),
    ({"traceID": T, "spanID": S}, T, S),
    ({"TraceId": T, "SpanId": S}, T, S),
    ({"trace": {"id": T}, "span": {"id": S}}, T, S),
    ({"trace.id": T, "span.id": S}, T, S),
    ({"traceparent": f"00-{T}-{S}-01"}, T, S),
    ({"X-B3-TraceId": "a3ce929d0e0e4736", "X-B3-SpanId": S}, "0" * 16 + "a3ce929d0e0e4736", S),
    ({"x-b3-traceid": T, "x-b3-spanid": S}, T, S),
    ({"b3": f"{T}-{S}-1"}, T, S),
    ({"logging.googleapis.com/trace": f"projects/my-proj/traces/{T}",
      "logging.googleapis.com/spanId": S}, T, S),
    ({"dd.trace_id": "5915375271935744512", "dd.span_id": "1234"},
     f"{5915375271935744512:032x}", f"{1234:016x}"),
    ({"dd": {"trace_id": 5915375271935744512, "span_id": 77}}, f"{5915375271935744512:032x}",
     f"{77:016x}"),
    ({"AWS-XRAY-TRACE-ID": "1-5759e988-bd862e3fe1be46a994272793"},
     "5759e988bd862e3fe1be46a994272793", None),
    ({"X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"},
     "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"),
])
def test_conventions(obj, trace, span):
    """Each convention yields the normalized ids, set at top level; source fields stay."""
    before = dict(obj)
    assert extract_fields(obj) == (trace, span)
    assert obj.get("trace_id") == trace and obj.get("span_id") == span
    for k, v in before.items():
        if k not in ("trace_id", "span_id"):
            assert obj[k] == v


@pytest.mark.parametrize("value", [
    "0" * 32, "0" * 16, "xyz" + "0" * 29, T[:-1], T + "0", True, 1.5, None, [T], {"id": T}, 0, 1 << 64,
    "00-" + T + "-" + S + "-01",
])
def test_invalid_trace_ids_rejected(value):
    """All-zero, wrong length, non-hex, bool, float, nested, out-of-range ids are not accepted."""
    assert normalize_trace_id(value) is None


def test_span_normalization():
    """Span ids: 16 hex lowercased, decimal ints padded, all-zero and 32-hex rejected."""
    assert normalize_span_id(S.upper()) == S
    assert normalize_span_id(255) == "00000000000000ff"
    assert normalize_span_id("0" * 16) is None and normalize_span_id(T) is None


@pytest.mark.parametrize("tp", [f"ff-{T}-{S}-01", f"00-{T}-{S}-01-extra", f"00-{T}-{S}",
                                f"00-{'0' * 32}-{S}-01", "garbage"])
def test_bad_traceparent(tp):
    """Version ff, extra fields on version 00, missing flags, zero ids, garbage: no trace id."""
    obj = {"traceparent": tp}
    tid, _ = extract_fields(obj)
    assert tid is None and "trace_id" not in obj


def test_future_traceparent_version_with_suffix_accepted():
    """A later version may carry more fields after the flags."""
    assert extract_fields({"traceparent": f"01-{T}-{S}-01-whatever"}) == (T, S)


def test_datadog_decimal_bounds():
    """Datadog ids must be 1..2**64-1."""
    assert extract_fields({"dd.trace_id": "0"}) == (None, None)
    assert extract_fields({"dd.trace_id": str(1 << 64)}) == (None, None)


def test_malformed_canonical_without_alternative_set_aside():
    """A malformed trace_id with no valid alternative is not the id: it moves to trace_id_original."""
    obj = {"trace_id": "not-a-trace", "msg": "x"}
    assert extract_fields(obj) == (None, None)
    assert obj == {"trace_id_original": "not-a-trace", "msg": "x"}


def test_malformed_canonical_replaced_by_valid_alternative_keeps_original():
    """A valid id from another convention replaces a malformed trace_id; the original is kept."""
    obj = {"trace_id": "oops", "traceId": T}
    assert extract_fields(obj) == (T, None)
    assert obj["trace_id"] == T and obj["trace_id_original"] == "oops"


def test_uppercase_canonical_normalized_in_place():
    """An uppercase canonical id is lowercased without an `_original` copy."""
    obj = {"trace_id": T.upper(), "span_id": S.upper()}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "span_id": S}


def test_priority_canonical_before_camel_before_traceparent():
    """When several conventions are present, the documented order decides."""
    other = "1" * 32
    assert extract_fields({"traceId": other, "traceparent": f"00-{T}-{S}-01"})[0] == other
    assert extract_fields({"trace_id": T, "traceId": other})[0] == T
    assert extract_fields({"traceparent": f"00-{T}-{S}-01", "X-B3-TraceId": other})[0] == T


def test_record_without_trace_keys_untouched():
    """A record with no known keys is returned as is."""
    obj = {"msg": "hello", "level": "info"}
    assert extract_fields(obj) == (None, None) and obj == {"msg": "hello", "level": "info"}


@pytest.mark.parametrize("text,trace,span", [
    (f"GET /cart 200 trace_id={T} span_id={S}", T, S),
    (f'level=info msg="x" trace_id="{T.upper()}" span_id="{S}"', T, S),
    (f"traceId: {T}, spanId: {S}", T, S),
    (f"incoming traceparent=00-{T}-{S}-01 ok", T, S),
    ("dd.trace_id=5915375271935744512 dd.span_id=77", f"{5915375271935744512:032x}", f"{77:016x}"),
    (f"xtrace_id={T}", None, None),
    ("nothing to see here", None, None),
    ("trace_id=zzzz", None, None),
])
def test_extract_text(text, trace, span):
    """logfmt-style ids and traceparent= in plain text; embedded words do not match."""
    assert extract_text(text) == (trace, span)


@pytest.mark.parametrize("line,expected", [
    ("\tat com.shop.Checkout.pay(Checkout.java:42)", True),
    ("Caused by: java.io.IOException: timeout", True),
    ("\t... 12 more", True),
    ("java.lang.IllegalStateException: payment declined", True),
    ("ValueError: bad value", True),
    ("Traceback (most recent call last):", True),
    ('  File "app.py", line 3, in main', True),
    ("goroutine 1 [running]:", True),
    ("main.main()", True),
    ("\t/app/main.go:12 +0x1d", True),
    ("created by main.start", True),
    ("", False),
    ("   ", False),
    ("INFO starting server on :8080", False),
    ("The quick brown fox.", False),
    ('{"msg": "json"}', False),
])
def test_is_continuation(line, expected):
    """Stack-trace lines are continuations; ordinary lines are not."""
    assert is_continuation(line) is expected


KEYS = ["trace_id", "span_id", "traceId", "spanId", "trace.id", "span.id", "traceparent", "b3",
        "X-B3-TraceId", "dd.trace_id", "dd.span_id", "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId", "X-Amzn-Trace-Id", "trace", "span", "dd", "msg"]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS + ["id"]), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), JSONISH, max_size=6))
def test_any_object_never_raises_and_output_shaped(obj):
    """Any JSON-like object: no exception; ids are None or exactly shaped; trace_id set when found."""
    tid, sid = extract_fields(obj)
    assert tid is None or (HEX32.match(tid) and tid != "0" * 32 and obj["trace_id"] == tid)
    assert sid is None or (HEX16.match(sid) and sid != "0" * 16 and obj["span_id"] == sid)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda a, b: f"{a} trace_id={b}", st.text(max_size=20),
                                         st.text(alphabet="0123456789abcdefABCDEF-", max_size=40)))
def test_any_text_never_raises(text):
    """Any text: no exception, ids exactly shaped."""
    tid, sid = extract_text(text)
    assert tid is None or HEX32.match(tid)
    assert sid is None or HEX16.match(sid)
    assert is_continuation(text) in (True, False)
