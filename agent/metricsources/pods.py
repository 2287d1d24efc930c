"""Scrape targets discovered from the pods on this node (the Kubernetes API metadata cache).

The conventions Prometheus users know: a pod annotated `prometheus.io/scrape: "true"` is scraped
at `<scheme>://<pod ip>:<port><path>`, from `prometheus.io/port` (required: without it the pod
is passed over, counted once and logged once), `prometheus.io/path` (default `/metrics`) and
`prometheus.io/scheme` (default `http`). Series get `job` (the `[prometheus_scrape]` job),
`instance` (ip:port), `namespace` and `pod` labels; records carry the pod's `kubernetes` fields
(namespace, pod, and the labels, annotations, node and owner the allow-lists keep), as its logs do.

The agent's own pod is left out (its listen address is given as `own`): its `/metrics` is
annotated for Prometheus, and the agent already sees its own counters (and scrapes them from
`urls` when asked to). The cache tells of every change of its pods through `changed`, so the
scraper starts and stops targets as pods come and go.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from agent.kubernetes.podmeta import PodInfo
from agent.metricsources.targets import Target

log = logging.getLogger("tailship.metrics.pods")

SCRAPE, PORT, PATH, SCHEME = (f"prometheus.io/{k}" for k in ("scrape", "port", "path", "scheme"))


class PodReader(Protocol):
    def pods_on_node(self) -> list[PodInfo]: ...

    def watch_pods(self) -> asyncio.Event: ...


class PodTargets:
    """A `TargetProvider` over the pods of the metadata cache."""

    def __init__(self, pods: PodReader, job: str, own: tuple[str, int] | None = None,
                 count: Callable[[str, int], None] = lambda event, n: None) -> None:
        self.pods = pods
        self.job = job
        # the agent's own address: its listen host, or its pod IP when it listens on every address
        self.own: set[tuple[str, int]] = set()
        if own is not None:
            wildcard = own[0] in ("0.0.0.0", "::", "")
            self.own.add((os.environ.get("POD_IP", "") if wildcard else own[0], own[1]))
        self.count = count
        self.changed = pods.watch_pods()
        self._passed_over: set[str] = set()  # pods told about once (no port, a bad one)

    def targets(self) -> list[Target]:
        out = []
        for pod in self.pods.pods_on_node():
            ann = pod.all_annotations
            if ann.get(SCRAPE, "").strip().lower() != "true" or not pod.ip:
                continue
            target = self._target(pod, ann)
            if target is not None:
                out.append(target)
        return out

    def _target(self, pod: PodInfo, ann: dict[str, str]) -> Target | None:
        port_text = ann.get(PORT, "").strip()
        scheme = ann.get(SCHEME, "http").strip().lower() or "http"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536 or scheme not in ("http", "https"):
            self._pass_over(pod, f"{PORT} {port_text!r} and {SCHEME} {scheme!r}: expected a port "
                                 f"number and http or https")
            return None
        port = int(port_text)
        if (pod.ip, port) in self.own:
            return None
        path = ann.get(PATH, "/metrics").strip() or "/metrics"
        if not path.startswith("/"):
            path = "/" + path
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        kubernetes: dict[str, Any] = {"namespace": pod.namespace, "pod": pod.name, "pod_uid": pod.uid,
                                      **pod.fields}
        return Target(f"{scheme}://{host}:{port}{path}",
                      {"job": self.job, "instance": f"{host}:{port}", "namespace": pod.namespace,
                       "pod": pod.name},
                      {"kubernetes": kubernetes})

    def _pass_over(self, pod: PodInfo, why: str) -> None:
        if pod.uid in self._passed_over:
            return
        if len(self._passed_over) > 10_000:  # pods come and go: the memory stays bounded
            self._passed_over.clear()
        self._passed_over.add(pod.uid)
        self.count("metric_pod_not_scraped", 1)
        log.warning("pod %s/%s is annotated %s but not scraped: %s", pod.namespace, pod.name, SCRAPE, why)
