"""The metrics endpoint against hostile clients: header and body deadlines, the connection cap,
and `/healthz` answered whatever the half-open connections (raw sockets, real HTTP)."""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.server import MetricsServer
from agent.settings import MetricsSettings
from tests.conftest import free_port, http_get, sample_value, wait_for, wait_until

pytestmark = pytest.mark.timeout(120)


async def started(**limits: object) -> MetricsServer:
    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), lambda: (True, "ready"),
                           limits=dataclasses.replace(MetricsSettings(), **limits))
    await server.start()
    return server


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw`, return everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def half_open(port: int, n: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        await writer.drain()
        yield reader, writer


async def test_500_half_open_connections_leave_healthz_answering():
    """500 half-sent requests: the cap holds (oldest evicted, counted) and /healthz answers."""
    server = await started(max_connections=64, header_timeout_secs=60.0)
    conns = [c async for c in half_open(server.port, 500)]
    try:
        answer = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n"), answer
        assert server.connections <= 64
        assert server.closed["evicted"] >= 500 - 64
        # the oldest half-open connections were closed by the server: they read EOF
        assert await asyncio.wait_for(conns[0][0].read(), 10) == b""
        print(f"500 half-open: {server.connections} held, {server.closed['evicted']} evicted")
    finally:
        for _, w in conns:
            w.close()
        await server.stop()


async def test_header_deadline_closes_a_slow_head_and_counts_it():
    server = await started(header_timeout_secs=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost:")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
        writer.close()
        assert server.closed["header_timeout"] == 1
        await wait_until(lambda: server.connections == 0, 10, "the slot freed")
    finally:
        await server.stop()


async def test_body_deadline_closes_a_slow_body_and_counts_it():
    server = await started(body_timeout_secs=0.3)
    try:
        answer = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        assert answer == b""
        assert server.closed["body_timeout"] == 1
        # a complete small body is read and ignored
        answer = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        await server.stop()


@pytest.mark.parametrize("raw,status,reason", [
    (b"GET /x HTTP/1.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "too_large"),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n", 413, "too_large"),
    (b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "bad_request"),
    (b"NONSENSE\r\n\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400, "bad_request"),
])
async def test_bad_requests_get_an_error_status_and_are_counted(raw: bytes, status: int, reason: str):
    server = await started()
    try:
        answer = await exchange(server.port, raw)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
        assert server.closed[reason] == 1
    finally:
        await server.stop()


async def test_methods_paths_and_the_server_own_metrics():
    """HEAD gets headers only, POST 405, an unknown path 404, a query string is ignored; /metrics
    shows the connections closed by reason."""
    server = await started(header_timeout_secs=0.2)
    try:
        head = await exchange(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"Content-Length: 3\r\nConnection: "
                                                                    b"close\r\n\r\n")
        assert (await exchange(server.port, b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await exchange(server.port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        await exchange(server.port, b"GET /metrics")  # times out
        page = await exchange(server.port, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 200 ")
        assert b'tailship_http_connections_closed_total{reason="header_timeout"} 1.0' in page
        assert b"tailship_http_connections 1.0" in page  # this very connection
    finally:
        await server.stop()


async def test_a_failing_endpoint_answers_500_and_the_server_goes_on():
    async def broken() -> bytes:
        raise RuntimeError("a worker's exposition could not be merged")

    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), lambda: (True, "ready"), render=broken)
    await server.start()
    try:
        assert (await exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500 ")
        assert (await exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    finally:
        await server.stop()


def test_agent_with_a_container_descriptor_limit_survives_500_half_open_connections(tmp_path: Path):
    """The issue's finding through a real agent whose descriptor limit is a container's (256,
    soft and hard): 500 half-sent requests to its metrics port; /healthz still answers and a file
    created afterwards is still found and shipped (before, the half-open connections took every
    descriptor)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("first\n")
    port = free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen([sys.executable, "-m", "agent", "tail", str(logs / "*.log"), "--to", "null",
                             "--workers", "1", "--data-dir", str(tmp_path / "data"),
                             "--metrics-listen", f"127.0.0.1:{port}"], preexec_fn=limit,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sent() -> float:
        return sample_value(http_get(port, "/metrics"), "tailship_records_sent_total")

    async def flood() -> list[asyncio.StreamWriter]:
        return [w async for _, w in half_open(port, 500)]

    loop = asyncio.new_event_loop()
    writers: list[asyncio.StreamWriter] = []
    try:
        wait_for(lambda: sent() == 1, 30, "the first line shipped")
        writers = loop.run_until_complete(flood())
        wait_for(lambda: http_get(port, "/healthz") == b"ok\n", 30, "/healthz answering under the flood")
        (logs / "b.log").write_text("second\nthird\n")
        wait_for(lambda: sent() == 3, 30, "a new file's lines shipped under the flood", lambda: f"{sent()}")
        evicted = sample_value(http_get(port, "/metrics"),
                               'tailship_http_connections_closed_total{reason="evicted"}')
        print(f"agent with 256 descriptors: 500 half-open connections, {evicted:.0f} evicted")
        assert evicted >= 500 - MetricsSettings().max_connections
    finally:
        for w in writers:
            w.close()
        loop.close()
        proc.terminate()
        proc.wait(30)


async def test_a_large_page_arrives_whole():
    """An 8 MiB /metrics page to a slow reader, more than the socket buffers hold: the
    connection is closed only once all of it was sent (aborting it after `drain()` could discard
    what the transport still buffered)."""
    page = b"".join(b"# line %07d " % i + b"x" * 100 + b"\n" for i in range(75_000))

    async def render() -> bytes:
        return page

    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), lambda: (True, "ready"), render=render)
    await server.start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader: the server buffers
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {len(page)}".encode() in head
        assert body == page
    finally:
        await server.stop()


async def test_write_deadline_cuts_a_client_that_does_not_read():
    """A client that asks for a large page and never reads it holds its slot only for
    write_timeout_secs: then the connection is cut and counted."""
    async def render() -> bytes:
        return b"x" * (16 << 20)

    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), lambda: (True, "ready"), render=render,
                           limits=dataclasses.replace(MetricsSettings(), write_timeout_secs=0.3))
    await server.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # and never read
        await wait_until(lambda: server.closed["write_timeout"] == 1, 10, "the write deadline")
        await wait_until(lambda: server.connections == 0, 10, "the slot freed")
    finally:
        sock.close()
        await server.stop()
