"""One resource kept in step with the API server: list, then watch from the list's
resourceVersion, for as long as the agent runs.

- A watch that ends (the server's timeoutSeconds, a dropped connection) is resumed from the last
  resourceVersion seen: from an event, or from a BOOKMARK (asked for with allowWatchBookmarks, so
  a quiet resource still has a recent version to resume from).
- 410 Gone (that version is compacted away), on the watch's handshake or as an ERROR event: list
  again, and the list replaces the store's content (objects missing from it count as deleted).
- Any other error: wait (exponential backoff with jitter, up to `retry_max_secs`) and try again;
  the store keeps what it has, so enrichment goes on from the cache during an outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.kubernetes.api import ApiClient, ApiError, Gone
from pipelines.backoff import Backoff

log = logging.getLogger("tailship.kubernetes")

WATCH_TIMEOUT_SECS = (240, 360)  # asked of the server, spread so that agents do not re-watch in step


class Store(Protocol):
    def replace(self, items: list[dict[str, Any]]) -> None: ...
    def upsert(self, obj: dict[str, Any]) -> None: ...
    def delete(self, obj: dict[str, Any]) -> None: ...


def version_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class Reflector:
    """Keeps `store` in step with the collection at `path` (query `params`, e.g. a field selector).
    `count(event)` counts what happens: kubernetes_list, kubernetes_watch, kubernetes_relist_gone,
    kubernetes_bookmark, kubernetes_api_error."""

    def __init__(self, client: ApiClient, resource: str, path: str, params: dict[str, str], store: Store,
                 count: Callable[[str], None], retry_initial_secs: float = 0.5,
                 retry_max_secs: float = 30.0) -> None:
        self.client = client
        self.resource = resource
        self.path = path
        self.params = params
        self.store = store
        self.count = count
        self.backoff = Backoff(retry_initial_secs, retry_max_secs)
        self.version = ""            # resourceVersion to resume from; "" = list first
        self.watching = False        # a watch is open: the store is current
        self.synced = asyncio.Event()  # set after the first list
        self._fresh_at = time.monotonic()  # last moment the store was known current
        self._failing = False

    def age(self) -> float:
        """Seconds the store may be behind the API server: 0 while a watch is open, else the
        time since one was last open (or since the start, before the first list)."""
        return 0.0 if self.watching else time.monotonic() - self._fresh_at

    async def run(self) -> None:
        while True:
            try:
                if not self.version:
                    await self._list()
                await self._watch()
            except Gone as exc:
                self.count("kubernetes_relist_gone")
                log.info("%s: %s; listing again", self.resource, exc)
                self.version = ""
            except ApiError as exc:
                await self._failed("kubernetes_api_error", str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours: logged, counted, and the watch goes on
                log.exception("%s: the watch failed", self.resource)
                await self._failed("kubernetes_watch_failed", f"{type(exc).__name__}: {exc}")

    async def _failed(self, event: str, what: str) -> None:
        self.count(event)
        delay = self.backoff.next()
        if not self._failing:
            log.warning("%s: %s; the cached metadata is used meanwhile, retrying (next in %.1fs, "
                        "then backing off up to %.0fs)", self.resource, what, delay, self.backoff.cap)
        self._failing = True
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        self.count("kubernetes_list")
        body = await self.client.list(self.path, self.params)
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        self.store.replace(items)
        self.version = version_of(body)
        self._fresh_at = time.monotonic()
        self.synced.set()
        log.info("%s: listed %d (resourceVersion %s)", self.resource, len(items), self.version or "-")

    def _opened(self) -> None:
        self.watching = True
        if self._failing:
            log.info("%s: watching again", self.resource)
        self._failing = False
        self.backoff.reset()

    async def _watch(self) -> None:
        self.count("kubernetes_watch")
        params = {**self.params, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(random.randint(*WATCH_TIMEOUT_SECS))}
        if self.version:
            params["resourceVersion"] = self.version
        events = 0
        try:
            async for event in self.client.watch(self.path, params, on_open=self._opened):
                events += 1
                self._apply(event)
        finally:
            if self.watching:
                self._fresh_at = time.monotonic()
            self.watching = False
        if not events:
            # a watch the server ends at once, again and again, must not spin
            await asyncio.sleep(self.backoff.next())

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event["object"]
        version = version_of(obj)
        if kind == "BOOKMARK":
            self.count("kubernetes_bookmark")
        elif kind in ("ADDED", "MODIFIED"):
            self.store.upsert(obj)
        elif kind == "DELETED":
            self.store.delete(obj)
        else:
            return
        if version:
            self.version = version
