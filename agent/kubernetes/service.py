"""`KubernetesMetadata`: the API watch, the cache and the per-file views, for the agent.

One list + watch of the pods on this node (`fieldSelector=spec.nodeName=<node>`) and one of the
namespaces, whatever the number of pods: never a request per pod. Owners come from the pod
(`podmeta.owner`), so no workload is watched.

The watch is never on the data path: files read the cache, which is whatever the watch last
brought. When the API server is away, the cache serves on (its age is exported as
`tailship_kubernetes_watch_age_seconds`), files of pods it does not know wait
`wait_for_metadata_ms` and ship with the file name's metadata, flagged `no_api_metadata`;
/readyz does not look at the API server at all.

When a file's fields are decided: when it is opened (after the bounded wait), and again at the
first chunk read after its pod, or its namespace's labels, changed: routes, templates and
log-metric labels see a pod's new labels from then on, records already read keep the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from agent.kubernetes.api import ApiClient, ApiConfig
from agent.kubernetes.cache import MetadataCache, PodHandle
from agent.kubernetes.podmeta import Filters, PodInfo, allow_list
from agent.kubernetes.reflector import Reflector
from agent.kubernetes.settings import KubernetesSettings
from pipelines.enrich import FileView
from pipelines.formats import NO_API_METADATA
from pipelines.routes import FileRoutes, Router

log = logging.getLogger("tailship.kubernetes")

EXPIRE_INTERVAL_SECS = 10.0


def node_name(s: KubernetesSettings, env: dict[str, str] | None = None) -> str:
    """The node whose pods are watched: kubernetes.node (--node), else $NODE_NAME (the downward
    API in the DaemonSet); "" = all pods."""
    env = dict(os.environ) if env is None else env
    return s.node or env.get("NODE_NAME", "")


class KubernetesMetadata:
    """Started once per agent process (`run` until cancelled); files get a `LiveFile`."""

    def __init__(self, settings: KubernetesSettings, config: ApiConfig, node: str,
                 router: Router, count: Callable[[str], None]) -> None:
        self.s = settings
        self.node = node
        self.router = router
        self.count = count
        filters = Filters(allow_list(settings.labels), allow_list(settings.annotations),
                          allow_list(settings.namespace_labels))
        self.cache = MetadataCache(filters, settings.deleted_grace_secs)
        self.client = ApiClient(config, settings.request_timeout_secs)
        params = {"fieldSelector": f"spec.nodeName={node}"} if node else {}
        retry = dict(retry_initial_secs=min(0.5, settings.retry_max_secs),
                     retry_max_secs=settings.retry_max_secs)
        self.pods = Reflector(self.client, "pods", "/api/v1/pods", params, self.cache.pod_store,
                              count, **retry)
        self.namespaces = Reflector(self.client, "namespaces", "/api/v1/namespaces", {},
                                    self.cache.namespace_store, count, **retry)
        self._warned_pods: set[str] = set()

    @classmethod
    def from_settings(cls, s: KubernetesSettings, router: Router,
                      count: Callable[[str], None]) -> KubernetesMetadata:
        config = ApiConfig.load(s.api_url, s.kubeconfig)
        node = node_name(s)
        where = f"node {node}" if node else "ALL pods (no kubernetes.node, --node nor $NODE_NAME)"
        if not node:
            log.warning("kubernetes: no node name (set NODE_NAME from the downward API, or "
                        "kubernetes.node / --node): watching every pod of the cluster")
        log.info("kubernetes: metadata of %s from %s (%s)", where, config.url, config.source)
        return cls(s, config, node, router, count)

    async def run(self) -> None:
        async with self.client:
            tasks = [asyncio.create_task(self.pods.run(), name="kubernetes-pods"),
                     asyncio.create_task(self.namespaces.run(), name="kubernetes-namespaces"),
                     asyncio.create_task(self._expire(), name="kubernetes-expire")]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(min(EXPIRE_INTERVAL_SECS, max(0.05, self.s.deleted_grace_secs / 4)))
            self.cache.expire()

    # -- the read API ------------------------------------------------------------------------------

    def pods_on_node(self) -> list[PodInfo]:
        """Pods of this node the watch reports (not deleted): name, namespace, uid, ip, every
        label and annotation (`all_labels`, `all_annotations`) and the record fields."""
        return self.cache.pods_on_node()

    def watch_pods(self) -> asyncio.Event:
        """Set whenever the pods on this node change (see MetadataCache.watch_pods)."""
        return self.cache.watch_pods()

    def live_file(self, meta: dict[str, Any], fields: dict[str, Any]) -> LiveFile | None:
        """The changing metadata of a kubelet log file (None: its name says no pod)."""
        k8s = meta.get("kubernetes") or {}
        if not k8s.get("namespace") or not k8s.get("pod"):
            return None
        handle = self.cache.handle(k8s["namespace"], k8s["pod"], k8s.get("pod_uid", ""))
        return LiveFile(self, handle, k8s, fields)

    def warn_pod(self, pod: PodInfo, problems: tuple[str, ...]) -> None:
        key = f"{pod.uid}:{problems}"
        if key not in self._warned_pods:
            if len(self._warned_pods) >= 10_000:   # bounded: pods come and go
                self._warned_pods.clear()
            self._warned_pods.add(key)
            self.count("kubernetes_bad_annotation")
            log.warning("pod %s/%s: %s (ignored)", pod.namespace, pod.name, "; ".join(problems))

    # -- metrics -----------------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        age = GaugeMetricFamily("tailship_kubernetes_watch_age_seconds",
                                "Seconds the Kubernetes metadata cache may be behind the API server "
                                "(0 while its watch is open)", labels=["resource"])
        age.add_metric(["pods"], self.pods.age())
        age.add_metric(["namespaces"], self.namespaces.age())
        yield age
        pods = GaugeMetricFamily("tailship_kubernetes_pods", "Pods in the metadata cache",
                                 labels=["state"])
        cached = list(self.cache.pods.values())
        pods.add_metric(["live"], sum(1 for p in cached if p.deleted_at is None))
        pods.add_metric(["deleted"], sum(1 for p in cached if p.deleted_at is not None))
        yield pods

    def describe(self) -> Iterator[Any]:
        return iter(())


class LiveFile:
    """One file's view of its pod (implements `pipelines.enrich.LiveMeta`)."""

    def __init__(self, owner: KubernetesMetadata, handle: PodHandle, k8s: dict[str, Any],
                 fields: dict[str, Any]) -> None:
        self.owner = owner
        self.handle = handle
        self.k8s = k8s            # from the file name: namespace, pod, pod_uid, container, ...
        self.fields = fields      # the file's constant fields (log.file.path, host.name, ...)
        self.missing = False      # shipped without API metadata (counted once per file)

    @property
    def generation(self) -> int:
        return self.handle.generation * 2 + self.missing

    async def ready(self) -> None:
        """Wait (at most wait_for_metadata_ms) for the pod and for the first namespace list, so
        that a file opened at start-up gets its namespace's labels from its first record."""
        synced = self.owner.namespaces.synced
        if self.handle.known.is_set() and synced.is_set():
            return
        wait = self.owner.s.wait_for_metadata_ms / 1000
        t0 = time.monotonic()

        async def known() -> None:
            await self.handle.known.wait()
            await synced.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(known(), wait)
        if self.handle.pod is None:
            self.missing = True
            self.owner.count("kubernetes_no_api_metadata")
            log.info("%s/%s: pod unknown to the API cache after %.1fs; shipping its file %s with "
                     "the file name's metadata (flagged no_api_metadata) until it is known",
                     self.k8s.get("namespace"), self.k8s.get("pod"), time.monotonic() - t0,
                     self.fields.get("log", {}).get("file", {}).get("path", ""))

    def view(self) -> FileView:
        pod, k8s = self.handle.pod, dict(self.k8s)
        router = self.owner.router
        if pod is None:
            return FileView({"kubernetes": k8s}, router.for_file({**self.fields, "kubernetes": k8s}),
                            flags=NO_API_METADATA if self.missing else 0)
        self.missing = False
        k8s.update(pod.fields)
        container = k8s.get("container", "")
        image = pod.images.get(container)
        if image:
            k8s["container_image"] = image
        ns_labels = self.owner.cache.namespace_labels(pod.namespace)
        if ns_labels:
            k8s["namespace_labels"] = ns_labels
        steer = pod.steer
        problems = list(steer.problems)
        routes: FileRoutes | None = None
        if steer.route:
            routes = router.for_route(steer.route)
            if routes is None:
                problems.append(f"tailship.io/route: no route named {steer.route!r}")
        if problems:
            self.owner.warn_pod(pod, tuple(problems))
        if routes is None:
            routes = router.for_file({**self.fields, "kubernetes": k8s})
        return FileView({"kubernetes": k8s}, routes, exclude=steer.excludes(container),
                        multiline=steer.multiline, parse_json=False if steer.text else None)
