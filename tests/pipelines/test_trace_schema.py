"""The trace-id schema of the output: `trace_id` is 32 lowercase hex and `span_id` 16, neither all
zero, or they are absent, whatever an app wrote under those names; an invalid value is set aside
(`<key>_original`, else `log.original.<key>`), or dropped and reported when both are taken."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.chain import ChainSpec, FileProcessor
from pipelines.trace import extract_fields
from tests.pipelines.test_trace import json_objects

TRACE = re.compile(r"[0-9a-f]{32}")
SPAN = re.compile(r"[0-9a-f]{16}")
TS = "2026-12-04T10:00:00.000000001Z"


def assert_schema(rec: dict[str, Any]) -> None:
    if "trace_id" in rec:
        t = rec["trace_id"]
        assert type(t) is str and TRACE.fullmatch(t) and t != "0" * 32, t
    if "span_id" in rec:
        s = rec["span_id"]
        assert type(s) is str and SPAN.fullmatch(s) and s != "0" * 16, s


# the canonical keys more often than json_objects alone gives them, with invalid values
with_canonical = st.fixed_dictionaries(
    {}, optional={"trace_id": st.one_of(st.just("not-a-trace-id"), st.just("0" * 32), st.integers(),
                                        st.text(max_size=40)),
                  "span_id": st.one_of(st.just("0" * 16), st.text(max_size=20), st.integers()),
                  "trace_id_original": st.text(max_size=4), "span_id_original": st.text(max_size=4),
                  "log": st.one_of(st.text(max_size=4), st.fixed_dictionaries(
                      {}, optional={"original": st.one_of(st.text(max_size=4), st.fixed_dictionaries(
                          {}, optional={"trace_id": st.text(max_size=4)}))}))},
).flatmap(lambda fixed: json_objects.map(lambda other: {**other, **fixed}))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(json_objects, with_canonical))
def test_ids_always_match_the_schema_and_invalid_ones_are_kept(obj: dict[str, Any]) -> None:
    """Any object: afterwards `trace_id`/`span_id` are valid normalized ids or absent; an invalid
    value that was there is in `<key>_original` or `log.original.<key>`, or reported dropped."""
    before = copy.deepcopy(obj)
    events: list[str] = []
    tid, sid = extract_fields(obj, lambda e, n: events.append(e))
    assert_schema(obj)
    assert obj.get("trace_id") == tid and obj.get("span_id") == sid
    for key, found in (("trace_id", tid), ("span_id", sid)):
        old = before.get(key)
        if key not in before or old is None or old == "":
            assert f"{key}_set_aside" not in events and f"{key}_dropped" not in events
            continue
        if f"{key}_dropped" in events:
            assert found is None or found != old
            continue
        if f"{key}_set_aside" in events:
            logd = obj.get("log")
            kept = [obj.get(f"{key}_original")]
            if type(logd) is dict and type(logd.get("original")) is dict:
                kept.append(logd["original"].get(key))
            assert [old] in [[k] for k in kept]  # list equality: NaN-safe
        else:  # valid under its own key: normalized in place
            assert found is not None


def _encodable(obj: dict[str, Any]) -> bool:
    try:
        orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits: a JSON log line orjson could not parse either
        return False
    return True


def lines_of(objs: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps({"log": orjson.dumps(o).decode() + "\n", "stream": "stdout", "time": TS})
            for o in objs]


@pytest.mark.parametrize("target", ["", "app"])
@settings(max_examples=200, deadline=None)
@given(objs=st.lists(st.one_of(json_objects, with_canonical).filter(_encodable), min_size=1, max_size=5))
def test_chain_output_ids_match_the_schema(target: str, objs: list[dict[str, Any]]) -> None:
    """Through the whole chain (docker lines, payload merged or under `parse.target`): every
    encoded record's top-level ids match the schema, and the segment's ids are the record's."""
    p = FileProcessor(ChainSpec(host_name="h", target=target), "1:2:ff", "/logs/x.log", {},
                      lambda name, n: None)
    seg = p.process(lines_of(objs), 0, 0.0)
    assert len(seg.records) == len(objs)
    for raw, tid, sid in zip(seg.records, seg.trace_ids, seg.span_ids, strict=True):
        rec = orjson.loads(raw)
        assert_schema(rec)
        assert rec.get("trace_id") == tid and rec.get("span_id") == sid


def test_garbage_and_all_zero_trace_ids_never_shipped_as_trace_id() -> None:
    """The issue's finding: `"trace_id": "not-a-trace-id"` and an all-zero id were shipped as the
    id. Now they are under `trace_id_original` / `log.original`, counted by event."""
    counted: dict[str, int] = {}
    p = FileProcessor(ChainSpec(host_name="h"), "1:2:ff", "/logs/x.log", {},
                      lambda name, n: counted.__setitem__(name, counted.get(name, 0) + n))
    objs = [{"msg": "a", "trace_id": "not-a-trace-id"}, {"msg": "b", "trace_id": "0" * 32},
            {"msg": "c", "trace_id": "0" * 32, "trace_id_original": "mine", "span_id": "0" * 16}]
    recs = [orjson.loads(r) for r in p.process(lines_of(objs), 0, 0.0).records]
    assert all("trace_id" not in r and "span_id" not in r for r in recs)
    assert recs[0]["trace_id_original"] == "not-a-trace-id"
    assert recs[1]["trace_id_original"] == "0" * 32
    assert recs[2]["trace_id_original"] == "mine"
    assert recs[2]["log"]["original"] == {"trace_id": "0" * 32}
    assert recs[2]["log"]["file"] == {"path": "/logs/x.log"}  # merged with the agent's log
    assert recs[2]["span_id_original"] == "0" * 16
    assert counted == {"trace_id_set_aside": 3, "span_id_set_aside": 1}
