"""Scrape targets and where they come from.

A `Target` is one endpoint to scrape with the labels Prometheus would give its series (`job`,
`instance`) and the fields its records carry beside `metric` (`kubernetes.*` for a pod). A
`TargetProvider` says which targets there are now; the scraper asks every provider before each
round of task bookkeeping and keeps one task per distinct URL.

Today one provider exists: `StaticTargets`, the `urls` of `[prometheus_scrape]`. Pod discovery
(pods on this node annotated `prometheus.io/scrape: "true"`, with `prometheus.io/port`, `/path`,
`/scheme`) is the seam left for the Kubernetes API metadata cache: a provider whose `targets()`
turns the cached pods into `Target`s (`meta = {"kubernetes": {...}}`, `instance = <pod ip>:<port>`),
leaving out the agent's own pod (its /metrics would otherwise be scraped twice when it is also
among the `urls`), and whose `changed` event is set when the cache changes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # job, instance
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)    # kubernetes

    @property
    def name(self) -> str:
        """How messages and metrics name it: the URL (which never holds credentials)."""
        return self.url


class TargetProvider(Protocol):
    changed: asyncio.Event  # set when `targets()` may return something new

    def targets(self) -> list[Target]:
        """The targets to scrape now."""


class StaticTargets:
    """The configured URLs, `job` and `instance` (host:port) as Prometheus labels them."""

    def __init__(self, urls: list[str], job: str) -> None:
        self.changed = asyncio.Event()
        self._targets = [Target(u, {"job": job, "instance": instance_of(u)}) for u in urls]

    def targets(self) -> list[Target]:
        return list(self._targets)


def instance_of(url: str) -> str:
    """host:port of a URL, the port defaulted by scheme, as Prometheus' `instance` label."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def merge(providers: list[TargetProvider]) -> dict[str, Target]:
    """Every provider's targets by URL; the first provider naming a URL wins (a static URL over
    a discovered pod), so no endpoint is scraped twice."""
    out: dict[str, Target] = {}
    for p in providers:
        for t in p.targets():
            out.setdefault(t.url, t)
    return out
