"""/metrics, /healthz and /readyz over real HTTP, against a running agent."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.runtime import Agent
from agent.server import parse_listen
from tests.conftest import CollectSink, fast_settings, wait_until

pytestmark = pytest.mark.timeout(60)


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def status(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_metrics_match_what_was_written_and_received(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(orjson.dumps({"msg": f"a{i}", "level": "info"}).decode() + "\n" for i in range(300)))
    b.write_text("not json\n" * 120 + "x" * 5000 + "\n")
    s = fast_settings(tmp_path, [str(tmp_path / "*.log")], max_line_bytes=1000)
    s.metrics = dataclasses.replace(s.metrics, listen="127.0.0.1:0")
    sink = CollectSink()
    agent = Agent(s, sink)
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: len(sink.records) == 421 and agent.server is not None, 20, "records")
        assert agent.server is not None
        port = agent.server.port
        got = await scrape(port)
        written = a.stat().st_size + b.stat().st_size
        assert got[("tailship_input_bytes_total", ())] == written
        assert got[("tailship_input_lines_total", ())] == 421
        assert got[("tailship_records_sent_total", ())] == len(sink.records) == 421
        assert got[("tailship_sink_records_total", (("sink", "collect"),))] == 421
        sent_bytes = sum(len(r) for batch in sink.batches for r in batch.iter_records())
        assert got[("tailship_sink_bytes_total", (("sink", "collect"),))] == sent_bytes
        ok = ("tailship_sink_batches_total", (("result", "ok"), ("sink", "collect")))
        assert got[ok] == len(sink.batches)
        assert got[("tailship_sink_send_seconds_count", (("sink", "collect"),))] == len(sink.batches)
        assert got[("tailship_truncated_records_total", ())] == 1          # the 5000-byte line
        assert got[("tailship_files_total", (("event", "discovered"),))] == 2
        assert got[("tailship_files_open", ())] == 2
        assert got[("tailship_unread_bytes", ())] == 0
        assert got[("tailship_file_unread_bytes_count", ())] == 2
        assert got[("tailship_queue_bytes", (("stage", "inflight"),))] == 0
        assert got[("logs_lines_total", (("level", "info"), ("namespace", "")))] == 300
        assert got[("logs_lines_total", (("level", "unknown"), ("namespace", "")))] == 121
        build = [k for k in got if k[0] == "tailship_build_info"]
        assert len(build) == 1 and got[build[0]] == 1
        # more lines arrive: the lag and then the counters follow
        with a.open("a") as f:
            f.write("late line\n" * 50)
        await wait_until(lambda: len(sink.records) == 471, 20, "late lines")
        got = await scrape(port)
        assert got[("tailship_input_lines_total", ())] == 471
        assert got[("tailship_input_bytes_total", ())] == written + 500
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


async def test_health_and_readiness_follow_the_sink(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("x\n")
    s = fast_settings(tmp_path, [str(log)])
    s.metrics = dataclasses.replace(s.metrics, listen="127.0.0.1:0", ready_failing_secs=0.3)
    sink = CollectSink()
    agent = Agent(s, sink)
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: agent.server is not None and len(sink.records) == 1, 20, "started")
        assert agent.server is not None
        port = agent.server.port
        assert await status(port, "/healthz") == (200, "ok\n")
        assert await status(port, "/readyz") == (200, "ready\n")
        sink.down = True
        with log.open("a") as f:
            f.write("y\n")
        await wait_until(lambda: sink.attempts >= 3, 10, "retries")
        deadline = asyncio.get_running_loop().time() + 10
        while (answer := await status(port, "/readyz"))[0] == 200:  # until ready_failing_secs passed
            assert asyncio.get_running_loop().time() < deadline, "never became not-ready"
            await asyncio.sleep(0.05)
        code, text = answer
        assert code == 503, answer
        assert text.startswith("sink collect failing: 1 records pending, nothing acknowledged for "), answer
        assert (await status(port, "/healthz"))[0] == 200  # down sink: not ready, still alive
        got = await scrape(port)
        assert got[("tailship_sink_retries_total", (("sink", "collect"),))] >= 3
        sink.down = False
        await wait_until(lambda: len(sink.records) == 2, 10, "recovered")
        assert await status(port, "/readyz") == (200, "ready\n")
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 15) == 0


def test_port_in_use_is_a_clear_startup_error(tmp_path):
    """A taken metrics port: exit 3 naming the address (the agent would otherwise be blind)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log = tmp_path / "a.log"
        log.write_text("x\n")
        r = subprocess.run([sys.executable, "-m", "agent", "tail", str(log), "--to", "null", "--once",
                            "--metrics-listen", f"127.0.0.1:{port}"], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 3, r.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in r.stderr


@pytest.mark.parametrize("text,expected", [("127.0.0.1:2021", ("127.0.0.1", 2021)), (":9", ("0.0.0.0", 9)),
                                           ("[::1]:2021", ("::1", 2021)),
                                           ("fd00::5:2021", ("fd00::5", 2021))])  # "${POD_IP}:2021", v6
def test_parse_listen(text: str, expected: Any):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["2021", "host:", "host:99999", "host:x"])
def test_parse_listen_rejects(text: str):
    with pytest.raises(ValueError, match="expected host:port"):
        parse_listen(text)


async def test_drop_newest_drops_counts_and_never_blocks(tmp_path):
    """when_full = drop_newest with the sink down: the tailer reads the whole file anyway, the
    dropped records are counted, and received + dropped = written once the sink is back."""
    log = tmp_path / "a.log"
    total = 20000
    log.write_text("".join(f"{'d' * 200} {i}\n" for i in range(total)))
    s = fast_settings(tmp_path, [str(log)])
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_bytes=256 << 10,
                                  when_full="drop_newest")
    sink = CollectSink()
    sink.down = True
    agent = Agent(s, sink)
    task = asyncio.create_task(agent.run())
    try:
        m = agent.metrics
        await wait_until(lambda: m.lines_read._value.get() == total, 20, "the whole file read while down")
        dropped = m.dropped.labels("buffer_full")._value.get()
        assert 0 < dropped < total
        sink.down = False
        await wait_until(lambda: len(sink.records) + dropped == total, 20, "in-flight records delivered")
        numbers = [int(r["message"].rsplit(" ", 1)[1]) for r in sink.records]
        assert len(set(numbers)) == len(numbers)  # what was kept arrives once
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
