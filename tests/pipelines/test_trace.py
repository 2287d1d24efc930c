"""pipelines.trace: id conventions, normalization, priority, plain-text ids and continuation lines."""

from __future__ import annotations

import copy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import trace
from pipelines.trace import (
    extract_fields,
    extract_text,
    is_continuation,
    normalize_span_id,
    normalize_trace_id,
)

# The W3C Trace Context example ids.
T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
TP = f"00-{T}-{S}-01"
XRAY = "1-5759e988-bd862e3fe1be46a994272793"
XRAY_HEX = "5759e988bd862e3fe1be46a994272793"
DD_TRACE = "5915375271935744512"
DD_TRACE_HEX = "00000000000000005217a27804dc1a00"

TRACE_RE = re.compile(r"^[0-9a-f]{32}$")
SPAN_RE = re.compile(r"^[0-9a-f]{16}$")


def _check_shape(trace: str | None, span: str | None) -> None:
    assert trace is None or (TRACE_RE.match(trace) and trace != "0" * 32), trace
    assert span is None or (SPAN_RE.match(span) and span != "0" * 16), span


# -- normalize_trace_id / normalize_span_id -----------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    (T, T),
    (T.upper(), T),
    ("4BF92f3577B34DA6a3ce929d0e0e4736", T),
    ("a3ce929d0e0e4736", "0000000000000000a3ce929d0e0e4736"),
    ("A3CE929D0E0E4736", "0000000000000000a3ce929d0e0e4736"),
    ("1234567890123456", "00000000000000001234567890123456"),  # 16 digits: hex, not decimal
    ("12345678901234567890123456789012", "12345678901234567890123456789012"),
    (XRAY, XRAY_HEX),
    ("1-5759E988-BD862E3FE1BE46A994272793", XRAY_HEX),
    (DD_TRACE, DD_TRACE_HEX),
    (int(DD_TRACE), DD_TRACE_HEX),
    ("1234", "000000000000000000000000000004d2"),
    (1, "00000000000000000000000000000001"),
    (2**64 - 1, "0000000000000000ffffffffffffffff"),
    ("18446744073709551615", "0000000000000000ffffffffffffffff"),
])
def test_normalize_trace_id_accepts(value, expected):
    """Every accepted trace id form normalizes to 32 lowercase hex."""
    assert normalize_trace_id(value) == expected


@pytest.mark.parametrize("value", [
    "0" * 32,                                   # all zero
    "0" * 16,                                   # all zero once padded
    "1-00000000-000000000000000000000000",      # all-zero X-Ray id
    T[:-1],                                     # 31 hex
    T + "a",                                    # 33 hex
    "a3ce929d0e0e473",                          # 15 hex
    "a3ce929d0e0e47361",                        # 17 hex
    "4bf92f3577b34da6a3ce929d",                 # 24 hex
    "4bf92f3577b34da6a3ce929d0e0e473z",         # non-hex
    "g" * 16,
    "2-5759e988-bd862e3fe1be46a994272793",      # X-Ray version 2
    "1-5759e98-bd862e3fe1be46a9942727930",      # X-Ray fields of the wrong widths
    TP,                                         # a traceparent is not a trace id
    "",
    " " + T,
    "-1",
    "+1234",
    "12 34",
    "０１２３",                                  # fullwidth digits are not ASCII decimal
    "18446744073709551616",                     # 2**64
    "123456789012345678901",                    # 21 digits
    0,
    -1,
    2**64,
    True,
    False,
    1.0,
    5915375271935744512.0,
    None,
    [T],
    {"id": T},
])
def test_normalize_trace_id_rejects(value):
    """Zero ids, wrong lengths, non-hex, out-of-range decimals and non-string/int types give None."""
    assert normalize_trace_id(value) is None


@pytest.mark.parametrize("value,expected", [
    (S, S),
    (S.upper(), S),
    ("53995C3F42cd8ad8", "53995c3f42cd8ad8"),
    ("1234567890123456", "1234567890123456"),  # 16 digits: hex
    ("1234", "00000000000004d2"),
    (1234, "00000000000004d2"),
    ("18446744073709551615", "ffffffffffffffff"),
    (2**64 - 1, "ffffffffffffffff"),
])
def test_normalize_span_id_accepts(value, expected):
    """Every accepted span id form normalizes to 16 lowercase hex."""
    assert normalize_span_id(value) == expected


@pytest.mark.parametrize("value", [
    "0" * 16, S[:-1], S + "0", T, "00f067aa0ba902bz", "", 0, -5, 2**64, "18446744073709551616",
    True, False, 3.0, None, [S], {"id": S}, XRAY,
])
def test_normalize_span_id_rejects(value):
    """Zero, wrong length, non-hex, out-of-range and non-string/int span ids give None."""
    assert normalize_span_id(value) is None


# -- conventions --------------------------------------------------------------------------------


@pytest.mark.parametrize("obj,trace,span", [
    pytest.param({"trace_id": T, "span_id": S}, T, S, id="canonical"),
    pytest.param({"traceId": T.upper(), "spanId": S.upper()}, T, S, id="otel-camel-uppercase"),
    pytest.param({"traceID": T, "spanID": S}, T, S, id="go-traceID"),
    pytest.param({"TraceId": T, "SpanId": S}, T, S, id="dotnet-TraceId"),
    pytest.param({"trace": {"id": T}, "span": {"id": S}}, T, S, id="ecs-nested"),
    pytest.param({"trace.id": T, "span.id": S}, T, S, id="ecs-dotted"),
    pytest.param({"traceparent": TP}, T, S, id="w3c"),
    pytest.param({"traceparent": f"00-{T.upper()}-{S.upper()}-01"}, T, S, id="w3c-uppercase"),
    pytest.param({"traceparent": f"  {TP}  "}, T, S, id="w3c-surrounding-space"),
    pytest.param({"traceparent": f"01-{T}-{S}-01-future-field"}, T, S, id="w3c-future-version"),
    pytest.param({"X-B3-TraceId": "a3ce929d0e0e4736", "X-B3-SpanId": "A2FB4A1D1A96D312"},
                 "0000000000000000a3ce929d0e0e4736", "a2fb4a1d1a96d312", id="b3-multi-16hex"),
    pytest.param({"X-B3-TraceId": T, "X-B3-SpanId": S}, T, S, id="b3-multi-32hex"),
    pytest.param({"x-b3-traceid": "80F198EE56343BA864FE8B2A57D3EFF7", "x-b3-spanid": "e457b5a2e4d86bd1"},
                 "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", id="b3-multi-lowercase-keys"),
    pytest.param({"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
                 "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", id="b3-single"),
    pytest.param({"b3": "a3ce929d0e0e4736-e457b5a2e4d86bd1"},
                 "0000000000000000a3ce929d0e0e4736", "e457b5a2e4d86bd1", id="b3-single-16hex"),
    pytest.param({"logging.googleapis.com/trace": f"projects/my-project/traces/{T}",
                  "logging.googleapis.com/spanId": S}, T, S, id="gcp"),
    pytest.param({"logging.googleapis.com/trace": T.upper(), "logging.googleapis.com/spanId": "12345"},
                 T, "0000000000003039", id="gcp-bare-hex-decimal-span"),
    pytest.param({"dd.trace_id": DD_TRACE, "dd.span_id": "1234"}, DD_TRACE_HEX, "00000000000004d2",
                 id="datadog-dotted-strings"),
    pytest.param({"dd.trace_id": int(DD_TRACE), "dd.span_id": 1234}, DD_TRACE_HEX, "00000000000004d2",
                 id="datadog-dotted-ints"),
    pytest.param({"dd": {"trace_id": 7890123456789012345, "span_id": 987654321}},
                 "00000000000000006d7f597af3e2df79", "000000003ade68b1", id="datadog-nested-ints"),
    pytest.param({"dd": {"trace_id": "7890123456789012345", "span_id": "987654321"}},
                 "00000000000000006d7f597af3e2df79", "000000003ade68b1", id="datadog-nested-strings"),
    pytest.param({"dd.trace_id": "1234567890123456", "dd.span_id": "1234567890123456"},
                 "0000000000000000000462d53c8abac0", "000462d53c8abac0", id="datadog-16-digits-decimal"),
    pytest.param({"dd.trace_id": "6660A1B20123456789ABCDEF01234567"},
                 "6660a1b20123456789abcdef01234567", None, id="datadog-128bit-hex"),
    pytest.param({"dd.trace_id": "18446744073709551615"}, "0000000000000000ffffffffffffffff", None,
                 id="datadog-max64"),
    pytest.param({"AWS-XRAY-TRACE-ID": XRAY}, XRAY_HEX, None, id="xray-bare"),
    pytest.param({"xray_trace_id": XRAY}, XRAY_HEX, None, id="xray_trace_id"),
    pytest.param({"X-Amzn-Trace-Id": f"Root={XRAY};Parent=53995c3f42cd8ad8;Sampled=1"},
                 XRAY_HEX, "53995c3f42cd8ad8", id="xray-header"),
    pytest.param({"x-amzn-trace-id": f"Self=1-67891234-12456789abcdef012345678;Root={XRAY};"
                                     "Parent=53995C3F42CD8AD8;Sampled=0"},
                 XRAY_HEX, "53995c3f42cd8ad8", id="xray-header-lowercase-alb-self"),
    pytest.param({"trace_id": XRAY}, XRAY_HEX, None, id="canonical-xray"),
    pytest.param({"trace_id": DD_TRACE, "span_id": "1234"}, DD_TRACE_HEX, "00000000000004d2",
                 id="canonical-decimal"),
])
def test_convention(obj, trace, span):
    """Each convention yields its exact normalized ids at top level and leaves source fields alone."""
    before = copy.deepcopy(obj)
    assert extract_fields(obj) == (trace, span)
    assert obj.get("trace_id") == trace
    assert obj.get("span_id") == span
    for key, value in before.items():
        if key not in ("trace_id", "span_id"):
            assert obj[key] == value
    assert "trace_id_original" not in obj
    assert "span_id_original" not in obj


@pytest.mark.parametrize("traceparent", [
    pytest.param(f"ff-{T}-{S}-01", id="version-ff"),
    pytest.param(f"FF-{T}-{S}-01", id="version-FF"),
    pytest.param(f"00-{T}-{S}-01-extra", id="version-00-extra-field"),
    pytest.param(f"00-{T}-{S}-01-", id="version-00-empty-extra-field"),
    pytest.param(f"00-{T}-{S}", id="no-flags"),
    pytest.param(f"00-{T}-{S}-1", id="one-digit-flags"),
    pytest.param(f"00-{T[:-1]}-{S}-01", id="short-trace"),
    pytest.param(f"00-{T}-{S}0-01", id="long-span"),
    pytest.param(f"0-{T}-{S}-01", id="one-digit-version"),
    pytest.param(f"zz-{T}-{S}-01", id="non-hex-version"),
    pytest.param(f"00_{T}_{S}_01", id="wrong-separator"),
    pytest.param(f"00-{'0' * 32}-{S}-01", id="zero-trace"),
    pytest.param(f"00-{T}-{'0' * 16}-01", id="zero-span"),
    pytest.param("not a traceparent", id="garbage"),
    pytest.param("", id="empty"),
    pytest.param(42, id="int"),
])
def test_traceparent_rejected(traceparent):
    """An invalid traceparent yields neither id (the whole header is refused) and stays as it was."""
    obj = {"traceparent": traceparent}
    assert extract_fields(obj) == (None, None)
    assert obj == {"traceparent": traceparent}


@pytest.mark.parametrize("b3", ["1", "0", "d", "", f"{T}", f"{'0' * 32}-{S}-1"])
def test_b3_single_without_ids_rejected(b3):
    """A sampling-only, lone-trace, zero-trace or non-hex b3 header yields no trace id."""
    trace, _ = extract_fields({"b3": b3})
    assert trace is None


def test_b3_multi_header_is_hex_only():
    """B3 multi headers do not accept decimal ids."""
    obj = {"X-B3-TraceId": "5915375271935744512", "X-B3-SpanId": "1234"}
    assert extract_fields(obj) == (None, None)
    assert "trace_id" not in obj and "span_id" not in obj


@pytest.mark.parametrize("obj", [
    {"dd.trace_id": "0", "dd.span_id": "0"},
    {"dd.trace_id": 0, "dd.span_id": 0},
    {"dd": {"trace_id": 0, "span_id": "0"}},
    {"dd.trace_id": "18446744073709551616", "dd.span_id": "18446744073709551616"},
    {"dd.trace_id": 2**64, "dd.span_id": 2**64},
    {"dd": {"trace_id": 2**64 + 5, "span_id": 2**70}},
    {"dd.trace_id": -1, "dd.span_id": -1},
    {"dd.trace_id": True, "dd.span_id": True},
    {"dd.trace_id": 1.0, "dd.span_id": 1.0},
    {"dd.trace_id": "0x1234", "dd.span_id": "0x1234"},
    {"dd.span_id": S},  # Datadog span ids are decimal only
])
def test_datadog_out_of_range_rejected(obj):
    """Datadog decimal 0, values >= 2**64, negative, bool, float and non-decimal ids are refused."""
    before = copy.deepcopy(obj)
    assert extract_fields(obj) == (None, None)
    assert obj == before


def test_datadog_dotted_beats_nested():
    """The dotted `dd.trace_id` / `dd.span_id` rank before the nested `dd` object."""
    obj = {"dd": {"trace_id": "42", "span_id": "43"}, "dd.trace_id": "7", "dd.span_id": "8"}
    assert extract_fields(obj) == ("00000000000000000000000000000007", "0000000000000008")


def test_ecs_dotted_beats_nested():
    """The dotted `trace.id` / `span.id` rank before the nested `trace` / `span` objects."""
    obj = {"trace": {"id": "80f198ee56343ba864fe8b2a57d3eff7"}, "span": {"id": "e457b5a2e4d86bd1"},
           "trace.id": T, "span.id": S}
    assert extract_fields(obj) == (T, S)


def test_ecs_nested_non_object_ignored():
    """A `trace` or `span` key that is not an object carries no id."""
    obj = {"trace": T, "span": S}
    assert extract_fields(obj) == (None, None)
    assert obj == {"trace": T, "span": S}


def test_xray_zero_root_rejected():
    """An X-Ray header whose Root is all zeros yields no trace id."""
    obj = {"X-Amzn-Trace-Id": "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8;Sampled=1"}
    assert extract_fields(obj) == (None, "53995c3f42cd8ad8")


@pytest.mark.parametrize("bad", [
    "0" * 32, "0" * 16, T[:-1], T + "0", "zz" + T[2:], "not-a-trace", True, False, 1.5, [T], {"id": T},
])
def test_malformed_canonical_trace_id_alone_set_aside(bad):
    """A malformed `trace_id` with no other source is never left as the id: it moves to
    `trace_id_original`, reported, and None is returned."""
    obj = {"msg": "hello", "trace_id": bad}
    events: list[str] = []
    assert extract_fields(obj, lambda e, n: events.append(e)) == (None, None)
    assert obj == {"msg": "hello", "trace_id_original": bad}
    assert events == ["trace_id_set_aside"]


def test_null_canonical_trace_id_alone_removed():
    """A null `trace_id` carries no id: removed, nothing set aside or reported."""
    obj = {"msg": "hello", "trace_id": None, "span_id": ""}
    events: list[str] = []
    assert extract_fields(obj, lambda e, n: events.append(e)) == (None, None)
    assert obj == {"msg": "hello"} and events == []


def test_malformed_canonical_span_id_alone_set_aside():
    """A malformed `span_id` beside a normalized `trace_id` moves to `span_id_original`."""
    obj = {"trace_id": T, "span_id": "span-7"}
    assert extract_fields(obj) == (T, None)
    assert obj == {"trace_id": T, "span_id_original": "span-7"}


def test_malformed_canonical_replaced_by_camel_keeps_original():
    """A malformed `trace_id`/`span_id` replaced by a valid camel-case id moves to `*_original`."""
    obj = {"trace_id": "req-8842", "traceId": T.upper(), "span_id": "0" * 16, "spanId": S}
    assert extract_fields(obj) == (T, S)
    assert obj == {
        "trace_id": T, "trace_id_original": "req-8842", "traceId": T.upper(),
        "span_id": S, "span_id_original": "0" * 16, "spanId": S,
    }


def test_malformed_non_string_canonical_kept_in_original():
    """A non-string malformed `trace_id` (a number 0) is also kept in `trace_id_original`."""
    obj = {"trace_id": 0, "traceparent": TP}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "trace_id_original": 0, "span_id": S, "traceparent": TP}


@pytest.mark.parametrize("empty", [None, ""])
def test_null_or_empty_canonical_simply_replaced(empty):
    """A null or empty `trace_id`/`span_id` is replaced without creating `*_original`."""
    obj = {"trace_id": empty, "span_id": empty, "traceparent": TP}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "span_id": S, "traceparent": TP}


def test_original_key_taken_moves_to_log_original():
    """If `trace_id_original` is taken too, the malformed value goes under `log.original`, merged
    into an app's `log` object when there is one."""
    obj = {"trace_id": "bad", "trace_id_original": "older", "traceId": T,
           "span_id": "bad-span", "span_id_original": "older", "spanId": S, "log": {"logger": "x"}}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "trace_id_original": "older", "traceId": T,
                   "span_id": S, "span_id_original": "older", "spanId": S,
                   "log": {"logger": "x", "original": {"trace_id": "bad", "span_id": "bad-span"}}}
    alone = {"trace_id": "0" * 32, "trace_id_original": "older"}
    assert extract_fields(alone) == (None, None)
    assert alone == {"trace_id_original": "older", "log": {"original": {"trace_id": "0" * 32}}}


@pytest.mark.parametrize("log", ["a string", None, {"original": "text"}, {"original": {"trace_id": "x"}}])
def test_every_place_taken_drops_and_reports(log):
    """With `trace_id_original` and `log.original.trace_id` both unusable, the invalid value is
    dropped (never shipped as the id) and reported as `trace_id_dropped`; the app's values stay."""
    obj = {"trace_id": "not-a-trace-id", "trace_id_original": "older", "log": copy.deepcopy(log)}
    events: list[tuple[str, int]] = []
    assert extract_fields(obj, lambda e, n: events.append((e, n))) == (None, None)
    assert obj == {"trace_id_original": "older", "log": log}
    assert events == [("trace_id_dropped", 1)]


def test_uppercase_canonical_lowercased_in_place():
    """An uppercase canonical `trace_id`/`span_id` is lowercased in place, with no `*_original`."""
    obj = {"trace_id": T.upper(), "span_id": S.upper(), "msg": "ok"}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "span_id": S, "msg": "ok"}


def test_short_canonical_trace_id_padded_in_place():
    """A 16-hex canonical `trace_id` is padded to 32 hex in place, with no `trace_id_original`."""
    obj = {"trace_id": "A3CE929D0E0E4736"}
    assert extract_fields(obj) == ("0000000000000000a3ce929d0e0e4736", None)
    assert obj == {"trace_id": "0000000000000000a3ce929d0e0e4736"}


def test_normalized_trace_with_uppercase_span():
    """A normalized `trace_id` is kept and an uppercase `span_id` next to it is lowercased."""
    obj = {"trace_id": T, "span_id": S.upper()}
    assert extract_fields(obj) == (T, S)
    assert obj == {"trace_id": T, "span_id": S}


def test_normalized_trace_with_malformed_span_and_valid_alternative():
    """With a normalized `trace_id`, a malformed `span_id` is replaced by `spanId` and kept as original."""
    obj = {"trace_id": T, "span_id": "abc", "spanId": "53995C3F42CD8AD8"}
    assert extract_fields(obj) == (T, "53995c3f42cd8ad8")
    assert obj == {"trace_id": T, "span_id": "53995c3f42cd8ad8", "span_id_original": "abc",
                   "spanId": "53995C3F42CD8AD8"}


def test_record_without_trace_keys_untouched():
    """A record with none of the known keys gets nothing and is not modified."""
    obj = {"msg": "GET /health 200", "level": "info", "traces": T, "TRACE_ID": T, "spans": [S]}
    before = copy.deepcopy(obj)
    assert extract_fields(obj) == (None, None)
    assert obj == before


def test_digit_ambiguity_canonical_hex_datadog_decimal():
    """16 digits are hex under `trace_id` but decimal under `dd.trace_id`."""
    assert extract_fields({"trace_id": "1234567890123456"}) == ("00000000000000001234567890123456", None)
    assert extract_fields({"dd.trace_id": "1234567890123456"}) == ("0000000000000000000462d53c8abac0", None)


# -- priority ----------------------------------------------------------------------------------

# (key, value, normalized trace id), in priority order; each source carries a different id.
TRACE_CHAIN = [
    ("trace_id", "0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319c"),
    ("traceId", "5B8AA5A2D2C872E8321CF37308D69DF2", "5b8aa5a2d2c872e8321cf37308d69df2"),
    ("traceID", "463ac35c9f6413ad48485a3953bb6124", "463ac35c9f6413ad48485a3953bb6124"),
    ("TraceId", "a3ce929d0e0e4736", "0000000000000000a3ce929d0e0e4736"),
    ("trace.id", "1e8f0b7c9d6a5b4c3d2e1f0a9b8c7d6e", "1e8f0b7c9d6a5b4c3d2e1f0a9b8c7d6e"),
    ("trace", {"id": "2f9a1b8c7d6e5f4a3b2c1d0e9f8a7b6c"}, "2f9a1b8c7d6e5f4a3b2c1d0e9f8a7b6c"),
    ("traceparent", TP, T),
    ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-traceid", "e457b5a2e4d86bd1", "0000000000000000e457b5a2e4d86bd1"),
    ("b3", "6b221d5bc9e6496c-2f6e1c5a3b4d7e8f-1", "00000000000000006b221d5bc9e6496c"),
    ("logging.googleapis.com/trace", "projects/my-project/traces/06796866738c859f2f19b7cfb3214824",
     "06796866738c859f2f19b7cfb3214824"),
    ("dd.trace_id", DD_TRACE, DD_TRACE_HEX),
    ("dd", {"trace_id": 7890123456789012345}, "00000000000000006d7f597af3e2df79"),
    ("X-Amzn-Trace-Id", f"Root={XRAY};Parent=53995c3f42cd8ad8;Sampled=1", XRAY_HEX),
    ("x-amzn-trace-id", "Root=1-6660a1b2-0123456789abcdef01234567;Sampled=0",
     "6660a1b20123456789abcdef01234567"),
    ("AWS-XRAY-TRACE-ID", "1-58406520-a006649127e371903a2de979", "58406520a006649127e371903a2de979"),
    ("xray_trace_id", "1-5f84c7a3-9c3b5a1d2e4f6a7b8c9d0e1f", "5f84c7a39c3b5a1d2e4f6a7b8c9d0e1f"),
]
SPAN_CHAIN = [
    ("span_id", "b7ad6b7169203331", "b7ad6b7169203331"),
    ("spanId", "53995C3F42CD8AD8", "53995c3f42cd8ad8"),
    ("spanID", "c0ffee0ddba11000", "c0ffee0ddba11000"),
    ("SpanId", "2f6e1c5a3b4d7e8f", "2f6e1c5a3b4d7e8f"),
    ("span.id", "1a2b3c4d5e6f7081", "1a2b3c4d5e6f7081"),
    ("span", {"id": "9f8e7d6c5b4a3928"}, "9f8e7d6c5b4a3928"),
    ("traceparent", TP, S),
    ("X-B3-SpanId", "a2fb4a1d1a96d312", "a2fb4a1d1a96d312"),
    ("x-b3-spanid", "5ab2c9d1e0f3a4b5", "5ab2c9d1e0f3a4b5"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", "e457b5a2e4d86bd1"),
    ("logging.googleapis.com/spanId", "000000000000004a", "000000000000004a"),
    ("dd.span_id", "1234", "00000000000004d2"),
    ("dd", {"span_id": 987654321}, "000000003ade68b1"),
    ("X-Amzn-Trace-Id", f"Root={XRAY};Parent=53995c3f42cd8ad8;Sampled=1", "53995c3f42cd8ad8"),
    ("x-amzn-trace-id", "Root=1-6660a1b2-0123456789abcdef01234567;Parent=0a1b2c3d4e5f6071;Sampled=0",
     "0a1b2c3d4e5f6071"),
]


@pytest.mark.parametrize("start", range(len(TRACE_CHAIN)), ids=[k for k, _, _ in TRACE_CHAIN])
def test_trace_priority(start):
    """With this source and every lower-ranked one present, this source's trace id wins."""
    obj = {key: copy.deepcopy(value) for key, value, _ in TRACE_CHAIN[start:]}
    before = copy.deepcopy(obj)
    trace, _ = extract_fields(obj)
    assert trace == TRACE_CHAIN[start][2]
    assert obj["trace_id"] == TRACE_CHAIN[start][2]
    assert "trace_id_original" not in obj
    for key, value in before.items():
        if key not in ("trace_id", "span_id"):
            assert obj[key] == value


@pytest.mark.parametrize("start", range(len(SPAN_CHAIN)), ids=[k for k, _, _ in SPAN_CHAIN])
def test_span_priority(start):
    """With this source and every lower-ranked one present, this source's span id wins."""
    obj = {key: copy.deepcopy(value) for key, value, _ in SPAN_CHAIN[start:]}
    before = copy.deepcopy(obj)
    _, span = extract_fields(obj)
    assert span == SPAN_CHAIN[start][2]
    assert obj["span_id"] == SPAN_CHAIN[start][2]
    assert "span_id_original" not in obj
    for key, value in before.items():
        if key not in ("trace_id", "span_id"):
            assert obj[key] == value


def test_camel_case_variant_order():
    """Among camel-case keys `traceId` beats `traceID` beats `TraceId` (and the same for spans)."""
    obj = {"TraceId": "33333333333333333333333333333333", "traceID": "22222222222222222222222222222222",
           "traceId": "11111111111111111111111111111111",
           "SpanId": "3333333333333333", "spanID": "2222222222222222", "spanId": "1111111111111111"}
    assert extract_fields(obj) == ("11111111111111111111111111111111", "1111111111111111")
    del obj["trace_id"], obj["span_id"], obj["traceId"], obj["spanId"]
    assert extract_fields(obj) == ("22222222222222222222222222222222", "2222222222222222")


def test_invalid_higher_source_falls_through():
    """An invalid higher-ranked source is skipped for the first valid one, separately per id."""
    obj = {"traceId": "nope", "traceparent": f"ff-{T}-{S}-01", "b3": f"{'0' * 32}-{S}-1",
           "dd.trace_id": "42", "spanId": "c0ffee0ddba11000"}
    assert extract_fields(obj) == ("0000000000000000000000000000002a", "c0ffee0ddba11000")
    assert obj["traceId"] == "nope"
    assert obj["traceparent"] == f"ff-{T}-{S}-01"
    assert "trace_id_original" not in obj


def test_trace_and_span_from_different_sources():
    """The trace id and the span id are chosen independently, each from its own best source."""
    obj = {"traceparent": TP, "spanId": "b7ad6b7169203331"}
    assert extract_fields(obj) == (T, "b7ad6b7169203331")


# -- plain text ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,trace,span", [
    pytest.param(f"level=info msg=\"charge ok\" trace_id={T} span_id={S} dur=12ms", T, S, id="logfmt"),
    pytest.param(f"level=info trace_id=\"{T.upper()}\" span_id='{S.upper()}'", T, S, id="quoted-values"),
    pytest.param(f"handled request traceId: {T}", T, None, id="camel-colon"),
    pytest.param(f"traceID={T} spanID={S}", T, S, id="go-camel"),
    pytest.param(f"TraceId = {T}, SpanId = {S}", T, S, id="dotnet-spaced"),
    pytest.param(f'{{"level":"info","traceId":"{T}","spanId":"{S}"}}', T, S, id="json-like-text"),
    pytest.param(f"trace.id={T} span.id={S}", T, S, id="ecs-dotted"),
    pytest.param(f"GET /api traceparent={TP} 200", T, S, id="traceparent"),
    pytest.param(f"dd.trace_id={DD_TRACE} dd.span_id=1234 dd.service=web", DD_TRACE_HEX, "00000000000004d2",
                 id="datadog-decimal"),
    pytest.param("dd.trace_id=1234567890123456", "0000000000000000000462d53c8abac0", None,
                 id="datadog-16-digits-decimal"),
    pytest.param(f"[trace_id={T}] [span_id={S}]", T, S, id="bracketed"),
    pytest.param(f"trace_id={T}, span_id={S};", T, S, id="punctuated"),
    pytest.param(f"trace_id=a3ce929d0e0e4736 span_id={S}", "0000000000000000a3ce929d0e0e4736", S,
                 id="16-hex-trace-padded"),
])
def test_extract_text(text, trace, span):
    """Ids written into a plain-text line are found and normalized."""
    assert extract_text(text) == (trace, span)


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param("INFO starting server on :8080", id="no-ids"),
    pytest.param("tracing enabled, span exporter=otlp", id="words-only"),
    pytest.param(f"xtrace_id={T} myspan_id={S}", id="prefixed-key"),
    pytest.param(f"mytraceId={T} subspanId={S}", id="prefixed-camel-key"),
    pytest.param(f"trace_idx={T} span_ids={S}", id="suffixed-key"),
    pytest.param(f"trace_id_original={T}", id="original-key"),
    pytest.param(f"foo.trace_id={T} foo.span_id={S}", id="dotted-prefix"),
    pytest.param(f"trace_id={T}ff span_id={S}00", id="longer-values"),
    pytest.param(f"trace_id={'0' * 32} span_id={'0' * 16}", id="zero-ids"),
    pytest.param(f"traceparent=ff-{T}-{S}-01", id="traceparent-ff"),
    pytest.param(f"traceparent={TP}-extra", id="traceparent-00-extra"),
    pytest.param(f"trace_id {T}", id="no-separator"),
])
def test_extract_text_no_ids(text):
    """Lines without ids, with prefixed/suffixed keys or with invalid values give (None, None)."""
    assert extract_text(text) == (None, None)


def test_extract_text_priority():
    """In text the canonical key beats camel case beats traceparent beats Datadog, wherever they are."""
    t2, t3 = "5b8aa5a2d2c872e8321cf37308d69df2", "0af7651916cd43dd8448eb211c80319c"
    assert extract_text(f"dd.trace_id=42 traceparent={TP} TraceId={t2} trace_id={t3}") == (t3, S)
    assert extract_text(f"dd.trace_id=42 traceparent={TP} TraceId={t2}") == (t2, S)
    assert extract_text(f"dd.trace_id=42 dd.span_id=7 traceparent={TP}") == (T, S)
    assert extract_text(f"span_id=b7ad6b7169203331 traceparent={TP}") == (T, "b7ad6b7169203331")


def test_extract_text_invalid_higher_key_falls_through():
    """A malformed canonical key in text does not hide a valid lower-ranked one."""
    assert extract_text(f"trace_id=unknown traceId={T} span_id=- spanId={S}") == (T, S)


# -- continuation lines -------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "\tat com.example.OrderService.place(OrderService.java:42)",
    "    at com.example.OrderService.place(OrderService.java:42)",
    "at com.example.OrderService.place(OrderService.java:42)",
    "Caused by: java.io.IOException: No space left on device",
    "Suppressed: java.lang.IllegalStateException: close failed",
    "\t... 12 more",
    "... 12 more",
    "\t... 3 common frames omitted",
    "java.lang.IllegalStateException: x",
    "com.example.payments.CardDeclinedException",
    "ValueError: bad",
    "KeyError: 'user_id'",
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
    "KeyboardInterrupt",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in f',
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
    "goroutine 1 [running]:",
    "goroutine 7 [chan receive, 2 minutes]:",
    "main.main()",
    "main.(*Server).handle(0xc000010000, {0x0, 0x0})",
    "panic(0x4b9a20, 0xc00000e1e0)",
    "\t/app/main.go:12 +0x1d",
    "created by main.start",
    "panic: runtime error: index out of range [5] with length 3",
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x48f2a1]",
])
def test_is_continuation_true(line):
    """Java, Python and Go stack-trace lines are continuations."""
    assert is_continuation(line) is True


@pytest.mark.parametrize("line", [
    "",
    " ",
    "\t \t",
    "\n",
    "The quick brown fox jumps over the lazy dog.",
    "INFO starting server",
    "2024-05-01T12:00:00Z ERROR payment failed for order 1234",
    '{"level":"error","msg":"boom","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}',
    "Error: connect ECONNREFUSED 127.0.0.1:5432",
    "Warning: low disk space",
    "main",
    "shutdown()",
    "...",
    "... and more",
    "goroutine leak detected",
    "[INFO] ready",
    "12 more requests queued",
])
def test_is_continuation_false(line):
    """Blank lines, ordinary messages and JSON object text are not continuations."""
    assert is_continuation(line) is False


# -- properties ---------------------------------------------------------------------------------

CONVENTION_KEYS = [
    "trace_id", "span_id", "traceId", "traceID", "TraceId", "spanId", "spanID", "SpanId",
    "trace.id", "span.id", "trace", "span", "traceparent", "X-B3-TraceId", "X-B3-SpanId",
    "x-b3-traceid", "x-b3-spanid", "b3", "logging.googleapis.com/trace", "logging.googleapis.com/spanId",
    "dd.trace_id", "dd.span_id", "dd", "X-Amzn-Trace-Id", "x-amzn-trace-id", "AWS-XRAY-TRACE-ID",
    "xray_trace_id", "trace_id_original", "span_id_original", "id",
]
_HEX = "0123456789abcdefABCDEF"
id_like = st.one_of(
    st.text(_HEX, min_size=14, max_size=34),
    st.sampled_from(["0" * 32, "0" * 16, T, S, T.upper(), XRAY, TP, f"ff-{T}-{S}-01", f"{T}-{S}-1",
                     f"Root={XRAY};Parent={S};Sampled=1", f"projects/p/traces/{T}"]),
    st.integers(min_value=-5, max_value=2**64 + 5).map(str),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.builds("{}-{}-{}-{}".format, st.text(_HEX, min_size=2, max_size=2),
              st.text(_HEX, min_size=32, max_size=32), st.text(_HEX, min_size=16, max_size=16),
              st.text(_HEX, min_size=2, max_size=2)),
    st.builds("1-{}-{}".format, st.text(_HEX, min_size=8, max_size=8),
              st.text(_HEX, min_size=24, max_size=24)),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), id_like,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(CONVENTION_KEYS), st.text(max_size=8)), children,
                        max_size=4),
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.one_of(st.sampled_from(CONVENTION_KEYS), st.text(max_size=12)), json_values, max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(json_objects)
def test_extract_fields_property(obj):
    """For any JSON-like object extract_fields never raises, returns well-shaped ids and sets them."""
    trace, span = extract_fields(obj)
    _check_shape(trace, span)
    if trace is not None:
        assert obj["trace_id"] == trace
    if span is not None:
        assert obj["span_id"] == span


@settings(max_examples=400, deadline=None)
@given(json_objects)
def test_extract_fields_keeps_other_fields(obj):
    """extract_fields only ever writes the canonical keys, their `_original` keys and
    `log.original.<canonical key>`."""
    shallow = dict(obj)
    deep = copy.deepcopy(obj)
    extract_fields(obj)
    written = {"trace_id", "span_id", "trace_id_original", "span_id_original", "log"}
    for key in shallow:
        if key not in written:
            assert obj[key] is shallow[key]
            assert [obj[key]] == [deep[key]]  # a list compares items by identity first: NaN-safe
    assert set(obj) - set(shallow) <= written
    if "log" in obj and [obj["log"]] != [deep.get("log")]:  # only log.original.<id> added
        added = dict(obj["log"]["original"])
        for k in ("trace_id", "span_id"):
            if "log" in deep and k in deep["log"].get("original", {}):
                assert [added.pop(k)] == [deep["log"]["original"][k]]
        assert set(added) <= {"trace_id", "span_id"}


text_keys = st.sampled_from([
    "trace_id", "span_id", "traceId", "traceID", "TraceId", "spanId", "spanID", "SpanId", "trace.id",
    "span.id", "dd.trace_id", "dd.span_id", "traceparent", "xtrace_id",
])
text_lines = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            st.builds("{}{}{}".format, text_keys, st.sampled_from(["=", ": ", "=\"", " = ", ":"]),
                      st.one_of(id_like.map(str), st.text(max_size=20))),
            st.text(max_size=15),
        ),
        max_size=6,
    ).map(" ".join),
)


@settings(max_examples=400, deadline=None)
@given(text_lines)
def test_extract_text_property(text):
    """For any text extract_text never raises and returns well-shaped ids."""
    trace, span = extract_text(text)
    _check_shape(trace, span)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), text_lines,
                 st.builds("{}{}".format, st.sampled_from(["\tat ", "at ", "goroutine ", "... ", "main.",
                                                           "Caused by: ", "a.b.", "  File \""]),
                           st.text(max_size=100))))
def test_is_continuation_property(text):
    """For any text is_continuation never raises and returns a bool."""
    assert is_continuation(text) in (True, False)


_FRAGMENTS = st.sampled_from([
    "trace_id", "span_id", "dd.", "dd.trace_id", "dd.span_id", "traceparent", "TraceId", "SpanId",
    "traceID", "spanID", "trace.id", "span.id", "=", ":", " ", '"', "'", "abc", "x", ".", "-", "_",
    "race", "pan", "t", "s", "d", "\t", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=12).map("".join))
def test_text_key_search_finds_what_the_regex_finds(msg):
    """The substring-guided key search yields exactly the matches of a plain regex scan."""
    fast = trace._text_keys(msg, msg.find("race"), msg.find("pan"))
    assert [m.span() for m in fast] == [m.span() for m in trace._TEXT_KV.finditer(msg)]
