"""Idle files park: where inotify covers a file, its tailer ends its task and drops its chain once
idle (10,000 idle files hold no task, timer or chain), and starts again when inotify reports a
write, or when the sweep finds a change inotify did not report. What the dropped chain must
remember (trace context to inherit, the live pod view, what was logged once, the format found)
goes on in the next one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.filesource import source as source_mod
from agent.filesource import tailer as tailer_mod
from agent.filesource.checkpoints import CheckpointStore
from agent.filesource.identity import FileId
from agent.filesource.source import FileSource
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.enrich import FileView
from pipelines.formats import NO_API_METADATA
from pipelines.records import Segment
from pipelines.routes import FileRoutes
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

TS = "2026-11-24T10:00:00.000000001Z"
TID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Harness:
    def __init__(self, tmp_path: Path, include: list[str]) -> None:
        settings = dataclasses.replace(SourceSettings(), include=include, poll_interval_ms=10,
                                       scan_interval_secs=0.05)
        self.segments: list[Segment] = []
        self.metrics = Metrics()
        (tmp_path / "data").mkdir(exist_ok=True)
        self.chains = 0
        spec = ChainSpec(format="text", parse_json=False, trace=False)

        def new_processor(fid: FileId, path: str, real: str) -> FileProcessor:
            self.chains += 1
            return FileProcessor(spec, fid.key, path, {}, self.metrics.event)

        self.source = FileSource(settings, CheckpointStore(tmp_path / "data", self.metrics.event),
                                 emit=self.emit, new_processor=new_processor, metrics=self.metrics)

    async def emit(self, seg: Segment) -> None:
        self.segments.append(seg)

    def messages(self) -> list[str]:
        return [orjson.loads(r)["message"] for s in self.segments for r in s.records]

    def parked(self) -> int:
        """Files followed with neither a task nor a chain."""
        return sum(1 for t in self.source.tailing.values()
                   if t.task is None and t.tailer.processor is None)

    @contextlib.asynccontextmanager
    async def running(self):
        self.source.start()
        assert self.source.watcher is not None, "inotify is needed here"
        task = asyncio.create_task(self.source.run())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.source.close()


def write(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


async def test_idle_files_park_and_a_write_to_one_starts_it_again(tmp_path, monkeypatch):
    monkeypatch.setattr(tailer_mod, "PARK_AFTER_SECS", 0.3)
    files = [tmp_path / f"f{i}.log" for i in range(40)]
    for i, f in enumerate(files):
        f.write_text(f"first {i}\n")
    h = Harness(tmp_path, [str(tmp_path / "*.log")])
    async with h.running():
        await wait_until(lambda: len(h.messages()) == 40, what="every first line")
        # read once and idle since: each parks at once (its data came after a quiet spell)
        await wait_until(lambda: h.parked() == 40, what="40 files parked")
        assert h.source.parked() == 40 and len(h.source.tailing) == 40
        assert sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("tail:")) == 0
        for i in (3, 17, 29):
            write(files[i], f"again {i}\n")
        await wait_until(lambda: len(h.messages()) == 43, what="the lines written to parked files")
        assert sorted(h.messages()[40:]) == ["again 17", "again 29", "again 3"]
        await wait_until(lambda: h.parked() == 40, what="the three parked again")
        # a write soon after another (within PARK_AFTER_SECS, made long here) finds the file's
        # task and chain still there: a busy file is not parked between its writes
        monkeypatch.setattr(tailer_mod, "PARK_AFTER_SECS", 30.0)
        chains = h.chains
        write(files[5], "busy 1\n")
        await wait_until(lambda: len(h.messages()) == 44, what="busy 1")
        write(files[5], "busy 2\n")
        await wait_until(lambda: len(h.messages()) == 45, what="busy 2")
        assert h.chains == chains + 1
    print(f"40 files, 40 parked; chains made: {h.chains}")


async def test_the_sweep_starts_a_parked_file_changed_unreported(tmp_path, monkeypatch):
    """A write inotify does not report (mmap, a lost event) is found by the sweep."""
    monkeypatch.setattr(tailer_mod, "PARK_AFTER_SECS", 0.3)
    f = tmp_path / "a.log"
    f.write_text("one\n")
    h = Harness(tmp_path, [str(tmp_path / "*.log")])
    async with h.running():
        await wait_until(lambda: h.parked() == 1 and h.messages() == ["one"], what="parked")
        monkeypatch.setattr(h.source, "_by_name", {})  # inotify's wake-up does not reach it
        write(f, "two\n")
        await asyncio.sleep(0.5)
        assert h.messages() == ["one"], "woken though its inotify wake-up was cut"
        monkeypatch.setattr(source_mod, "SWEEP_SECS", 0.0)
        await wait_until(lambda: h.messages() == ["one", "two"], what="the sweep to read it")


async def test_stop_lets_go_of_parked_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tailer_mod, "PARK_AFTER_SECS", 0.3)
    for i in range(5):
        (tmp_path / f"f{i}.log").write_text("x\n")
    h = Harness(tmp_path, [str(tmp_path / "*.log")])
    async with h.running():
        await wait_until(lambda: h.parked() == 5, what="parked")
        assert h.source.slots.used == 5
    assert h.source.tailing == {} and h.source.slots.used == 0


# -- the chain dropped and made again ------------------------------------------------------------

def cri(text: str) -> bytes:
    return f"{TS} stdout F {text}".encode()


def chain(counts: dict[str, int], **spec: Any) -> FileProcessor:
    def count(name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n
    return FileProcessor(ChainSpec(**spec), "k", "/var/log/x.log", {}, count)


def test_a_chain_without_anything_to_remember_parks_as_nothing():
    p = chain({}, format="cri")
    p.process([cri('{"msg":"plain"}'), cri("text")], 0, 0.0)
    assert p.park() is None


def test_a_continuation_after_parking_inherits_the_trace_context():
    counts: dict[str, int] = {}
    p = chain(counts, format="auto")
    p.process([cri(f'{{"msg":"boom","trace_id":"{TID}"}}')], 0, 0.0)
    parked = p.park()
    assert parked is not None
    q = chain(counts, format="auto")
    q.resume(parked)
    assert q.format == "cri"  # the format found is kept, not detected again
    seg = q.process([cri("    at com.example.Main.run(Main.java:10)")], 100, 0.0)
    rec = orjson.loads(seg.records[0])
    assert rec["trace_id"] == TID and "trace_inherited" in rec["log"]["flags"]


def test_what_was_logged_once_per_file_stays_logged_after_parking(caplog):
    counts: dict[str, int] = {}
    p = chain(counts, format="cri")
    with caplog.at_level(logging.INFO, logger="tailship.chain"):
        p.process([cri('{"msg":"a","trace_id":"not-a-trace-id"}')], 0, 0.0)
        parked = p.park()
        assert parked is not None
        q = chain(counts, format="cri")
        q.resume(parked)
        q.process([cri('{"msg":"b","trace_id":"nor-this-one"}')], 100, 0.0)
    assert counts["trace_id_set_aside"] == 2
    assert sum("invalid trace_id" in r.getMessage() for r in caplog.records) == 1


class Live:
    def __init__(self) -> None:
        self.generation = 1
        self.missing = True  # as a pod unknown to the API cache after its wait
        self.readied = 0

    def view(self) -> FileView:
        return FileView({"kubernetes": {"namespace": "shop", "pod": "web-1"}}, FileRoutes(1, None),
                        flags=NO_API_METADATA if self.missing else 0)

    async def ready(self) -> None:
        self.readied += 1


def test_the_pod_view_goes_on_in_the_next_chain():
    live = Live()
    p = FileProcessor(ChainSpec(format="cri"), "k", "/var/log/x.log", {}, lambda _n, _c: None,
                      live=live)
    p.process([cri("one")], 0, 0.0)
    parked = p.park()
    assert parked is not None and parked.live is live
    fresh = Live()  # what the agent's factory made for the new chain: replaced by the kept one
    fresh.missing = False  # (a new view would forget the pod was never found)
    q = FileProcessor(ChainSpec(format="cri"), "k", "/var/log/x.log", {}, lambda _n, _c: None,
                      live=fresh)
    q.resume(parked)
    rec = orjson.loads(q.process([cri("two")], 4, 0.0).records[0])
    assert rec["kubernetes"]["pod"] == "web-1" and "no_api_metadata" in rec["log"]["flags"]
