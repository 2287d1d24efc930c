"""Spliced records against the dict path: the same fields and values, record for record.

`ChainSpec(splice=False)` is the reference: every JSON payload parsed, changed as a dict and
encoded again (the chain before splicing). The spliced chain must give records that decode to the
same objects (key order aside) on the benchmark workloads and on any well-formed JSON object;
the documented differences (duplicate keys, integers beyond 64 bits) have their own tests.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.generate import generate_tree
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.enrich import kubernetes_from_paths
from pipelines.formats import CriDecoder, Entry
from pipelines.logmetrics import LogMetrics
from pipelines.logmetrics_settings import LogMetricsSettings
from pipelines.records import Segment

TS = "2026-11-24T10:00:00.000000001Z"
META = {"kubernetes": {"namespace": "ns", "pod": {"name": "p"}}}


def pair(**spec: Any) -> tuple[FileProcessor, FileProcessor, Counter[str], Counter[str]]:
    """The spliced chain and the dict-path reference, each with its own counters."""
    a: Counter[str] = Counter()
    b: Counter[str] = Counter()
    new = FileProcessor(ChainSpec(host_name="h", splice=True, **spec), "k", "/logs/x.log", META,
                        lambda name, n: a.update({name: n}))
    ref = FileProcessor(ChainSpec(host_name="h", splice=False, **spec), "k", "/logs/x.log", META,
                        lambda name, n: b.update({name: n}))
    return new, ref, a, b


def same(new: Segment, ref: Segment) -> int:
    """Assert both segments hold the same records; how many differ as bytes (were spliced)."""
    assert len(new.records) == len(ref.records)
    assert new.offsets == ref.offsets
    assert new.trace_ids == ref.trace_ids and new.span_ids == ref.span_ids
    assert new.safe_offset == ref.safe_offset and new.routes == ref.routes
    spliced = 0
    for a, b in zip(new.records, ref.records, strict=True):
        assert orjson.loads(a) == orjson.loads(b), (a, b)
        spliced += a != b
    assert new.nbytes == sum(map(len, new.records))
    return spliced


def cri(payload: bytes, stream: bytes = b"stdout") -> bytes:
    return TS.encode() + b" " + stream + b" F " + payload


def docker(payload: bytes) -> bytes:
    return orjson.dumps({"log": payload.decode("utf-8", "surrogatepass") + "\n", "stream": "stdout",
                         "time": TS})


@pytest.mark.parametrize("fmt", ["docker", "cri"])
@pytest.mark.parametrize("observe", [False, True])
def test_generated_workload_same_records_both_paths(tmp_path: Path, fmt: str, observe: bool) -> None:
    """The benchmark's workload (long split lines, stack traces, every trace convention): record
    for record the same objects, offsets, ids and log metrics; most JSON records were spliced."""
    m = generate_tree(tmp_path, seed=3, pods=2, lines=3000, fmt=fmt, long_every=97, stack_every=50)
    spliced = total = 0
    for f in m.files:
        metrics = []
        segs = []
        for splice in (True, False):
            lm = LogMetrics(LogMetricsSettings(), "h")
            p = FileProcessor(ChainSpec(host_name="h", splice=splice,
                                        observe=lm.observe if observe else None),
                              "k", f.link, {"kubernetes": kubernetes_from_paths(f.link, f.path)},
                              lambda name, n: None)
            lines = Path(f.path).read_bytes().split(b"\n")[:-1]
            out = [p.process(lines[i:i + 500], sum(len(x) + 1 for x in lines[:i]), 0.0)
                   for i in range(0, len(lines), 500)]
            out.append(p.flush(f.bytes, 0.0))
            segs.append(out)
            metrics.append([(s.name, dict(s.counts)) for s in lm.series])
        for a, b in zip(*segs, strict=True):
            spliced += same(a, b)
            total += len(a.records)
        assert metrics[0] == metrics[1]
    assert spliced > total // 2  # the workload's JSON records took the spliced path


ints64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | ints64 | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=15)
trace_fields = st.fixed_dictionaries({}, optional={
    "trace_id": st.sampled_from(["ab" * 16, "AB" * 16, "ab" * 8, "0" * 32, "x", "", None, 12]),
    "span_id": st.sampled_from(["cd" * 8, "CD" * 8, "0" * 16, "y", None]),
    "traceId": st.just("12" * 16),
    "spanId": st.just("34" * 8),
    "traceparent": st.just("00-" + "56" * 16 + "-" + "78" * 8 + "-01"),
    "dd.trace_id": st.just("1234567890"),
    "trace_id_original": st.just("taken"),
    "log": st.sampled_from([{"level": "info"}, "text"]),
    "stream": st.just("app"),
})
objects = st.builds(lambda a, b: {**a, **b},
                    st.dictionaries(st.text(max_size=12), json_values, max_size=6), trace_fields)
styles = st.sampled_from([
    {}, {"ensure_ascii": False}, {"separators": (",", ":")}, {"indent": 1},
    {"separators": (" , ", " : "), "ensure_ascii": False},
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["docker", "cri"]), objs=st.lists(objects, min_size=1, max_size=5),
       style=styles, target=st.sampled_from(["", "", "", "app"]))
def test_any_well_formed_object_same_fields_both_paths(fmt: str, objs: list[dict[str, Any]],
                                                        style: dict[str, Any], target: str) -> None:
    """Well-formed JSON objects written in any style (escapes, whitespace inside, key order):
    the spliced chain's records decode to what the dict path's do; the same events counted."""
    line = docker if fmt == "docker" else cri
    payloads = [json.dumps(o, **style).replace("\n", " ").encode("utf-8", "surrogatepass")
                for o in objs]
    new, ref, a, b = pair(target=target)
    lines = [line(p) for p in payloads]
    same(new.process(lines, 0, 0.0), ref.process(lines, 0, 0.0))
    assert a == b


@pytest.mark.parametrize("fmt", ["docker", "cri"])
@pytest.mark.parametrize("payload", [
    b'{"msg": "x", "trace_id": "' + b"AB" * 16 + b'"}',           # normalized: changed in place
    b'{"msg": "x", "trace_id": "nope"}',                           # set aside
    b'{"msg": "x", "span_id": null}',                              # removed
    b'{"msg": "x", "host": "web-1"}',                              # agent key: renamed
    b'{"msg": "x", "log": {"level": "warn"}}',                     # agent key: merged
    b' {"msg": "x"}',                                              # whitespace around it
    b'{"msg": "x"} ',
    b"{}",
    b'{"msg": "caf\xc3"}',                                         # invalid UTF-8 (replaced)
    b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}",                    # deeper than orjson encodes
])
def test_payloads_that_need_changes_take_the_dict_path(fmt: str, payload: bytes) -> None:
    """What the dict path would change is not spliced: the very same bytes as the reference."""
    if fmt == "docker" and b"\xc3" in payload:
        line = (b'{"log":"' + payload.replace(b'"', b'\\"') + b'\\n","stream":"stdout","time":"'
                + TS.encode() + b'"}')  # docker's json-file writes what it cannot decode as is
    else:
        line = (docker if fmt == "docker" else cri)(payload)
    new, ref, a, b = pair()
    x, y = new.process([line], 0, 0.0), ref.process([line], 0, 0.0)
    assert x.records == y.records and x.trace_ids == y.trace_ids
    assert a == b


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_spliced_record_keeps_the_payload_bytes_and_appends_agent_fields(fmt: str) -> None:
    """A payload that needs no change is kept byte for byte; found ids and the agent's fields
    follow it, the per-file part (host, kubernetes) at the end."""
    payload = (b'{"msg":"caf\\u00e9 \xe2\x82\xac",  "n": 1.50, "traceparent": "00-' + b"56" * 16 + b"-"
               + b"78" * 8 + b'-01"}')
    new, ref, _, _ = pair()
    x = new.process([(docker if fmt == "docker" else cri)(payload)], 7, 0.0)
    [rec] = x.records
    assert rec.startswith(payload[:-1] + b',"trace_id":"' + b"56" * 16 + b'","span_id":"' + b"78" * 8)
    assert rec.endswith(b',"host":{"name":"h"},"kubernetes":{"namespace":"ns","pod":{"name":"p"}}}')
    got = orjson.loads(rec)
    assert got["log"] == {"file": {"path": "/logs/x.log"}, "offset": 7}
    assert got["@timestamp"] == TS and got["stream"] == "stdout" and got["n"] == 1.5


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_duplicate_keys_are_kept_as_written(fmt: str) -> None:
    """Documented difference: the dict path keeps the last of duplicate keys, a spliced record
    keeps what the app wrote (readers that take the last value see the same)."""
    payload = b'{"a": 1, "msg": "x", "a": 2}'
    new, ref, _, _ = pair()
    line = (docker if fmt == "docker" else cri)(payload)
    [spliced] = new.process([line], 0, 0.0).records
    [dict_path] = ref.process([line], 0, 0.0).records
    assert spliced.startswith(b'{"a": 1, "msg": "x", "a": 2,') and dict_path.count(b'"a"') == 1
    assert orjson.loads(spliced) == orjson.loads(dict_path)


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_integers_beyond_64_bits_stay_exact(fmt: str) -> None:
    """Documented difference: orjson reads an integer beyond 64 bits as a float, so the dict path
    ships 1.2345678901234568e+29; a spliced record keeps the app's exact digits."""
    payload = b'{"big": 123456789012345678901234567890, "msg": "x"}'
    new, ref, _, _ = pair()
    line = (docker if fmt == "docker" else cri)(payload)
    [spliced] = new.process([line], 0, 0.0).records
    [dict_path] = ref.process([line], 0, 0.0).records
    assert json.loads(spliced)["big"] == 123456789012345678901234567890
    assert json.loads(dict_path)["big"] == 1.2345678901234568e+29


def test_raw_cri_decoder_leaves_whole_payloads_undecoded() -> None:
    """`raw=True`: a whole line's payload stays bytes (invalid UTF-8 included: the chain decodes
    and counts it); partial lines, joins and malformed lines are decoded as without `raw`."""
    counts: Counter[str] = Counter()
    d = CriDecoder(1 << 20, lambda name, n: counts.update({name: n}), raw=True)
    out: list[Entry] = []
    lines = [cri(b'{"a": 1}'), cri(b"caf\xc3", b"stderr"), TS.encode() + b" stdout P part",
             TS.encode() + b" stdout F end", b"garbage"]
    d.decode(lines, 0, "now", out)
    assert out[0][1:] == ("stdout", TS, b'{"a": 1}', 0)
    assert out[1][1:] == ("stderr", TS, b"caf\xc3", 0) and counts["invalid_utf8"] == 0
    assert out[2][1:] == ("stdout", TS, "partend", 0)
    assert out[3][3] == "garbage" and counts["malformed"] == 1


def test_invalid_utf8_in_a_raw_payload_is_flagged_and_counted_like_before() -> None:
    """The raw CRI payload's invalid UTF-8 is replaced, flagged and counted in the chain, as the
    decoder did before."""
    new, ref, a, b = pair()
    lines = [cri(b"plain caf\xc3 text"), cri(b'{"msg": "caf\xc3"}')]
    x, y = new.process(lines, 0, 0.0), ref.process(lines, 0, 0.0)
    assert x.records == y.records and a == b and a["invalid_utf8"] == 2
    assert all(orjson.loads(r)["log"]["flags"] == ["invalid_utf8"] for r in x.records)
