"""`tailship validate` checks the metric sources' tables: every problem named, none hidden."""

from __future__ import annotations

import pytest

from agent.config import settings_from_dict
from pipelines.errors import ConfigError


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        settings_from_dict(data, env={})
    return str(exc.value)


def test_defaults_are_off_and_valid():
    s = settings_from_dict({}, env={})
    assert not s.prometheus_scrape.enabled and not s.host_metrics.enabled
    assert s.host_metrics.collectors == ["cpu", "stat", "memory", "load", "filesystem", "disk", "network"]


@pytest.mark.parametrize("data, expected", [
    ({"prometheus_scrape": {"urls": ["ftp://x/metrics"]}},
     "prometheus_scrape.urls[0]: expected an http:// or https:// URL, got scheme 'ftp'"),
    ({"prometheus_scrape": {"urls": ["http:///metrics"]}},
     "prometheus_scrape.urls[0]: expected an http(s) URL with a host"),
    ({"prometheus_scrape": {"urls": ["http://x:99999/metrics"]}},
     "prometheus_scrape.urls[0]: expected an http(s) URL, got one that does not parse"),
    ({"prometheus_scrape": {"enabled": True}},
     "prometheus_scrape.urls: expected at least one URL to scrape when enabled = true"),
    ({"prometheus_scrape": {"urls": ["http://a/m"], "timeout_secs": 20}},
     "prometheus_scrape.timeout_secs: expected at most interval_secs (15.0), got 20.0"),
    ({"prometheus_scrape": {"interval_secs": 0.5}},
     "prometheus_scrape.interval_secs: expected a number >= 1"),
    ({"prometheus_scrape": {"password": "p"}}, "prometheus_scrape.username: expected the basic auth user"),
    ({"prometheus_scrape": {"bearer_token_file": "/t", "username": "u"}},
     "prometheus_scrape.bearer_token_file: expected either a bearer token or basic auth"),
    ({"prometheus_scrape": {"max_samples": 0}}, "prometheus_scrape.max_samples: expected an integer >= 1"),
    ({"host_metrics": {"collectors": ["cpu", "gpu"]}},
     "host_metrics.collectors[1]: expected one of cpu, stat, memory, load, filesystem, disk, network, "
     "got 'gpu'"),
    ({"host_metrics": {"disks_exclude": "("}}, "host_metrics.disks_exclude: expected a regular expression"),
    ({"host_metrics": {"interval_secs": 5, "timeout_secs": 6}},
     "host_metrics.timeout_secs: expected at most interval_secs (5.0), got 6.0"),
    ({"routing": {"unmatched": "drop", "routes": [{"name": "m", "sinks": ["file"], "all": True,
                                                   "kind": "traces"}]}},
     "routing.routes[0].kind: expected one of 'all', 'logs', 'metrics', got 'traces'"),
])
def test_each_mistake_named(data, expected):
    assert expected in problems(data)


def test_credentials_in_a_url_are_refused_and_never_shown():
    text = problems({"prometheus_scrape": {"urls": ["http://user:s3cret@host:9100/metrics"]}})
    assert "prometheus_scrape.urls[0]: expected no credentials in the URL" in text
    assert "s3cret" not in text
