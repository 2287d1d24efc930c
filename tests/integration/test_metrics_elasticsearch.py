"""Metric records in the real Elasticsearch (scripts/services), indexed with the template the
README documents: every record shipped is a document, `metric.value` and bucket bounds are
doubles, labels are one flattened field that term queries reach.

Locally the test skips when the server cannot start; under CI=true it fails instead.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.config import settings_from_dict
from agent.runtime import Agent
from tests.agent.metricsources.exporter import exporter
from tests.conftest import running, wait_until
from tests.integration.test_elasticsearch import count, es  # noqa: F401 - the fixture
from tests.services import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(120)]
TEMPLATE = ROOT / "docs" / "elasticsearch-metrics-template.json"


async def test_metric_records_index_with_the_documented_template(es: Any, tmp_path: Path) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    template = json.loads(TEMPLATE.read_text())
    assert template["index_patterns"] == ["tailship-metrics-*"]
    es.indices.put_index_template(name=f"tailship-metrics-{suffix}", **template)
    index = f"tailship-metrics-{suffix}"
    log = tmp_path / "app.log"
    log.write_text("a log line\n")
    with exporter(20) as url:
        s = settings_from_dict({
            "data_dir": str(tmp_path / "data"), "host_name": "es-node",
            "source": {"include": [str(log)]}, "metrics": {"listen": ""},
            "sink": {"type": "elasticsearch", "elasticsearch": {
                "urls": [f"http://{es.tailship_hostport}"], "index": index}},
            "routing": {"unmatched": "drop", "routes": [
                {"name": "metrics", "kind": "metrics", "all": True, "sinks": ["elasticsearch"]}]},
            "prometheus_scrape": {"enabled": True, "urls": [url], "job": "es-it", "interval_secs": 1,
                                  "timeout_secs": 1},
            "host_metrics": {"enabled": True, "interval_secs": 1, "timeout_secs": 1},
        }, env={})
        agent = Agent(s)
        async with running(agent):
            assert agent.metric_sources is not None
            st = agent.metric_sources.stats.targets
            await wait_until(lambda: url in st and st[url].delivered >= 3 * (20 + 5)
                             and "host" in st and st["host"].delivered >= 2 * st["host"].series > 0,
                             60, "3 scrapes and 2 host collections delivered")
        delivered = sum(t.delivered for t in st.values())
    assert count(es, index) == delivered
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]["metric"]["properties"]
    assert mapping["value"]["type"] == "double" and mapping["labels"]["type"] == "flattened"
    assert mapping["buckets"]["properties"]["le"]["type"] == "double"
    work = es.search(index=index, size=100, query={"bool": {"filter": [
        {"term": {"metric.labels.job": "es-it"}}, {"term": {"metric.name": "exporter_work_total"}},
        {"term": {"metric.labels.i": "7"}}]}})["hits"]["hits"]
    values = sorted(h["_source"]["metric"]["value"] for h in work)
    assert values and all(v % 7 == 0 for v in values)  # seq * i for i = 7
    hist = es.search(index=index, size=1, query={"term": {"metric.name": "exporter_latency_seconds"}})
    [h] = hist["hits"]["hits"]
    assert [b["le"] for b in h["_source"]["metric"]["buckets"]] == [0.1, 1.0, 10.0]
    cpu = es.count(index=index, query={"term": {"metric.name": "node_cpu_seconds_total"}})["count"]
    assert cpu > 0
    es.indices.delete_index_template(name=f"tailship-metrics-{suffix}")
    es.indices.delete(index=index)
