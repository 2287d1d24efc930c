"""The agent's HTTP endpoints (aiohttp): `/metrics` (Prometheus text format), `/healthz` (the
event loop answers and is not lagging), `/readyz` (started, no sink has had records pending
with nothing acknowledged for `metrics.ready_failing_secs`, and the data directory can be
written: the agent's `readiness` says which and why).

The ticker `/healthz` watches is supervised (`pipelines.supervise`): an exception in it is
logged, counted under task "server" and the ticker restarted, instead of /healthz going stale.

Liveness is about the process, readiness about the data path: a sink outage makes the agent
not ready (so dashboards and rollouts see it) but not dead (restarting it would not help, and it
keeps the files waiting on disk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipelines.supervise import TaskSupervisor

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tailship.server")

LAG_LIMIT_SECS = 5.0  # a loop that cannot run a 1 s ticker within this is not healthy


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:2021`); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class MetricsServer:
    def __init__(self, listen: str, registry: CollectorRegistry,
                 readiness: Callable[[], tuple[bool, str]],
                 render: Callable[[], Awaitable[bytes]] | None = None, *,
                 task_supervisor: TaskSupervisor | None = None) -> None:
        """`render`: produces the /metrics body instead of `registry` (the supervisor's merge
        of its workers' metrics)."""
        self.host, self.port = parse_listen(listen)
        self.registry = registry
        self.render = render
        self.readiness = readiness
        self.task_supervisor = task_supervisor or TaskSupervisor()
        self.last_tick = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiohttp import web  # here, not at import: it costs ~0.2 s of start-up to every run

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(exc.errno, f"cannot serve metrics on {self.host}:{self.port}: "
                          f"{exc.strerror or exc}") from exc
        for addr in self._runner.addresses:  # the real port when 0 was asked for
            if isinstance(addr, tuple):
                self.port = addr[1]
                break
        self._ticker = self.task_supervisor.spawn("server", self._tick, "health-ticker")
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await self.render() if self.render is not None else generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        lag = time.monotonic() - self.last_tick
        if lag > LAG_LIMIT_SECS:
            return web.Response(status=503, text=f"event loop lagging: last tick {lag:.1f}s ago\n")
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        ready, why = self.readiness()
        return web.Response(status=200 if ready else 503, text=f"{why}\n")
