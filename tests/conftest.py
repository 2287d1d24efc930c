"""Shared helpers: an in-memory sink for tailer tests, fast settings, a running agent, polling."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.runtime import Agent
from agent.settings import Settings
from bench.generate import record_seq
from pipelines.errors import RetriableSinkError
from pipelines.records import Batch


class CollectSink:
    """Keeps every acknowledged record; `down = True` makes it fail retriably (a sink outage)."""

    name = "collect"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.batches: list[Batch] = []
        self.down = False
        self.attempts = 0

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        self.attempts += 1
        if self.down:
            raise RetriableSinkError(self.name, "connection refused (test outage)")
        self.batches.append(batch)
        self.records.extend(orjson.loads(r) for r in batch.iter_records())

    async def close(self, timeout_secs: float) -> None:
        pass

    def healthy(self) -> bool:
        return not self.down

    def messages(self) -> list[str]:
        return [r.get("message", r.get("msg")) for r in self.records]


def fast_settings(tmp_path: Path, include: list[str], **source: Any) -> Settings:
    s = Settings(data_dir=str(tmp_path / "data"), host_name="testhost", shutdown_timeout_secs=5,
                 checkpoint_interval_secs=0.05)
    fast = {"scan_interval_secs": 0.05, "poll_interval_ms": 10, "partial_line_timeout_secs": 0.5}
    s.source = dataclasses.replace(s.source, include=include, **{**fast, **source})
    s.batch = dataclasses.replace(s.batch, linger_ms=10)
    s.sink = dataclasses.replace(s.sink, retry_initial_ms=10, retry_max_ms=50)
    s.metrics = dataclasses.replace(s.metrics, listen="")  # tests that want the server set a port
    return s


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_for(cond: Callable[[], bool], timeout: float, what: str,
             got: Callable[[], str] = lambda: "") -> None:
    """Poll `cond` (outside an event loop) until true; fail naming `what` (and `got()`, what
    there is instead) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} {got()}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.request_stop()
        code = await asyncio.wait_for(task, 15)
        assert code == 0


def seq_of(rec: dict) -> int:
    """The generator's sequence number of a shipped record (a field, or `seq=N` in plain text)."""
    seq = record_seq(rec)
    assert seq is not None, f"no sequence number in {rec['message'][:200]!r}"
    return seq


def http_get(port: int, path: str, timeout: float = 5.0) -> bytes:
    """The body of GET http://127.0.0.1:<port><path>; b"" when there is no answer (yet)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return bytes(r.read())
    except OSError:
        return b""


def sample_value(exposition: bytes, sample: str) -> float:
    """The value of one sample (`name` or `name{labels}` as written) in a Prometheus text
    exposition; 0 when absent."""
    for line in exposition.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state_files(data: Path, name: str) -> list[Path]:
    """`<data>/<name>` of one process, or `<data>/worker-<i>/<name>` of each worker process
    (`workers = 0`, the default, runs one per CPU), those that exist."""
    return [p for p in (data / name, *sorted(data.glob(f"worker-*/{name}"))) if p.exists()]


def state_lines(data: Path, name: str) -> list[bytes]:
    """The lines of every `state_files(data, name)`."""
    return [line for p in state_files(data, name) for line in p.read_bytes().splitlines()]


# Under CI=true an integration test or a fault scenario never passes by skipping: whatever skipped
# it (a server that did not start, a mount refused, a skip added by mistake) fails it instead.
MUST_RUN_IN_CI = ("integration", "faults")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if (os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail")
            and any(item.get_closest_marker(m) for m in MUST_RUN_IN_CI)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where it must run: {report.longrepr}"
    return report
