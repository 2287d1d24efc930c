"""A scripted stand-in for the API server's list and WebSocket watch, for unit tests of error
paths (410, bookmarks, token rotation). Each list or watch request takes the next scripted
answer; every request is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

# a watch script: events to send ("hold": wait for `release`), then the server closes the stream;
# or an HTTP status to refuse the watch with. A watch with no script left stays open.
Watch = list[dict[str, Any] | str] | int


@dataclass
class Request:
    kind: str                    # list | watch
    query: dict[str, str]
    token: str


@dataclass
class FakeApi:
    lists: list[dict[str, Any] | int] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)   # accepted bearer tokens (empty: any)
    requests: list[Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends a "hold"
    closed: asyncio.Event = field(default_factory=asyncio.Event)   # ends the open watches
    url: str = ""

    def seen(self, kind: str) -> list[Request]:
        return [r for r in self.requests if r.kind == kind]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        watch = request.query.get("watch") == "true"
        self.requests.append(Request("watch" if watch else "list", dict(request.query), token))
        if self.tokens and token not in self.tokens:
            return web.json_response({"kind": "Status", "code": 401, "message": "Unauthorized"},
                                     status=401)
        if not watch:
            answer = self.lists.pop(0) if self.lists else 500
            if isinstance(answer, int):
                return web.json_response({"kind": "Status", "code": answer}, status=answer)
            return web.json_response(answer)
        script: Watch | None = self.watches.pop(0) if self.watches else None
        if isinstance(script, int):
            return web.json_response({"kind": "Status", "code": script}, status=script)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for ev in script or []:
            if ev == "hold":
                await self.release.wait()
                self.release.clear()
            else:
                await ws.send_str(orjson.dumps(ev).decode())
        if script is None:
            await self.closed.wait()
        await ws.close()
        return ws


async def serve(api: FakeApi) -> AsyncIterator[FakeApi]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.url = f"http://127.0.0.1:{port}"
    try:
        yield api
    finally:
        api.closed.set()
        api.release.set()
        await runner.cleanup()
