"""Metrics derived from log records: rule semantics, bounds, config errors, and derived values
checked against what this test computes itself from the generated input files."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import settings_from_dict
from agent.runtime import Agent
from agent.settings import LogMetricsSettings, MetricRule
from bench.generate import STYLES, generate_tree
from pipelines.errors import ConfigError
from pipelines.logmetrics import OVERFLOW, LogMetrics
from tests.conftest import CollectSink, fast_settings, running, seq_of, wait_until


def samples(lm: LogMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every exported sample, parsed back from the Prometheus text format."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(lm)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rules(*rs: MetricRule, **kw: Any) -> LogMetricsSettings:
    return dataclasses.replace(LogMetricsSettings(), rules=list(rs), **kw)


def test_counter_rule_matches_labels_and_overflow():
    lm = LogMetrics(rules(MetricRule(name="errors", match_field="status", one_of=["500", "503"],
                                     labels=["service", "http.method"], max_series=2), defaults=False))
    recs = [{"status": 500, "service": "a", "http": {"method": "GET"}},
            {"status": 503, "service": "a", "http.method": "GET"},      # dotted key = nested path
            {"status": 200, "service": "a", "http": {"method": "GET"}},  # no match
            {"status": "500", "service": "b"},                           # method missing: ""
            {"status": 500, "service": "c", "http": {"method": "PUT"}},  # third label set: overflow
            {"service": "d"}]                                            # no status: no match
    for r in recs:
        lm.observe(r, r.get("trace_id"))
    got = samples(lm)
    assert got[("logs_errors_total", (("http_method", "GET"), ("service", "a")))] == 2
    assert got[("logs_errors_total", (("http_method", ""), ("service", "b")))] == 1
    assert got[("logs_errors_total", (("http_method", OVERFLOW), ("service", OVERFLOW)))] == 1
    assert got[("tailship_log_metrics_overflow_total", (("metric", "logs_errors_total"),
                                                        ("reason", "max_series")))] == 1
    assert len([k for k in got if k[0] == "logs_errors_total"]) == 3


def test_histogram_buckets_sum_and_skipped_records():
    lm = LogMetrics(rules(MetricRule(name="latency_ms", type="histogram", field="duration_ms",
                                     buckets=[10, 100], message_regex="took"), defaults=False))
    for r in [{"msg": "took", "duration_ms": 5}, {"message": "took", "duration_ms": 10},
              {"message": "took", "duration_ms": "50.5"}, {"message": "took", "duration_ms": 1000},
              {"message": "took"}, {"message": "took", "duration_ms": "fast"},
              {"message": "other", "duration_ms": 1}]:
        lm.observe(r, r.get("trace_id"))
    got = samples(lm)
    assert got[("logs_latency_ms_bucket", (("le", "10.0"),))] == 2   # le: 5 and 10
    assert got[("logs_latency_ms_bucket", (("le", "100.0"),))] == 3
    assert got[("logs_latency_ms_bucket", (("le", "+Inf"),))] == 4
    assert got[("logs_latency_ms_count", ())] == 4
    assert got[("logs_latency_ms_sum", ())] == pytest.approx(1065.5)
    skipped = "tailship_log_metrics_skipped_total"
    assert got[(skipped, (("metric", "logs_latency_ms"), ("reason", "missing_field")))] == 1
    assert got[(skipped, (("metric", "logs_latency_ms"), ("reason", "not_a_number")))] == 1


def test_defaults_and_host_label():
    lm = LogMetrics(rules(host_label=True), host_name="node-7")
    for r in [{"level": "WARN", "kubernetes": {"namespace": "shop"}, "trace_id": "a" * 32},
              {"severity": "warning", "kubernetes": {"namespace": "shop"}},
              {"log": {"level": "Eror"}}, {"message": "plain"}, {"level": 50}]:
        lm.observe(r, r.get("trace_id"))
    got = samples(lm)
    lines = "logs_lines_total"
    assert got[(lines, (("host", "node-7"), ("level", "warning"), ("namespace", "shop")))] == 2
    assert got[(lines, (("host", "node-7"), ("level", "error"), ("namespace", "")))] == 2  # incl. pino 50
    assert got[(lines, (("host", "node-7"), ("level", "unknown"), ("namespace", "")))] == 1
    traced = "logs_trace_context_lines_total"
    assert got[(traced, (("has_trace", "true"), ("host", "node-7")))] == 1
    assert got[(traced, (("has_trace", "false"), ("host", "node-7")))] == 4


@pytest.mark.parametrize("rule,problem", [
    ({"name": "x", "message_regex": "("},
     "log_metrics.rules[0].message_regex: expected a regular expression"),
    ({"name": "x", "type": "gauge"}, "log_metrics.rules[0].type: expected one of 'counter', 'histogram'"),
    ({"name": "x", "type": "histogram"}, "log_metrics.rules[0].field: expected the numeric field"),
    ({"name": "bad-name"}, "log_metrics.rules[0].name: expected a Prometheus name"),
    ({"name": "x", "match_field": "status"}, "log_metrics.rules[0].match_field: expected one of equals"),
    ({"name": "x", "equals": "1"}, "log_metrics.rules[0].match_field: expected the field"),
    ({"type": "counter"}, "log_metrics.rules[0].name: required key is missing"),
    ({"name": "x", "colour": "red"}, "log_metrics.rules[0].colour: unknown key"),
])
def test_bad_rules_are_config_errors_with_their_key_path(rule, problem):
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"log_metrics": {"rules": [rule]}}, env={})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_duplicate_rule_names_rejected():
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"log_metrics": {"rules": [{"name": "a"}, {"name": "a"}]}}, env={})
    assert e.value.problems == ["log_metrics.rules[1].name: expected a unique name, got 'a' (also rules[0])"]


def _expected_from_files(m: Any) -> dict[str, Counter]:
    """What the metrics must say, computed from the generated files with this test's own decoding
    (each physical line is one record: no split lines, no stack traces in this input)."""
    canon = ("info", "debug", "warning", "error")
    level_of = {(key, v): canon[i] for key, _, values in STYLES for i, v in enumerate(values)}
    exp: dict[str, Counter] = defaultdict(Counter)
    for f in m.files:
        for raw in Path(f.path).read_bytes().splitlines():
            payload = (orjson.loads(raw)["log"].rstrip("\n") if f.format == "docker"
                       else raw.split(b" ", 3)[3].decode())
            rec = orjson.loads(payload) if payload.startswith("{") else {"message": payload}
            seq = seq_of(rec)
            key = next((k for k in ("level", "severity", "lvl") if k in rec), None)
            level = level_of[(key, rec[key])] if key else "unknown"
            exp["lines"][(f.namespace, level)] += 1
            exp["traced"][str(m.expected[seq][0] is not None).lower()] += 1
            if rec.get("status") in (500, 502, 503, 504):
                exp["errors"][f.service] += 1
            if isinstance(rec.get("duration_ms"), (int, float)):
                d = rec["duration_ms"]
                exp["dur_count"][f.namespace] += 1
                exp["dur_sum"][f.namespace] += d
                for b in (10, 100, 1000):
                    exp["dur_bucket"][(f.namespace, b)] += d <= b
            text = rec.get("message") if isinstance(rec.get("message"), str) else rec.get("msg", "")
            exp["timeouts"]["all"] += "timeout" in text or "timed out" in text
    return exp


@pytest.mark.timeout(60)
async def test_derived_metrics_equal_an_independent_count_of_the_input(tmp_path):
    root = tmp_path / "tree"
    m = generate_tree(root, seed=9, pods=6, lines=6000, fmt="mixed", long_every=0, stack_every=0,
                      with_expected=True)
    s = fast_settings(tmp_path, [str(root / "containers" / "*.log")])
    s.log_metrics = rules(
        MetricRule(name="http_server_errors", match_field="status", one_of=["500", "502", "503", "504"],
                   labels=["service"]),
        MetricRule(name="request_duration_ms", type="histogram", field="duration_ms",
                   buckets=[10, 100, 1000], labels=["kubernetes.namespace"]),
        MetricRule(name="timeouts", message_regex="timeout|timed out"))
    sink = CollectSink()
    agent = Agent(s, sink)
    async with running(agent):
        await wait_until(lambda: len(sink.records) >= m.total_records, 30, "all records shipped")
    assert agent.log_metrics is not None
    got = samples(agent.log_metrics)
    exp = _expected_from_files(m)
    lines = {(dict(lb)["namespace"], dict(lb)["level"]): v for (n, lb), v in got.items()
             if n == "logs_lines_total"}
    assert lines == {k: float(v) for k, v in exp["lines"].items()}
    traced = {dict(lb)["has_trace"]: v for (n, lb), v in got.items() if n == "logs_trace_context_lines_total"}
    assert traced == {k: float(v) for k, v in exp["traced"].items()}
    errors = {dict(lb)["service"]: v for (n, lb), v in got.items() if n == "logs_http_server_errors_total"}
    assert errors == {k: float(v) for k, v in exp["errors"].items() if v} and errors
    for ns, count in exp["dur_count"].items():
        lb = (("kubernetes_namespace", ns),)
        assert got[("logs_request_duration_ms_count", lb)] == count
        assert got[("logs_request_duration_ms_sum", lb)] == pytest.approx(exp["dur_sum"][ns])
        for b in (10, 100, 1000):
            key = ("logs_request_duration_ms_bucket", tuple(sorted([*lb, ("le", f"{b}.0")])))
            assert got[key] == exp["dur_bucket"][(ns, b)]
    assert got.get(("logs_timeouts_total", ()), 0) == exp["timeouts"]["all"]
    assert sum(exp["lines"].values()) == m.total_records
    # the input exercised every rule (else the comparisons above prove little)
    assert exp["dur_count"] and exp["timeouts"]["all"] > 0 and len(traced) == 2
    await asyncio.sleep(0)


@pytest.mark.timeout(60)
async def test_snapshots_shipped_through_a_sink_carry_the_same_values(tmp_path):
    """ship_to = file:DIR: the last snapshot (written at stop) holds exactly the exported values."""
    from pipelines.sinks.file import read_dir

    log = tmp_path / "a.log"
    log.write_text("".join(orjson.dumps({"level": lv, "duration_ms": d, "message": "m"}).decode() + "\n"
                           for lv, d in [("info", 5), ("warn", 50), ("info", 500), ("error", 7)]))
    s = fast_settings(tmp_path, [str(log)])
    out = tmp_path / "metrics"
    s.log_metrics = rules(MetricRule(name="dur", type="histogram", field="duration_ms", buckets=[10, 100]),
                          ship_to=f"file:{out}", ship_interval_secs=3600)
    sink = CollectSink()
    agent = Agent(s, sink)
    async with running(agent):
        await wait_until(lambda: len(sink.records) >= 4, 20, "records shipped")
    assert agent.log_metrics is not None
    exported = samples(agent.log_metrics)
    shipped = [orjson.loads(x) for x in read_dir(out)]
    assert {r["host"]["name"] for r in shipped} == {"testhost"}
    assert all(r["@timestamp"].endswith("Z") for r in shipped)
    for r in shipped:
        m = r["metric"]  # the schema every metric source ships (pipelines.metricrecords)
        labels = tuple(sorted(m["labels"].items()))
        if m["type"] == "counter":
            assert exported[(m["name"], labels)] == m["value"]
        else:
            assert exported[(m["name"] + "_count", labels)] == m["count"] == 4
            assert exported[(m["name"] + "_sum", labels)] == m["sum"] == 562
            assert [(b["le"], b["count"]) for b in m["buckets"]] == [(10, 2), (100, 3)]  # +Inf = count
    names = {r["metric"]["name"] for r in shipped}
    assert names == {"logs_lines_total", "logs_trace_context_lines_total", "logs_dur"}
    assert sum(r["metric"]["value"] for r in shipped if r["metric"]["name"] == "logs_lines_total") == 4


def test_snapshot_records_name_the_worker_process():
    """With worker processes each worker counts the files it reads and ships its own series,
    marked with its index (consumers sum over workers); one process ships no such field."""
    from pipelines.logmetrics import snapshot

    lm = LogMetrics(rules(MetricRule(name="errors", match_field="status", equals="500"), defaults=False))
    lm.observe({"status": 500}, None)
    [one] = [orjson.loads(x) for x in snapshot(lm, "node-a", now=0)]
    assert "worker" not in one and one["metric"]["value"] == 1
    [w] = [orjson.loads(x) for x in snapshot(lm, "node-a", now=0, worker=3)]
    assert w["worker"] == 3 and w["metric"]["value"] == 1 and w["metric"]["name"] == "logs_errors_total"


@pytest.mark.timeout(20)
async def test_a_shipper_whose_sink_could_not_start_starts_it_with_the_next_snapshot():
    """The daemon does not stop for a ship_to sink it cannot start (`started = False`): a snapshot
    while the sink still refuses is counted as failed, the next one starts the sink and ships."""
    from pipelines.errors import FatalSinkError
    from pipelines.logmetrics import MetricShipper

    class Refusing(CollectSink):
        refuse = True
        starts = 0

        async def start(self) -> None:
            self.starts += 1
            if self.refuse:
                raise FatalSinkError("collect", "credentials refused")

    lm = LogMetrics(rules(MetricRule(name="errors", match_field="status", equals="500"), defaults=False))
    lm.observe({"status": 500}, None)
    sink = Refusing()
    shipper = MetricShipper(lm, sink, 3600, "node-a")
    shipper.started = False
    assert not await shipper.ship() and shipper.failed == 1 and not sink.records
    sink.refuse = False
    assert await shipper.ship() and shipper.started and sink.starts == 2
    assert [r["metric"]["name"] for r in sink.records] == ["logs_errors_total"]
