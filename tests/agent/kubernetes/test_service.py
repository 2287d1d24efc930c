"""A file's view of its pod through `KubernetesMetadata` (no server needed: the cache is fed
directly): the bounded wait and the no_api_metadata flag, routes from labels and from the
tailship.io/route annotation, invalid annotations counted, the node-scoped watch."""

from __future__ import annotations

import asyncio

import pytest

from agent.kubernetes.api import ApiConfig
from agent.kubernetes.service import KubernetesMetadata, node_name
from agent.kubernetes.settings import KubernetesSettings
from pipelines.formats import NO_API_METADATA
from pipelines.routes import RouteCondition, Router, RouteSettings, RoutingSettings
from tests.agent.kubernetes import recorded as r

pytestmark = pytest.mark.timeout(30)

FILE = {"kubernetes": {"namespace": "shop", "pod": "web-1", "pod_uid": "uid-1", "container": "app"}}
FIELDS = {**FILE, "log": {"file": {"path": "/var/log/containers/web-1_shop_app-0.log"}}}


def service(events: list[str], **s: object) -> KubernetesMetadata:
    router = Router(RoutingSettings(unmatched="rest", routes=[
        RouteSettings("team-a", ["a"], when=[RouteCondition("kubernetes.labels.team", equals="a")]),
        RouteSettings("audit", ["audit"], when=[RouteCondition("kubernetes.namespace", equals="audit")])]),
        ["a", "audit", "rest"])
    return KubernetesMetadata(KubernetesSettings(enabled=True, **s),  # type: ignore[arg-type]
                              ApiConfig(url="http://127.0.0.1:9"), "node-1", router, events.append)


async def test_an_unknown_pod_waits_then_ships_flagged_until_it_is_known():
    events: list[str] = []
    k = service(events, wait_for_metadata_ms=50)
    live = k.live_file(FILE, FIELDS)
    assert live is not None
    await live.ready()
    view = live.view()
    assert view.flags == NO_API_METADATA and events == ["kubernetes_no_api_metadata"]
    # without labels the team route cannot be decided for the file: per record, unmatched → rest
    assert view.routes is not None and view.routes.per_record is not None
    assert view.routes.per_record({**FIELDS, "message": "x"}) == 0b100
    gen = live.generation
    k.cache.pod_store.upsert(r.pod("web-1", "5", "uid-1", labels={"team": "a"}))
    assert live.generation != gen
    view = live.view()
    assert view.flags == 0 and view.meta["kubernetes"]["labels"] == {"team": "a"}
    assert view.routes is not None and view.routes.mask == 0b001


async def test_a_known_pod_does_not_wait():
    events: list[str] = []
    k = service(events, wait_for_metadata_ms=60_000)
    k.cache.pod_store.upsert(r.pod("web-1", "5", "uid-1"))
    k.namespaces.synced.set()   # namespaces listed too (a file waits for their labels as well)
    live = k.live_file(FILE, FIELDS)
    assert live is not None
    await live.ready()      # would time the test out if it waited
    assert events == []


def test_the_route_annotation_picks_a_route_and_a_bad_one_is_counted():
    events: list[str] = []
    k = service(events)
    k.cache.pod_store.upsert(r.pod("web-1", "5", "uid-1", labels={"team": "a"},
                                   annotations={"tailship.io/route": "audit"}))
    live = k.live_file(FILE, FIELDS)
    assert live is not None
    view = live.view()
    assert view.routes is not None and view.routes.mask == 0b010 and view.routes.per_record is None
    k.cache.pod_store.upsert(r.pod("web-1", "6", "uid-1", labels={"team": "a"},
                                   annotations={"tailship.io/route": "nope",
                                                "tailship.io/multiline": "cobol"}))
    view = live.view()
    assert view.routes is not None and view.routes.mask == 0b001      # by its labels
    live.view()
    assert events == ["kubernetes_bad_annotation"]                     # once per pod and problem


def test_the_watch_is_node_scoped_and_the_node_comes_from_the_downward_api():
    k = service([])
    assert k.pods.params == {"fieldSelector": "spec.nodeName=node-1"}
    assert node_name(KubernetesSettings(), {"NODE_NAME": "n7"}) == "n7"
    assert node_name(KubernetesSettings(node="x"), {"NODE_NAME": "n7"}) == "x"
    assert node_name(KubernetesSettings(), {}) == ""


async def test_a_file_waits_for_the_namespace_list_too():
    """At start-up the pod may be listed before the namespaces: the file's first records would
    miss kubernetes.namespace_labels."""
    events: list[str] = []
    k = service(events, wait_for_metadata_ms=60_000)
    k.cache.pod_store.upsert(r.pod("web-1", "5", "uid-1"))
    live = k.live_file(FILE, FIELDS)
    assert live is not None
    waiting = asyncio.create_task(live.ready())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    k.cache.namespace_store.replace([{"metadata": {"name": "shop", "labels": {"env": "prod"}}}])
    k.namespaces.synced.set()
    await asyncio.wait_for(waiting, 5)
    assert live.view().meta["kubernetes"]["namespace_labels"] == {"env": "prod"} and events == []


def test_files_outside_the_kubelet_layout_get_no_live_view():
    assert service([]).live_file({}, {"log": {"file": {"path": "/var/log/syslog"}}}) is None
