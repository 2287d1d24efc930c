"""pipelines.trace.extract_fields against the reference implementation it replaced.

The fast version plans the priority order once per key set, checks hex in C and parses a
traceparent once for both ids; none of that may change a result. Every generated object goes
through both implementations (each on its own deep copy): same ids, same object afterwards.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipelines import trace
from tests.pipelines import trace_reference as ref

KEYS = sorted(trace._KEYS | {"trace_id_original", "span_id_original", "msg"})
HEX = "0123456789abcdefABCDEF"


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=HEX, min_size=n, max_size=n)


# Near misses on purpose: whitespace, odd lengths, non-ASCII digits, zeros, wrong separators.
_IDS = st.one_of(
    _hex(32), _hex(16), _hex(8), _hex(24), _hex(31), _hex(15),
    st.just("0" * 32), st.just("0" * 16), st.just("0a 0b0c0d0e0f0a "), st.just("0a" * 15 + " \t"),
    st.text(alphabet=HEX + " \t\n\u0660\uff10xg-_", min_size=14, max_size=34),
    st.integers(min_value=-2, max_value=(1 << 64) + 2).map(str),
    st.integers(min_value=-2, max_value=(1 << 64) + 2),
    st.booleans(), st.none(), st.just(""), st.floats(allow_nan=False),
)
_TRACEPARENT = st.builds(
    lambda v, t, s, f, extra: f"{v}-{t}-{s}-{f}{extra}",
    st.sampled_from(["00", "01", "ff", "FF", "0g"]), _hex(32), _hex(16), _hex(2),
    st.sampled_from(["", "-x", " ", "-"]),
)
_XRAY = st.builds(lambda a, b: f"1-{a}-{b}", _hex(8), _hex(24))
_HEADER = st.builds(lambda x, p: f"Root={x};Parent={p};Sampled=1", _XRAY, _hex(16))
_B3 = st.builds(lambda t, s, rest: f"{t}-{s}{rest}", _hex(32) | _hex(16), _hex(16),
                st.sampled_from(["", "-1", "-d-" + "a" * 16]))
_GCP = st.builds(lambda t: f"projects/p/traces/{t}", _hex(32) | _hex(16))
_SCALARS = st.one_of(_IDS, _TRACEPARENT, _XRAY, _HEADER, _B3, _GCP)
_VALUES = st.one_of(_SCALARS, st.dictionaries(st.sampled_from(["id", "trace_id", "span_id", "x"]),
                                              _SCALARS, max_size=3))
OBJECTS = st.dictionaries(st.sampled_from(KEYS), _VALUES, max_size=6)


def _both(obj: dict[str, Any]) -> None:
    a, b = copy.deepcopy(obj), copy.deepcopy(obj)
    assert trace.extract_fields(a) == ref.extract_fields(b)
    assert a == b and list(a) == list(b)


@settings(max_examples=3000, deadline=None)
@given(OBJECTS)
@example({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
@example({"trace_id": "bad", "trace_id_original": 1, "traceId": "A" * 32})
@example({"X-B3-TraceId": "0a 0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0", "x-b3-traceid": "1" * 16})
def test_extract_fields_matches_reference(obj: dict[str, Any]) -> None:
    """Any object: the same ids and the same fields written as the reference implementation."""
    _both(obj)


@settings(max_examples=500, deadline=None)
@given(st.lists(OBJECTS, min_size=2, max_size=8))
def test_extract_fields_sequence_matches_reference(objs: list[dict[str, Any]]) -> None:
    """A sequence of objects (planned key sets and the traceparent memo carry over between calls)."""
    for obj in objs:
        _both(obj)


def test_hex_check_rejects_whitespace_and_non_ascii() -> None:
    """bytes.fromhex skips whitespace: the length check must still reject it; no other digits."""
    assert trace._hex_span("0a0b0c0d0e0f0A0B") == "0a0b0c0d0e0f0a0b"
    assert trace._hex_span("0a 0b0c0d0e0f0a ") is None  # 16 characters, 7 valid pairs
    assert trace._hex_trace("0a" * 15 + " \t") is None
    assert trace._hex_span("0a0b0c0d0e0f0a0\u0660") is None
    assert trace._hex_trace("\uff10" * 16) is None
    assert trace._hex_trace("1" * 15 + "g") is None
