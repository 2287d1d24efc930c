"""Expositions → one record per series: histograms and summaries whole, labels as Prometheus
sets them, limits cut and counted."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from agent.metricsources.exposition import Parsed, SeriesBuilder, parse

pytestmark = pytest.mark.timeout(30)
TARGET = {"job": "app", "instance": "10.0.0.1:8080"}


def registry() -> CollectorRegistry:
    r = CollectorRegistry()
    c = Counter("requests", "Requests", ["code"], registry=r)
    c.labels("200").inc(7)
    c.labels("500").inc(2)
    Gauge("temperature", "Temp", registry=r).set(21.5)
    h = Histogram("latency_seconds", "Latency", ["handler"], buckets=(0.1, 1.0), registry=r)
    for x in (0.05, 0.5, 5.0):
        h.labels("/a").observe(x)
    h.labels("/b").observe(0.2)
    Summary("size_bytes", "Size", registry=r).observe(100)
    return r


def builder(honor: bool = False) -> SeriesBuilder:
    return SeriesBuilder(dict(TARGET), honor, "2026-12-04T00:00:00.000Z", "node-1", {})


def parsed_of(text: str, openmetrics: bool, b: SeriesBuilder, max_samples: int) -> tuple[Parsed, list]:
    records: list = []
    return parse(text, openmetrics, b, max_samples, records.append), records


def by_name(records):
    out = {}
    for r in records:
        m = r["metric"]
        out.setdefault(m["name"], []).append(m)
    return out


@pytest.mark.parametrize("openmetrics", [False, True])
def test_every_type_kept_intact(openmetrics):
    """Counters per label set; a histogram's buckets, sum and count in the one record of its
    series; a summary's sum and count; the target's job and instance on every series."""
    r = registry()
    text = (generate_openmetrics(r) if openmetrics else generate_latest(r)).decode()
    parsed, records = parsed_of(text, openmetrics, builder(), 10_000)
    got = by_name(records)
    reqs = {m["labels"]["code"]: m["value"] for m in got["requests_total"]}
    assert reqs == {"200": 7.0, "500": 2.0}
    assert got["requests_total"][0]["type"] == "counter"
    [temp] = got["temperature"]
    assert temp["type"] == "gauge" and temp["value"] == 21.5
    hists = {m["labels"]["handler"]: m for m in got["latency_seconds"]}
    a = hists["/a"]
    assert a["type"] == "histogram"
    assert a["buckets"] == [{"le": 0.1, "count": 1.0}, {"le": 1.0, "count": 2.0}]
    assert a["count"] == 3.0 and a["sum"] == pytest.approx(5.55)
    assert hists["/b"]["count"] == 1.0
    [size] = got["size_bytes"]
    assert size["type"] == "summary" and size["sum"] == 100.0 and size["count"] == 1.0
    assert parsed.series == len(records)
    for m in records:
        assert m["metric"]["labels"]["job"] == "app"
        assert m["metric"]["labels"]["instance"] == "10.0.0.1:8080"
        assert m["host"] == {"name": "node-1"}
        assert not m["metric"]["name"].endswith("_created")
    # samples: 2 counters + 1 gauge + 2 histograms x (3 buckets + sum + count) + summary sum, count
    assert parsed.samples == 2 + 1 + 10 + 2 and parsed.cut == 0


def test_summary_quantiles_and_nan_in_one_record():
    text = ('# TYPE rpc summary\nrpc{quantile="0.5",svc="a"} 0.2\nrpc{quantile="0.99",svc="a"} NaN\n'
            'rpc_sum{svc="a"} 3\nrpc_count{svc="a"} 9\n')
    [rec] = parsed_of(text, False, builder(), 100)[1]
    m = rec["metric"]
    assert m["quantiles"] == [{"quantile": 0.5, "value": 0.2}, {"quantile": 0.99, "value": None}]
    assert (m["sum"], m["count"], m["labels"]["svc"]) == (3.0, 9.0, "a")


def test_clashing_labels_follow_honor_labels():
    """honor_labels = false: the target's job wins and the exposed one is exported_job; true: the
    exposed one wins."""
    text = '# TYPE x gauge\nx{job="exposed",k="v"} 1\n'
    [rec] = parsed_of(text, False, builder(honor=False), 100)[1]
    assert rec["metric"]["labels"] == {"job": "app", "exported_job": "exposed", "k": "v",
                                       "instance": "10.0.0.1:8080"}
    [rec] = parsed_of(text, False, builder(honor=True), 100)[1]
    assert rec["metric"]["labels"]["job"] == "exposed"


def test_sample_timestamps_are_kept():
    text = "# TYPE x gauge\nx 1 1700000000123\ny 2\n"
    recs = parsed_of(text, False, builder(), 100)[1]
    assert [r["@timestamp"] for r in recs] == ["2023-11-14T22:13:20.123Z", "2026-12-04T00:00:00.000Z"]


def test_past_max_samples_the_rest_is_cut_and_counted():
    """A target exposing more samples than max_samples: the first ones are kept, every other
    one counted as cut (a histogram counts each of its samples)."""
    text = "# TYPE g gauge\n" + "".join(f'g{{i="{i}"}} {i}\n' for i in range(1000))
    parsed, records = parsed_of(text, False, builder(), 300)
    assert len(records) == parsed.series == 300 and parsed.samples == 1000 and parsed.cut == 700
    assert [r["metric"]["labels"]["i"] for r in records] == [str(i) for i in range(300)]


def test_malformed_text_is_an_error():
    with pytest.raises(ValueError):
        parsed_of('x{a="1" 2\n', False, builder(), 100)


def test_infinite_bound_and_values_never_reach_json():
    from pipelines.metricrecords import metric_record

    rec = metric_record("t", "h", "histogram", {}, buckets=[(1.0, 2), (math.inf, 3)], sum_=math.inf, count=3)
    assert rec["metric"]["buckets"] == [{"le": 1.0, "count": 2.0}] and rec["metric"]["sum"] is None
