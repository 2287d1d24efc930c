"""Kubernetes metadata from the kubelet's file layout (no API server needed).

    /var/log/containers/<pod>_<namespace>_<container>-<container id>.log   (symlink)
    /var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log

The symlink name gives the container id, the pods path gives the pod uid; a file found through
the symlink is described by both.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipelines.routes import FileRoutes

_CONTAINERS = re.compile(
    r"^(?P<pod>[a-z0-9][a-z0-9.-]*)_(?P<namespace>[a-z0-9][a-z0-9-]*)_"
    r"(?P<container>[a-z0-9][a-z0-9-]*)-(?P<container_id>[0-9a-f]{64})\.log$"
)
_PODS = re.compile(
    r"(?:^|/)(?P<namespace>[a-z0-9][a-z0-9-]*)_(?P<pod>[a-z0-9][a-z0-9.-]*)_"
    r"(?P<pod_uid>[0-9a-fA-F-]+)/(?P<container>[a-z0-9][a-z0-9-]*)/\d+\.log(?:\.\S*)?$"
)
_ORDER = ("namespace", "pod", "pod_uid", "container", "container_id")


def kubernetes_from_paths(path: str, real_path: str | None = None) -> dict[str, str]:
    """Fields of `kubernetes.*` that the file's name and its link target reveal."""
    found: dict[str, str] = {}
    for p in (path, real_path or ""):
        if not p:
            continue
        m = _CONTAINERS.match(os.path.basename(p))
        if m:
            found.update({k: v for k, v in m.groupdict().items() if k not in found})
        m = _PODS.search(p)
        if m:
            found.update({k: v for k, v in m.groupdict().items() if k not in found})
    return {k: found[k] for k in _ORDER if k in found}


def default_host_name(configured: str = "") -> str:
    return configured or os.environ.get("NODE_NAME") or socket.gethostname()


def file_meta(path: str, real_path: str | None) -> dict[str, Any]:
    k8s = kubernetes_from_paths(path, real_path)
    return {"kubernetes": k8s} if k8s else {}


def file_fields(meta: dict[str, Any], path: str, host_name: str) -> dict[str, Any]:
    """The fields the chain sets on every record of a file, with the agent's values winning over
    an app's (see `pipelines.chain`): what routes can decide once per file."""
    fields: dict[str, Any] = {"log": {"file": {"path": path}}}
    if meta.get("kubernetes"):
        fields["kubernetes"] = meta["kubernetes"]
    if host_name:
        fields["host"] = {"name": host_name}
    return fields


@dataclass(frozen=True, slots=True)
class FileView:
    """What the chain puts on a file's records that can change while the file is read (pod
    metadata from the API server): the per-file fields, their routing, and what the pod's
    annotations ask (skip the file, a multiline preset, no JSON parsing). `flags`: log.flags bits
    added to every record (no_api_metadata)."""

    meta: dict[str, Any]
    routes: FileRoutes | None
    flags: int = 0
    exclude: bool = False
    multiline: str | None = None
    parse_json: bool | None = None


class LiveMeta(Protocol):
    """A file's changing metadata (the agent's Kubernetes cache implements it). The chain reads
    `generation` once per chunk and asks for a new `view()` only when it moved on; `ready()` is
    awaited once before the file's first read (bounded: a file of a pod the cache does not know
    yet waits a little for the watch)."""

    @property
    def generation(self) -> int: ...

    def view(self) -> FileView: ...

    async def ready(self) -> None: ...
