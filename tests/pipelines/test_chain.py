"""The per-file chain: records built from generated kubelet logs, collisions, flags, multiline."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.generate import generate_tree
from pipelines.chain import ChainSpec, FileProcessor, epoch_of
from pipelines.enrich import kubernetes_from_paths
from tests.conftest import seq_of

TS = "2026-11-24T10:00:00.000000001Z"


def proc(**spec) -> FileProcessor:
    return FileProcessor(ChainSpec(host_name="h", **spec), "1:2:ff", "/logs/x.log", {},
                         lambda name, n: None)


def run(p: FileProcessor, lines: list[bytes], offset: int = 0) -> list[dict]:
    seg = p.process(lines, offset, 0.0)
    return [orjson.loads(r) for r in seg.records]


def docker(log: str, stream: str = "stdout", time: str = TS) -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": time})


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_generated_tree_every_record_once_with_expected_trace(tmp_path: Path, fmt: str):
    """Every generated record comes out once, joined, with the trace context the manifest expects."""
    m = generate_tree(tmp_path, seed=3, pods=2, lines=1500, fmt=fmt, long_every=97, stack_every=50,
                      with_expected=True)
    seen: list[int] = []
    for f in m.files:
        p = FileProcessor(ChainSpec(), "k", f.link, {"kubernetes": kubernetes_from_paths(f.link, f.path)},
                          lambda name, n: None)
        lines = Path(f.path).read_bytes().split(b"\n")[:-1]
        seg = p.process(lines, 0, 0.0)
        assert p.held_offset is None and seg.safe_offset == f.bytes
        for raw, tid in zip(seg.records, seg.trace_ids, strict=True):
            rec = orjson.loads(raw)
            s = seq_of(rec)
            seen.append(s)
            exp_tid, exp_sid, inherited = m.expected[s]
            assert (rec.get("trace_id"), rec.get("span_id")) == (exp_tid, exp_sid), s
            assert tid == exp_tid
            assert ("trace_inherited" in rec["log"].get("flags", [])) == (inherited and exp_tid is not None)
            assert rec["kubernetes"]["pod"] == f.pod and rec["kubernetes"]["container_id"] == f.container_id
    assert sorted(seen) == list(range(m.total_records))


def test_plain_text_becomes_message_with_text_trace():
    """A non-JSON payload is `message`; logfmt ids in it are found."""
    [rec] = run(proc(), [docker(f"GET /x trace_id={'AB' * 16} span_id={'cd' * 8}\n")])
    assert rec["message"].startswith("GET /x")
    assert rec["trace_id"] == "ab" * 16 and rec["span_id"] == "cd" * 8


def test_json_array_and_broken_json_are_messages():
    """Only JSON objects become fields; arrays and broken JSON stay text."""
    recs = run(proc(), [docker("[1,2]\n"), docker('{"a": \n')])
    assert [r["message"] for r in recs] == ["[1,2]", '{"a": ']


def test_agent_key_collisions_keep_app_values():
    """Colliding app fields: objects merge, other values move to <key>_app."""
    payload = orjson.dumps({"@timestamp": "app-time", "log": {"level": "warn"}, "host": "web-1",
                            "stream": "custom"}).decode()
    [rec] = run(proc(), [docker(payload + "\n")])
    assert rec["@timestamp"] == TS and rec["@timestamp_app"] == "app-time"
    assert rec["log"]["level"] == "warn" and rec["log"]["offset"] == 0
    assert rec["host"] == {"name": "h"} and rec["host_app"] == "web-1"
    assert rec["stream"] == "stdout" and rec["stream_app"] == "custom"


def test_target_puts_fields_under_key():
    """parse.target nests the app fields; trace ids still land at top level."""
    [rec] = run(proc(target="app"), [docker(orjson.dumps({"traceId": "A" * 32}).decode() + "\n")])
    assert rec["app"]["traceId"] == "A" * 32 and rec["trace_id"] == "a" * 32


def test_parse_json_off():
    """parse.json = false keeps JSON payloads as text."""
    [rec] = run(proc(parse_json=False), [docker('{"a": 1}\n')])
    assert rec == {"message": '{"a": 1}', "@timestamp": TS, "stream": "stdout",
                   "log": {"file": {"path": "/logs/x.log"}, "offset": 0}, "host": {"name": "h"}}


def test_continuation_inherits_only_within_window_and_same_stream():
    """A stack line inherits the preceding record's context within the window, on the same stream."""
    tid = "12" * 16
    lines = [
        docker(orjson.dumps({"msg": "boom", "trace_id": tid}).decode() + "\n", "stderr", TS),
        docker("\tat a.b.C.d(C.java:1)\n", "stderr", "2026-11-24T10:00:00.500000000Z"),
        docker("\tat a.b.C.e(C.java:2)\n", "stdout", "2026-11-24T10:00:00.500000000Z"),
        docker("\tat a.b.C.f(C.java:3)\n", "stderr", "2026-11-24T10:00:05.000000000Z"),
    ]
    recs = run(proc(inherit_window_secs=1.0), lines)
    assert recs[1]["trace_id"] == tid and recs[1]["log"]["flags"] == ["trace_inherited"]
    assert "trace_id" not in recs[2]  # other stream
    assert "trace_id" not in recs[3]  # outside the window


def test_inherited_records_counted_and_prior_time_reread_when_it_changes():
    """`trace_inherited` counts every inheriting record, also across calls and in flush;
    a new preceding record (same stream) is compared with its own time, not the last one's."""
    counts: dict[str, int] = {}
    p = FileProcessor(ChainSpec(host_name="h", inherit_window_secs=1.0), "1:2:ff", "/logs/x.log",
                      {}, lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    tid, tid2 = "12" * 16, "34" * 16
    head = orjson.dumps({"msg": "boom", "trace_id": tid}).decode() + "\n"
    head2 = orjson.dumps({"msg": "again", "trace_id": tid2}).decode() + "\n"
    recs = run(p, [docker(head, time="2026-11-24T10:00:00Z"),
                   docker("\tat a(A.java:1)\n", time="2026-11-24T10:00:00.5Z"),
                   docker("\tat b(A.java:2)\n", time="2026-11-24T10:00:00.9Z")])
    recs += run(p, [docker("\tat c(A.java:3)\n", time="2026-11-24T10:00:01.5Z"),  # 1.5 s after
                    docker(head2, time="2026-11-24T10:00:02Z"),
                    docker("\tat d(A.java:4)\n", time="2026-11-24T10:00:02.5Z")])
    assert [r.get("trace_id") for r in recs] == [tid, tid, tid, None, tid2, tid2]
    assert counts == {"trace_inherited": 3}
    # a held partial line is emitted by flush, which counts too
    assert run(p, [docker("\tat e(A.java:5)", time="2026-11-24T10:00:02.6Z")]) == []
    [rec] = [orjson.loads(r) for r in p.flush(1000, 0.0).records]
    assert rec["trace_id"] == tid2 and rec["log"]["flags"] == ["partial", "trace_inherited"]
    assert counts == {"trace_inherited": 4, "partial_emitted": 1}


def test_non_continuation_line_breaks_inheritance():
    """A normal line without ids resets the context: later stack lines inherit nothing."""
    lines = [docker(orjson.dumps({"trace_id": "ab" * 16}).decode() + "\n"),
             docker("plain line\n"), docker("\tat x.Y.z(Y.java:1)\n")]
    recs = run(proc(), lines)
    assert "trace_id" not in recs[2]


def test_multiline_java_merges_and_keeps_first_offset():
    """With the java preset a stack trace becomes one record with the first line's offset."""
    lines = [docker("ERROR payment failed\n"), docker("java.lang.IllegalStateException: no\n"),
             docker("\tat a.B.c(B.java:1)\n"), docker("next record\n")]
    p = proc(multiline="java")
    seg = p.process(lines, 0, 0.0)
    recs = [orjson.loads(r) for r in seg.records]
    assert [r["message"] for r in recs] == [
        "ERROR payment failed\njava.lang.IllegalStateException: no\n\tat a.B.c(B.java:1)"]
    assert recs[0]["log"]["lines"] == 3 and recs[0]["log"]["offset"] == 0
    held = sum(len(x) + 1 for x in lines[:3])
    assert p.held_offset == held and seg.safe_offset == held  # "next record" waits for its end
    tail = p.flush(seg.safe_offset + len(lines[3]) + 1, 0.0)
    assert [orjson.loads(r)["message"] for r in tail.records] == ["next record"]


def test_held_join_keeps_safe_offset_behind():
    """A docker line split across chunks keeps the checkpoint before its first piece."""
    p = proc()
    first = docker("x" * 100)
    seg = p.process([docker("a\n"), first], 0, 0.0)
    assert seg.safe_offset == len(docker("a\n")) + 1
    assert len(seg.records) == 1


def test_epoch_of_handles_nanoseconds_and_offsets():
    """RFC 3339 timestamps with nanoseconds and offsets convert to epoch seconds."""
    assert epoch_of("1970-01-01T00:00:01.500000001Z") == pytest.approx(1.5)
    assert epoch_of("1970-01-01T01:00:01+01:00") == pytest.approx(1.0)
    assert epoch_of("garbage") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=400).map(lambda b: b.replace(b"\n", b"")), max_size=15),
       st.sampled_from(["auto", "docker", "cri", "text"]), st.sampled_from(["none", "auto"]))
def test_any_bytes_in_valid_bounded_json_out(lines, fmt, multiline):
    """Any bytes in: no exception, every record valid JSON with its offset, bounded size."""
    p = FileProcessor(ChainSpec(format=fmt, max_line_bytes=256, multiline=multiline,
                                multiline_max_bytes=1024), "k", "/p", {}, lambda n, c: None)
    end = sum(len(x) + 1 for x in lines)
    seg = p.process(lines, 0, 0.0)
    tail = p.flush(end, 0.0)
    for raw in seg.records + tail.records:
        rec = orjson.loads(raw)
        assert 0 <= rec["log"]["offset"] < max(end, 1)
        assert len(raw) < 8 * 1024 + 2 * 400 * 6
    assert seg.safe_offset <= end
