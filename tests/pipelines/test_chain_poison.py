"""Poison lines: whatever one line holds, the chain ships it (raw, flagged, counted) and goes on."""

from __future__ import annotations

import json
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.chain import ChainSpec, FileProcessor
from tests.pipelines.test_chain import TS, docker

DEEP = "[" * 300 + "]" * 300  # orjson parses to depth 1024 but encodes to 254


def proc(counts: Counter[str], **spec: object) -> FileProcessor:
    return FileProcessor(ChainSpec(host_name="h", **spec), "1:2:ff",  # type: ignore[arg-type]
                         "/var/log/containers/p_ns_c-" + "a" * 64 + ".log",
                         {"kubernetes": {"namespace": "ns"}}, lambda name, n: counts.update({name: n}))


def cri(payload: str, stream: str = "stdout") -> bytes:
    return f"{TS} {stream} F {payload}".encode()


def docker_line(payload: str) -> bytes:
    return docker(payload + "\n")  # a whole line: json-file keeps its newline in `log`


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_deep_nesting_between_good_lines_is_shipped_raw(fmt: str) -> None:
    """A JSON line nested deeper than orjson encodes comes out as its text, flagged unparsable,
    and the good lines around it come out as usual."""
    line = docker_line if fmt == "docker" else cri
    payloads = ['{"msg": "before", "trace_id": "' + "1" * 32 + '"}', '{"a": ' + DEEP + "}",
                '{"msg": "after"}']
    counts: Counter[str] = Counter()
    seg = proc(counts).process([line(p) for p in payloads], 0, 0.0)
    recs = [orjson.loads(r) for r in seg.records]
    assert [r.get("msg") for r in recs] == ["before", None, "after"]
    assert recs[0]["trace_id"] == "1" * 32 and "unparsable" not in recs[0]["log"].get("flags", [])
    poison = recs[1]
    assert poison["message"] == payloads[1] and poison["log"]["flags"] == ["unparsable"]
    assert poison["kubernetes"] == {"namespace": "ns"} and poison["@timestamp"]
    assert len(seg.offsets) == len(seg.trace_ids) == len(seg.span_ids) == 3
    assert counts["unparsable"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20)


def nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = {"k": leaf}
    return leaf


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["docker", "cri"]),
       objs=st.lists(st.one_of(
           st.dictionaries(st.text(max_size=12), json_values, max_size=6),
           st.builds(nested, st.integers(min_value=200, max_value=600), json_values)),
           min_size=1, max_size=6))
def test_any_json_object_becomes_one_record(fmt: str, objs: list[object]) -> None:
    """Structured JSON of any shape (deep nesting, huge numbers, odd keys, every plane) gives one
    decodable record per line, never an exception."""
    line = docker_line if fmt == "docker" else cri
    payloads = [json.dumps(o, ensure_ascii=False) for o in objs]  # orjson cannot write the deep ones
    seg = proc(Counter()).process([line(p) for p in payloads], 0, 0.0)
    assert len(seg.records) == len(payloads) == len(seg.offsets)
    for r in seg.records:
        assert isinstance(orjson.loads(r), dict)


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from(["docker", "cri", "text"]),
       lines=st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ")), min_size=1, max_size=8))
def test_random_bytes_never_raise(fmt: str, lines: list[bytes]) -> None:
    """Arbitrary bytes in any format: the chain returns decodable records and never raises."""
    p = proc(Counter(), format=fmt)
    seg = p.process(lines, 0, 0.0)
    tail = p.flush(sum(len(x) + 1 for x in lines), 0.0)
    for r in seg.records + tail.records:
        assert isinstance(orjson.loads(r), dict)
    assert len(seg.records) == len(seg.offsets) == len(seg.trace_ids)
