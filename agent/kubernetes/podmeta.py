"""What a pod object gives its records, and the annotations that steer the agent. Pure functions
over the API's JSON, decided once per pod change, never per record.

Fields (under `kubernetes.`, beside the file name's namespace, pod, pod_uid, container,
container_id): `labels` and `annotations` (keys kept by the allow-lists, globs),
`namespace_labels`, `node`, `owner` {kind, name} of the controlling workload, `container_image`.

The owner is derived without watching workloads: a ReplicaSet that carries the pod's
`pod-template-hash` as its name's suffix belongs to the Deployment named by the rest (how the
Deployment controller names them); a Job named `<name>-<digits>` (the CronJob controller names
its Jobs `<cronjob>-<scheduled minutes>`) to that CronJob; otherwise the controller reference
itself (StatefulSet, DaemonSet, Job, a bare ReplicaSet, ...). A Deployment whose ReplicaSet was
named otherwise, or a Job so named by hand, is reported by this rule as it reads.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXCLUDE = "tailship.io/exclude"
MULTILINE = "tailship.io/multiline"
FORMAT = "tailship.io/format"
ROUTE = "tailship.io/route"
MULTILINE_PRESETS = ("none", "java", "python", "go", "auto")
_CRON_JOB = re.compile(r"^(?P<cron>.+)-\d{8,}$")


def allow_list(globs: list[str]) -> Callable[[dict[str, str]], dict[str, str]]:
    """A filter of a key → value map keeping the keys that match one of `globs` (["*"]: all,
    []: none), sorted, so equal maps encode alike."""
    if not globs:
        return lambda m: {}
    if "*" in globs:
        return lambda m: dict(sorted(m.items()))
    match = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match
    return lambda m: {k: v for k, v in sorted(m.items()) if match(k)}


@dataclass(frozen=True, slots=True)
class Steering:
    """What a pod's annotations ask of the agent (invalid values are left out, in `problems`)."""

    exclude_all: bool = False
    exclude: frozenset[str] = frozenset()     # container names
    multiline: str | None = None
    text: bool = False                         # tailship.io/format: text: do not parse JSON
    route: str | None = None
    problems: tuple[str, ...] = ()

    def excludes(self, container: str) -> bool:
        return self.exclude_all or container in self.exclude


def steering(annotations: dict[str, str]) -> Steering:
    problems = []
    exclude_all, exclude = False, frozenset[str]()
    ex = annotations.get(EXCLUDE)
    if ex is not None:
        v = ex.strip()
        if v.lower() == "true":
            exclude_all = True
        elif v.lower() != "false":
            exclude = frozenset(c.strip() for c in v.split(",") if c.strip())
    multiline = annotations.get(MULTILINE)
    if multiline is not None and multiline not in MULTILINE_PRESETS:
        problems.append(f"{MULTILINE}: expected one of {', '.join(MULTILINE_PRESETS)}, got {multiline!r}")
        multiline = None
    fmt = annotations.get(FORMAT)
    if fmt is not None and fmt not in ("text", "json"):
        problems.append(f"{FORMAT}: expected text or json, got {fmt!r}")
    route = annotations.get(ROUTE) or None
    return Steering(exclude_all, exclude, multiline, fmt == "text", route, tuple(problems))


def owner(meta: dict[str, Any], labels: dict[str, str]) -> dict[str, str] | None:
    """{kind, name} of the workload controlling a pod (see the module docstring)."""
    refs = meta.get("ownerReferences") or []
    ctrl = next((r for r in refs if isinstance(r, dict) and r.get("controller")), None)
    if ctrl is None:
        ctrl = next((r for r in refs if isinstance(r, dict)), None)
    if ctrl is None or not ctrl.get("kind") or not ctrl.get("name"):
        return None
    kind, name = str(ctrl["kind"]), str(ctrl["name"])
    if kind == "ReplicaSet":
        h = labels.get("pod-template-hash")
        if h and name.endswith("-" + h) and len(name) > len(h) + 1:
            return {"kind": "Deployment", "name": name[: -len(h) - 1]}
    elif kind == "Job":
        m = _CRON_JOB.match(name)
        if m:
            return {"kind": "CronJob", "name": m["cron"]}
    return {"kind": kind, "name": name}


@dataclass(slots=True)
class Filters:
    labels: Callable[[dict[str, str]], dict[str, str]]
    annotations: Callable[[dict[str, str]], dict[str, str]]
    namespace_labels: Callable[[dict[str, str]], dict[str, str]]


@dataclass(slots=True)
class PodInfo:
    """One pod as the agent keeps it: the API fields of its records, images by container, what
    its annotations steer, and every annotation (for readers such as a Prometheus scraper)."""

    uid: str
    namespace: str
    name: str
    node: str
    fields: dict[str, Any]                 # labels, annotations, node, owner (allow-lists applied)
    images: dict[str, str]                 # container name → image
    steer: Steering
    all_annotations: dict[str, str] = field(default_factory=dict)
    all_labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""
    deleted_at: float | None = None        # monotonic time the API said it was deleted


def str_map(v: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else {}


def pod_info(obj: dict[str, Any], filters: Filters) -> PodInfo | None:
    """A pod object → PodInfo; None when it has no name or namespace."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    assert isinstance(meta, dict) and isinstance(spec, dict) and isinstance(status, dict)
    name, ns = meta.get("name"), meta.get("namespace")
    if not name or not ns:
        return None
    labels, annotations = str_map(meta.get("labels")), str_map(meta.get("annotations"))
    images: dict[str, str] = {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict) and c.get("name") and c.get("image"):
                images[str(c["name"])] = str(c["image"])
    fields: dict[str, Any] = {}
    kept = filters.labels(labels)
    if kept:
        fields["labels"] = kept
    kept = filters.annotations(annotations)
    if kept:
        fields["annotations"] = kept
    node = str(spec.get("nodeName") or "")
    if node:
        fields["node"] = node
    own = owner(meta, labels)
    if own is not None:
        fields["owner"] = own
    return PodInfo(uid=str(meta.get("uid") or ""), namespace=str(ns), name=str(name), node=node,
                   fields=fields, images=images, steer=steering(annotations),
                   all_annotations=annotations, all_labels=labels, ip=str(status.get("podIP") or ""))
