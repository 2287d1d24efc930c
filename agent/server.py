"""The agent's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the event loop
answers and is not lagging), `/readyz` (started, no sink refused or with records pending and
nothing acknowledged for `metrics.ready_failing_secs`, and the data directory can be written: the
agent's `readiness` says which and why).

The ticker `/healthz` watches is supervised (`pipelines.supervise`): an exception in it is
logged, counted under task "server" and the ticker restarted, instead of /healthz going stale.

Liveness is about the process, readiness about the data path: a sink outage makes the agent
not ready (so dashboards and rollouts see it) but not dead (restarting it would not help, and it
keeps the files waiting on disk).

The port is reachable from other pods, so it is served as if hostile clients used it. aiohttp
served it before and has neither a deadline for a request's head or body nor a connection cap:
300 half-sent requests held 300 descriptors for good, `/healthz` stopped answering and new files
could not be opened. The three endpoints answer GETs without a body, so a small HTTP/1.1 server
on asyncio streams serves them with every limit explicit (`[metrics]`):

- the request line and headers (at most 8 KiB) must arrive within `header_timeout_secs`, a body
  (at most 64 KiB, read and ignored) within `body_timeout_secs`, and the client must take the
  response within `write_timeout_secs`;
- one request per connection (`Connection: close`): no idle keep-alive connection holds a slot;
- at most `max_connections` are open; a new one past the cap replaces the oldest connection still
  sending its request (else the oldest of all). Every slot is bounded in time, and the newest
  connection always gets one, so `/healthz` is answered however many half-open connections there
  are: the kubelet's probe sends its request at once, and a flood would have to open
  `max_connections` new connections in those microseconds to push it out.

Each closed connection that broke a rule is counted (`tailship_http_connections_closed_total{reason}`:
`header_timeout`, `body_timeout`, `write_timeout`, `evicted`, `bad_request`, `too_large`) and the
first of each reason is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.settings import MetricsSettings
from pipelines.supervise import TaskSupervisor

log = logging.getLogger("tailship.server")

LAG_LIMIT_SECS = 5.0  # a loop that cannot run a 1 s ticker within this is not healthy
MAX_HEAD_BYTES = 8 << 10
MAX_BODY_BYTES = 64 << 10
REASONS = ("header_timeout", "body_timeout", "write_timeout", "evicted", "bad_request", "too_large")
_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:2021`); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Refused(Exception):
    """A request that gets an error status and no further reading."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason


class _Conn:
    """One open connection: `reading` while its request has not fully arrived."""

    __slots__ = ("writer", "reading")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.reading = True


class MetricsServer:
    def __init__(self, listen: str, registry: CollectorRegistry,
                 readiness: Callable[[], tuple[bool, str]],
                 render: Callable[[], Awaitable[bytes]] | None = None, *,
                 limits: MetricsSettings | None = None,
                 task_supervisor: TaskSupervisor | None = None) -> None:
        """`render`: produces the /metrics body instead of `registry` (the supervisor's merge
        of its workers' metrics). `limits`: deadlines and the connection cap (defaults of
        `[metrics]` when None)."""
        self.host, self.port = parse_listen(listen)
        self.registry = registry
        self.render = render
        self.readiness = readiness
        self.task_supervisor = task_supervisor or TaskSupervisor()
        self.limits = limits or MetricsSettings()
        self.last_tick = time.monotonic()
        self.closed = dict.fromkeys(REASONS, 0)  # connections closed for breaking a rule
        self._conns: dict[_Conn, None] = {}  # open connections, oldest first
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._collector = _ServerStats(self)

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                      limit=MAX_HEAD_BYTES, reuse_address=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {self.host}:{self.port}: "
                          f"{exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
        self.registry.register(self._collector)
        self._ticker = self.task_supervisor.spawn("server", self._tick, "health-ticker")
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()
            self._conns.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
            self.registry.unregister(self._collector)

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    # -- connections ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.limits.max_connections:
            self._evict()
        conn = _Conn(writer)
        self._conns[conn] = None
        try:
            status, body, ctype, head_only = await self._request(conn, reader)
            await self._respond(writer, status, body, ctype, head_only)
        except _Refused as r:
            self._count(r.reason)
            if r.status:
                await self._respond(writer, r.status, f"{_STATUS[r.status].lower()}\n".encode(),
                                    "text/plain; charset=utf-8", False)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away (or was evicted)
        except Exception:  # an endpoint failed (rendering the metrics): the client learns it
            log.exception("metrics endpoint: a request failed")
            with contextlib.suppress(ConnectionError):
                await self._respond(writer, 500, b"internal error\n", "text/plain; charset=utf-8", False)
        finally:
            self._conns.pop(conn, None)
            writer.transport.abort()  # sent and closed already, or cut: no lingering close

    def _evict(self) -> None:
        """Make room: close the oldest connection still sending its request, else the oldest."""
        victim = next((c for c in self._conns if c.reading), None) or next(iter(self._conns))
        del self._conns[victim]
        self._count("evicted")
        victim.writer.transport.abort()

    def _count(self, reason: str) -> None:
        self.closed[reason] += 1
        if self.closed[reason] == 1:
            log.warning("metrics endpoint: closed a connection (%s; further ones counted in "
                        "tailship_http_connections_closed_total{reason=\"%s\"}, not logged)",
                        reason.replace("_", " "), reason)

    async def _request(self, conn: _Conn, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool]:
        """Read one request within the deadlines; the response to it."""
        lim = self.limits
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lim.header_timeout_secs)
        except TimeoutError:
            raise _Refused(0, "header_timeout") from None
        except asyncio.LimitOverrunError:
            raise _Refused(431, "too_large") from None
        method, path, length = _parse_head(head)
        if length:
            try:
                await asyncio.wait_for(reader.readexactly(length), lim.body_timeout_secs)
            except TimeoutError:
                raise _Refused(0, "body_timeout") from None
        conn.reading = False
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", "text/plain; charset=utf-8", False
        status, body, ctype = await self._route(path)
        return status, body, ctype, method == "HEAD"

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                       head_only: bool) -> None:
        writer.write(f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if not head_only:
            writer.write(body)
        writer.close()  # once everything buffered is sent (abort, in _accept, would discard it)
        try:
            await asyncio.wait_for(writer.wait_closed(), self.limits.write_timeout_secs)
        except TimeoutError:
            self._count("write_timeout")

    # -- endpoints --------------------------------------------------------------------------------

    async def _route(self, path: str) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            lag = time.monotonic() - self.last_tick
            if lag > LAG_LIMIT_SECS:
                return 503, f"event loop lagging: last tick {lag:.1f}s ago\n".encode(), text
            return 200, b"ok\n", text
        if path == "/readyz":
            ready, why = self.readiness()
            return (200 if ready else 503), f"{why}\n".encode(), text
        if path == "/metrics":
            body = await self.render() if self.render is not None else generate_latest(self.registry)
            return 200, body, CONTENT_TYPE_LATEST
        return 404, b"not found: /metrics, /healthz, /readyz\n", text


def _parse_head(head: bytes) -> tuple[str, str, int]:
    """(method, path without the query, body length) of a request head ending in CRLF CRLF."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _Refused(400, "bad_request")
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _Refused(400, "bad_request")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise _Refused(501, "bad_request")  # no endpoint takes a body; chunked is not read
        if name == b"content-length":
            v = value.strip()
            if not v.isdigit() or length:
                raise _Refused(400, "bad_request")
            length = int(v)
            if length > MAX_BODY_BYTES:
                raise _Refused(413, "too_large")
    method = parts[0].decode("ascii", "replace")
    path = parts[1].decode("ascii", "replace").partition("?")[0]
    return method, path, length


class _ServerStats(Collector):
    """The server's own figures, registered beside the metrics it serves."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        closed = CounterMetricFamily("tailship_http_connections_closed", "Connections to the "
                                     "metrics endpoint closed for breaking a rule, by reason",
                                     labels=["reason"])
        for reason, n in self.server.closed.items():
            closed.add_metric([reason], n)
        yield closed
        open_ = GaugeMetricFamily("tailship_http_connections", "Connections to the metrics endpoint "
                                  "open now (at most metrics.max_connections)")
        open_.add_metric([], self.server.connections)
        yield open_

    def describe(self) -> Iterator[Any]:
        return iter(())
