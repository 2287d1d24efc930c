"""The chain with live pod metadata: fields decided per chunk, routes and flags with them, the
kubernetes object encoded once and spliced, annotations that exclude, change multiline, stop JSON
parsing."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from pipelines.chain import ChainSpec, FileProcessor
from pipelines.enrich import FileView
from pipelines.formats import NO_API_METADATA
from pipelines.routes import FileRoutes

TS = "2026-11-24T10:00:00.000000001Z"


class Live:
    def __init__(self, view: FileView) -> None:
        self.generation = 1
        self._view = view

    def set(self, **changes: Any) -> None:
        self._view = dataclasses.replace(self._view, **changes)
        self.generation += 1

    def view(self) -> FileView:
        return self._view

    async def ready(self) -> None:
        pass


def cri(text: str) -> bytes:
    return f"{TS} stdout F {text}".encode()


def k8s(**extra: Any) -> dict[str, Any]:
    return {"kubernetes": {"namespace": "shop", "pod": "web-1", "container": "app", **extra}}


def proc(live: Live, counts: dict[str, int] | None = None, **spec: Any) -> FileProcessor:
    def count(name: str, n: int) -> None:
        if counts is not None:
            counts[name] = counts.get(name, 0) + n
    return FileProcessor(ChainSpec(format="cri", **spec), "k", "/var/log/x.log", k8s(), count,
                         live=live)


def records(seg) -> list[dict[str, Any]]:
    return [orjson.loads(b) for b in seg.records]


def test_fields_change_from_the_next_chunk_with_their_routes():
    live = Live(FileView(k8s(labels={"team": "a"}), FileRoutes(1, None)))
    p = proc(live)
    seg = p.process([cri('{"msg":"one"}'), cri("two")], 0, 0.0)
    assert [r["kubernetes"]["labels"] for r in records(seg)] == [{"team": "a"}] * 2
    assert seg.mask == 1 and seg.meta["kubernetes"]["labels"] == {"team": "a"}
    live.set(meta=k8s(labels={"team": "b"}), routes=FileRoutes(2, None))
    seg = p.process([cri('{"msg":"three"}')], 100, 0.0)
    assert records(seg)[0]["kubernetes"]["labels"] == {"team": "b"} and seg.mask == 2


def test_the_spliced_record_equals_the_dict_encoding():
    live = Live(FileView(k8s(labels={"a": "1"}, owner={"kind": "Deployment", "name": "web"}), None))
    seen: list[dict[str, Any]] = []
    p = proc(live, observe=lambda rec, tid: seen.append(dict(rec)))
    [rec] = records(p.process([cri('{"msg":"x","level":"info"}')], 0, 0.0))
    assert rec["kubernetes"] == k8s(labels={"a": "1"}, owner={"kind": "Deployment", "name": "web"})[
        "kubernetes"]
    assert rec["msg"] == "x" and rec["log"]["offset"] == 0
    # log metrics saw the labels on the record
    assert seen[0]["kubernetes"]["labels"] == {"a": "1"}
    # an app's own kubernetes object is merged, the agent's keys winning
    [rec] = records(p.process([cri('{"kubernetes":{"pod":"fake","extra":1}}')], 10, 0.0))
    assert rec["kubernetes"]["pod"] == "web-1" and rec["kubernetes"]["extra"] == 1


def test_a_per_record_route_still_reads_the_labels():
    live = Live(FileView(k8s(labels={"team": "a"}), FileRoutes(
        0, lambda rec: 1 if rec["kubernetes"]["labels"]["team"] == "a" else 2)))
    seg = proc(live).process([cri('{"m":1}'), cri("text")], 0, 0.0)
    assert seg.routes == [1, 1]


def test_no_api_metadata_flags_every_record_until_the_pod_is_known():
    live = Live(FileView(k8s(), None, flags=NO_API_METADATA))
    p = proc(live)
    recs = records(p.process([cri('{"m":1}'), cri("text")], 0, 0.0))
    assert [r["log"]["flags"] for r in recs] == [["no_api_metadata"]] * 2
    live.set(meta=k8s(labels={"x": "y"}), flags=0)
    [rec] = records(p.process([cri('{"m":2}')], 50, 0.0))
    assert "flags" not in rec["log"] and rec["kubernetes"]["labels"] == {"x": "y"}


def test_an_excluded_file_ships_nothing_and_moves_on():
    live = Live(FileView(k8s(), None, exclude=True))
    counts: dict[str, int] = {}
    p = proc(live, counts)
    lines = [cri("a"), cri("b")]
    seg = p.process(lines, 0, 0.0)
    assert seg.records == [] and seg.safe_offset == sum(len(x) + 1 for x in lines)
    assert counts == {"kubernetes_excluded": 2}
    live.set(exclude=False)   # the annotation was removed
    assert len(p.process([cri("c")], seg.safe_offset, 0.0).records) == 1


@pytest.mark.parametrize("text", [True, False])
def test_format_text_annotation_stops_json_parsing(text):
    live = Live(FileView(k8s(), None, parse_json=False if text else None))
    [rec] = records(proc(live).process([cri('{"msg":"x"}')], 0, 0.0))
    assert ("message" in rec) == text


def test_multiline_annotation_joins_a_stack_trace():
    live = Live(FileView(k8s(), None, multiline="java"))
    p = proc(live)
    trace = [cri("Exception in thread main java.lang.IllegalStateException: x"),
             cri("\tat com.example.A.b(A.java:10)"), cri("\tat com.example.C.d(C.java:20)")]
    seg = p.process([*trace, cri("next record")], 0, 0.0)
    msgs = [r["message"] for r in records(seg)]
    assert msgs[0].count("\n") == 2
