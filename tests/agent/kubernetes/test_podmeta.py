"""Fields a pod gives its records, owners derived without watching workloads, annotations that
steer the agent, the cache's deleted-pod grace and handles."""

from __future__ import annotations

import pytest

from agent.kubernetes.cache import MetadataCache
from agent.kubernetes.podmeta import Filters, allow_list, owner, pod_info, steering
from tests.agent.kubernetes import recorded as r


def filters(labels=("*",), annotations=(), ns=("*",)) -> Filters:
    return Filters(allow_list(list(labels)), allow_list(list(annotations)), allow_list(list(ns)))


def test_allow_lists_keep_matching_keys_sorted():
    m = {"team": "a", "app.kubernetes.io/name": "shop", "pod-template-hash": "5d9f"}
    assert allow_list(["*"])(m) == {"app.kubernetes.io/name": "shop", "pod-template-hash": "5d9f",
                                    "team": "a"}
    assert allow_list([])(m) == {}
    assert allow_list(["app.kubernetes.io/*", "team"])(m) == {"app.kubernetes.io/name": "shop",
                                                              "team": "a"}


@pytest.mark.parametrize(("kind", "name", "labels", "expected"), [
    ("ReplicaSet", "shop-api-5d9f7c8b6", {"pod-template-hash": "5d9f7c8b6"}, ("Deployment", "shop-api")),
    ("ReplicaSet", "handmade", {"pod-template-hash": "5d9f7c8b6"}, ("ReplicaSet", "handmade")),
    ("ReplicaSet", "shop-api-5d9f7c8b6", {}, ("ReplicaSet", "shop-api-5d9f7c8b6")),
    ("StatefulSet", "db", {}, ("StatefulSet", "db")),
    ("DaemonSet", "agent", {}, ("DaemonSet", "agent")),
    ("Job", "backup-29012345", {}, ("CronJob", "backup")),
    ("Job", "migrate", {}, ("Job", "migrate")),
])
def test_owner_is_the_controlling_workload(kind, name, labels, expected):
    meta = r.pod("p", "1", "u", owner=(kind, name))["metadata"]
    assert owner(meta, labels) == {"kind": expected[0], "name": expected[1]}


def test_pod_fields_follow_the_allow_lists():
    obj = r.pod("shop-api-5d9f7c8b6-x2x", "1", "u1", labels={"app": "shop", "team": "a",
                                                             "pod-template-hash": "5d9f7c8b6"},
                annotations={"owner/email": "a@example.com", "tailship.io/exclude": "sidecar"},
                owner=("ReplicaSet", "shop-api-5d9f7c8b6"))
    pod = pod_info(obj, filters(labels=["app", "team"], annotations=["owner/*"]))
    assert pod is not None
    assert pod.fields == {"labels": {"app": "shop", "team": "a"},
                          "annotations": {"owner/email": "a@example.com"}, "node": "node-1",
                          "owner": {"kind": "Deployment", "name": "shop-api"}}
    assert pod.images == {"app": "registry.example/app:1.2"}
    assert pod.steer.excludes("sidecar") and not pod.steer.excludes("app")
    # every annotation stays readable (a Prometheus scraper's prometheus.io/scrape)
    assert pod.all_annotations["tailship.io/exclude"] == "sidecar" and pod.ip == "10.1.2.3"


def test_default_filters_copy_labels_but_no_annotations():
    pod = pod_info(r.pod("p", "1", "u", labels={"a": "1"}, annotations={"b": "2"}), filters())
    assert pod is not None and pod.fields["labels"] == {"a": "1"} and "annotations" not in pod.fields


def test_steering_annotations():
    s = steering({"tailship.io/exclude": "true", "tailship.io/multiline": "java",
                  "tailship.io/format": "text", "tailship.io/route": "audit"})
    assert s.excludes("anything") and s.multiline == "java" and s.text and s.route == "audit"
    assert not s.problems
    bad = steering({"tailship.io/multiline": "cobol", "tailship.io/exclude": "false"})
    assert bad.multiline is None and not bad.excludes("app")
    assert bad.problems == ("tailship.io/multiline: expected one of none, java, python, go, auto, "
                            "got 'cobol'",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deleted_pod_is_kept_for_its_grace_then_forgotten():
    clock = Clock()
    c = MetadataCache(filters(), deleted_grace_secs=300, clock=clock)
    c.pod_store.replace([r.pod("web", "1", "uid-1", labels={"app": "web"})])
    held = c.handle("shop", "web", "uid-1")
    c.pod_store.delete(r.pod("web", "2", "uid-1", labels={"app": "web"}))
    clock.now += 299
    c.expire()
    late = c.handle("shop", "web")          # a file of it found after the delete, in the grace
    assert late.pod is not None and late.pod.fields["labels"] == {"app": "web"}
    assert c.pods_on_node() == []          # not a pod of the node any more
    clock.now += 2
    c.expire()
    assert c.handle("shop", "web", "uid-2").pod is None
    assert "uid-1" not in c.pods
    assert held.pod is not None            # a file still reading keeps what it had


def test_handles_follow_changes_and_tell_uid_from_name():
    c = MetadataCache(filters(), 300)
    by_name, by_uid = c.handle("shop", "db-0"), c.handle("shop", "db-0", "uid-new")
    assert not by_name.known.is_set()
    c.pod_store.upsert(r.pod("db-0", "5", "uid-old", ns="shop"))
    assert by_name.pod is not None and by_name.pod.uid == "uid-old" and by_uid.pod is None
    c.pod_store.upsert(r.pod("db-0", "9", "uid-new", ns="shop", labels={"v": "2"}))
    assert by_name.pod.uid == "uid-new" and by_uid.pod is not None and by_uid.known.is_set()
    gen = by_uid.generation
    c.namespace_store.upsert({"metadata": {"name": "shop", "labels": {"team": "a"}}})
    assert by_uid.generation == gen + 1 and c.namespace_labels("shop") == {"team": "a"}


def test_validate_names_bad_kubernetes_options():
    from agent.config import settings_from_dict
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        settings_from_dict({"kubernetes": {"enabled": True, "api_url": "api:6443", "labels": [""],
                                           "deleted_grace_secs": -1, "wait_for_metadata_ms": "x"}})
    text = str(err.value)
    for expected in ("kubernetes.api_url: expected an http:// or https:// URL, got 'api:6443'",
                     "kubernetes.labels[0]: expected a key or a glob", "kubernetes.deleted_grace_secs",
                     "kubernetes.wait_for_metadata_ms"):
        assert expected in text, text
