"""API server answers as a real kube-apiserver writes them (shapes from Kubernetes 1.30's JSON:
a pod list, watch events, a BOOKMARK, the Status of an expired resourceVersion), trimmed to the
fields the agent reads. The fabric8 test server sends no bookmarks and never 410: these cover it."""

from __future__ import annotations

from typing import Any


def pod(name: str, rv: str, uid: str, node: str = "node-1", ns: str = "shop",
        labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None, image: str = "registry.example/app:1.2") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv,
                            "creationTimestamp": "2026-12-04T10:00:00Z",
                            "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "0b7d1d6e-0000-4000-8000-000000000001",
                                    "controller": True, "blockOwnerDeletion": True}]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": image}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3"}}


def pod_list(rv: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
            "items": [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]}


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                           "metadata": {"resourceVersion": rv, "creationTimestamp": None,
                                                        "annotations": {"k8s.io/initial-events-end": "true"}},
                                           "spec": {"containers": None}, "status": {}}}


def expired(asked: str, oldest: str) -> dict[str, Any]:
    """The ERROR event of a watch from a compacted resourceVersion."""
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                        "status": "Failure",
                                        "message": f"too old resource version: {asked} ({oldest})",
                                        "reason": "Expired", "code": 410}}


UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
GONE = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "The provided continue parameter is too old", "reason": "Expired", "code": 410}
