"""The agent's copy of the pods on its node and of the namespaces, fed by the reflectors.

Files ask for their pod through a `PodHandle` (by namespace, name and, when the path gives it,
uid: a StatefulSet's pod comes back under the same name with a new uid). A handle is shared by
every file of that pod, is told when the pod or its namespace changes (`generation` moves on)
and is waited on (`known`) by a file opened before the watch reported its pod.

A deleted pod stays `deleted_grace_secs` (its last lines are often read after the API said it
was gone), then is forgotten; a file that still holds its handle keeps the metadata it had.
Handles live as long as a file holds them (weak references here).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from agent.kubernetes.podmeta import Filters, PodInfo, pod_info, str_map


class PodHandle:
    """One pod as files of it see it: `pod` (None until known), `generation` (moves on at each
    change of the pod or its namespace's labels), `known` (set once the pod is known)."""

    __slots__ = ("namespace", "name", "uid", "pod", "generation", "known", "__weakref__")

    def __init__(self, namespace: str, name: str, uid: str) -> None:
        self.namespace, self.name, self.uid = namespace, name, uid
        self.pod: PodInfo | None = None
        self.generation = 0
        self.known = asyncio.Event()

    def set(self, pod: PodInfo | None) -> None:
        if pod is None and self.pod is not None:
            return  # forgotten after the grace: a file still reading keeps what it had
        self.pod = pod
        self.generation += 1
        if pod is not None:
            self.known.set()

    def touch(self) -> None:
        self.generation += 1


class MetadataCache:
    def __init__(self, filters: Filters, deleted_grace_secs: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.filters = filters
        self.grace = deleted_grace_secs
        self.clock = clock
        self.pods: dict[str, PodInfo] = {}                 # uid → pod (live, or deleted in grace)
        self.by_name: dict[tuple[str, str], str] = {}      # (namespace, name) → uid of the newest
        self.namespaces: dict[str, dict[str, str]] = {}    # name → labels (allow-list applied)
        self._handles: weakref.WeakValueDictionary[tuple[str, str, str], PodHandle] = \
            weakref.WeakValueDictionary()
        self._pod_watchers: list[asyncio.Event] = []  # set at every change of the pods
        self.pod_store = _PodStore(self)
        self.namespace_store = _NamespaceStore(self)

    # -- reading ----------------------------------------------------------------------------------

    def handle(self, namespace: str, name: str, uid: str = "") -> PodHandle:
        key = (namespace, name, uid)
        h = self._handles.get(key)
        if h is None:
            h = self._handles[key] = PodHandle(namespace, name, uid)
            pod = self._lookup(namespace, name, uid)
            if pod is not None:
                h.set(pod)
        return h

    def _lookup(self, namespace: str, name: str, uid: str) -> PodInfo | None:
        if uid:
            return self.pods.get(uid)
        newest = self.by_name.get((namespace, name))
        return self.pods.get(newest) if newest else None

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        return self.namespaces.get(namespace)

    def pods_on_node(self) -> list[PodInfo]:
        """The pods the watch reports on this node, deleted ones left out: a read API for other
        parts of the agent (a Prometheus scraper reads `all_annotations`, `ip`)."""
        return [p for p in self.pods.values() if p.deleted_at is None]

    def watch_pods(self) -> asyncio.Event:
        """An event set whenever a pod is added, changed, deleted or forgotten (its reader
        clears it)."""
        ev = asyncio.Event()
        self._pod_watchers.append(ev)
        return ev

    def _pods_changed(self) -> None:
        for ev in self._pod_watchers:
            ev.set()

    # -- writing (the reflectors' stores) ----------------------------------------------------------

    def expire(self) -> None:
        """Forget pods deleted more than `deleted_grace_secs` ago."""
        limit = self.clock() - self.grace
        for uid, pod in list(self.pods.items()):
            if pod.deleted_at is not None and pod.deleted_at <= limit:
                del self.pods[uid]
                self._pods_changed()
                if self.by_name.get((pod.namespace, pod.name)) == uid:
                    del self.by_name[(pod.namespace, pod.name)]

    def _put_pod(self, pod: PodInfo) -> None:
        self.pods[pod.uid] = pod
        if pod.deleted_at is None or self.by_name.get((pod.namespace, pod.name)) in (None, pod.uid):
            self.by_name[(pod.namespace, pod.name)] = pod.uid
        self._tell(pod)
        self._pods_changed()

    def _tell(self, pod: PodInfo) -> None:
        for uid in (pod.uid, ""):
            h = self._handles.get((pod.namespace, pod.name, uid))
            if h is not None and (uid or self.by_name.get((pod.namespace, pod.name)) == pod.uid):
                h.set(pod)

    def _mark_deleted(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None and pod.deleted_at is None:
            pod.deleted_at = self.clock()
            self._pods_changed()

    def _namespace_changed(self, namespace: str) -> None:
        for key, h in list(self._handles.items()):
            if key[0] == namespace:
                h.touch()


class _PodStore:
    def __init__(self, cache: MetadataCache) -> None:
        self.c = cache

    def replace(self, items: list[dict[str, Any]]) -> None:
        seen = set()
        for obj in items:
            pod = pod_info(obj, self.c.filters)
            if pod is not None:
                seen.add(pod.uid)
                self.c._put_pod(pod)
        for uid in list(self.c.pods.keys() - seen):
            self.c._mark_deleted(uid)
        self.c.expire()

    def upsert(self, obj: dict[str, Any]) -> None:
        pod = pod_info(obj, self.c.filters)
        if pod is not None:
            self.c._put_pod(pod)
        self.c.expire()

    def delete(self, obj: dict[str, Any]) -> None:
        pod = pod_info(obj, self.c.filters)
        if pod is None:
            return
        if pod.uid not in self.c.pods:  # deleted before we saw it: keep it for its last lines
            self.c._put_pod(pod)
        self.c._mark_deleted(pod.uid)
        self.c.expire()


class _NamespaceStore:
    def __init__(self, cache: MetadataCache) -> None:
        self.c = cache

    def _labels(self, obj: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            return None
        return str(meta["name"]), self.c.filters.namespace_labels(str_map(meta.get("labels")))

    def replace(self, items: list[dict[str, Any]]) -> None:
        fresh = dict(filter(None, (self._labels(o) for o in items)))
        changed = {n for n in fresh.keys() | self.c.namespaces.keys()
                   if fresh.get(n) != self.c.namespaces.get(n)}
        self.c.namespaces = fresh
        for n in changed:
            self.c._namespace_changed(n)

    def upsert(self, obj: dict[str, Any]) -> None:
        got = self._labels(obj)
        if got is not None and self.c.namespaces.get(got[0]) != got[1]:
            self.c.namespaces[got[0]] = got[1]
            self.c._namespace_changed(got[0])

    def delete(self, obj: dict[str, Any]) -> None:
        """Kept: the last lines of its pods (deleted with it, in their grace) still carry its
        labels; a namespace is a few labels, and names are reused."""
