"""Scrape targets from the pods on this node: the prometheus.io annotations, the agent's own pod
left out, a pod without a usable port passed over once, and the cache telling of changes."""

from __future__ import annotations

import asyncio

import pytest

from agent.kubernetes.cache import MetadataCache
from agent.kubernetes.podmeta import Filters, allow_list
from agent.metricsources.pods import PodTargets


def pod(name: str, ip: str, annotations: dict[str, str], uid: str = "") -> dict:
    return {"metadata": {"name": name, "namespace": "shop", "uid": uid or f"uid-{name}",
                         "labels": {"team": "a"}, "annotations": annotations},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "x:1"}]},
            "status": {"podIP": ip}}


class Pods:
    """The read API of the metadata cache over pod objects."""

    def __init__(self, *objs: dict) -> None:
        self.cache = MetadataCache(Filters(allow_list(["*"]), allow_list([]), allow_list(["*"])), 300)
        self.cache.pod_store.replace(list(objs))

    def pods_on_node(self):
        return self.cache.pods_on_node()

    def watch_pods(self) -> asyncio.Event:
        return self.cache.watch_pods()


def test_annotated_pods_become_targets_with_their_labels_and_fields(monkeypatch):
    monkeypatch.setenv("POD_IP", "10.0.0.9")
    counted: list[str] = []
    pods = Pods(
        pod("web", "10.0.0.5", {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}),
        pod("api", "10.0.0.6", {"prometheus.io/scrape": "True", "prometheus.io/port": "9102",
                                "prometheus.io/path": "stats", "prometheus.io/scheme": "https"}),
        pod("quiet", "10.0.0.7", {"prometheus.io/port": "8080"}),                   # not asked for
        pod("noport", "10.0.0.8", {"prometheus.io/scrape": "true"}),                 # no port
        pod("agent", "10.0.0.9", {"prometheus.io/scrape": "true", "prometheus.io/port": "2021"}),
        pod("pending", "", {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}),  # no IP yet
    )
    provider = PodTargets(pods, "pods", own=("0.0.0.0", 2021), count=lambda e, n: counted.append(e))
    got = {t.url: t for t in provider.targets()}
    assert set(got) == {"http://10.0.0.5:8080/metrics", "https://10.0.0.6:9102/stats"}
    web = got["http://10.0.0.5:8080/metrics"]
    assert web.labels == {"job": "pods", "instance": "10.0.0.5:8080", "namespace": "shop", "pod": "web"}
    k8s = web.meta["kubernetes"]
    assert (k8s["namespace"], k8s["pod"], k8s["pod_uid"]) == ("shop", "web", "uid-web")
    assert k8s["labels"] == {"team": "a"} and k8s["node"] == "node-1"
    provider.targets()
    assert counted == ["metric_pod_not_scraped"]  # the pod without a port, told about once


@pytest.mark.timeout(5)
async def test_the_cache_tells_the_provider_of_pods_that_come_and_go():
    pods = Pods()
    provider = PodTargets(pods, "pods")
    assert provider.targets() == [] and not provider.changed.is_set()
    pods.cache.pod_store.replace([pod("web", "10.0.0.5", {"prometheus.io/scrape": "true",
                                                           "prometheus.io/port": "8080"})])
    await asyncio.wait_for(provider.changed.wait(), 1)
    assert [t.url for t in provider.targets()] == ["http://10.0.0.5:8080/metrics"]
    provider.changed.clear()
    pods.cache.pod_store.replace([])
    await asyncio.wait_for(provider.changed.wait(), 1)
    assert provider.targets() == []
