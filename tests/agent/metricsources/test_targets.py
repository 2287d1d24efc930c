"""Targets: Prometheus' `instance` label, and one task per URL whatever provides it (the seam pod
discovery plugs into: a pod target with the URL of a configured one is not scraped twice)."""

from __future__ import annotations

import asyncio

from agent.metricsources.targets import StaticTargets, Target, instance_of, merge


def test_instance_defaults_the_port_by_scheme():
    assert instance_of("http://a/metrics") == "a:80"
    assert instance_of("https://a/metrics") == "a:443"
    assert instance_of("http://10.0.0.1:9100/metrics") == "10.0.0.1:9100"
    assert instance_of("http://[::1]:2021/metrics") == "[::1]:2021"


class Pods:
    """A provider standing in for pod discovery (not built yet)."""

    def __init__(self, targets: list[Target]) -> None:
        self.changed = asyncio.Event()
        self._targets = targets

    def targets(self) -> list[Target]:
        return self._targets


def test_a_url_two_providers_name_is_scraped_once_as_the_first_names_it():
    static = StaticTargets(["http://10.0.0.1:2021/metrics", "http://b:1/m"], "static")
    pods = Pods([Target("http://10.0.0.1:2021/metrics", {"job": "pods"}, {"kubernetes": {"pod": "me"}}),
                 Target("http://10.0.0.2:8080/metrics", {"job": "pods"})])
    got = merge([static, pods])
    assert list(got) == ["http://10.0.0.1:2021/metrics", "http://b:1/m", "http://10.0.0.2:8080/metrics"]
    assert got["http://10.0.0.1:2021/metrics"].labels["job"] == "static"
