"""Metric sources inside a running agent: a real exporter over HTTP, the agent's own /metrics,
a target that hangs, host metrics; routed apart from the logs, and skipped (not waited for) when
the memory budget is full."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from agent.metricsources.settings import HostMetricsSettings, PrometheusScrapeSettings
from agent.metricsources.source import TargetStats
from agent.runtime import Agent
from pipelines.routes import RouteSettings, RoutingSettings
from tests.agent.metricsources.exporter import exporter, hanging_target
from tests.conftest import CollectSink, fast_settings, free_port, running, wait_until

pytestmark = pytest.mark.timeout(60)
SERIES = 50


def named(name: str) -> CollectSink:
    sink = CollectSink()
    sink.name = name  # type: ignore[misc]
    return sink


def scrape_settings(urls: list[str], **kw) -> PrometheusScrapeSettings:
    # faster than the validated minimum (1 s): the dataclass is built directly
    return PrometheusScrapeSettings(**{"enabled": True, "urls": urls, "job": "test", "interval_secs": 0.3,
                                       "timeout_secs": 0.3, **kw})


def metric_records(sink: CollectSink) -> list[dict]:
    return [r for r in sink.records if "metric" in r]


def scrapes_of(records: list[dict], instance: str) -> dict[int, list[dict]]:
    """The exporter's records by the number of the scrape they came from (by @timestamp)."""
    by_ts: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["metric"]["labels"].get("instance") == instance:
            by_ts[r["@timestamp"]].append(r["metric"])
    out = {}
    for ms in by_ts.values():
        seq = [m["value"] for m in ms if m["name"] == "exporter_scrape_seq"]
        if seq:
            out[int(seq[0])] = ms
    return out


def stats(agent: Agent, target: str):
    """A target's numbers (all zero before its task started)."""
    assert agent.metric_sources is not None
    return agent.metric_sources.stats.targets.get(target) or TargetStats("not started")


async def test_scrapes_arrive_whole_and_a_hanging_target_delays_no_other(tmp_path):
    """An exporter, a target that never answers and the agent's own /metrics, scraped together:
    the exporter's scrapes go on while the hanging target's first scrape is still waiting
    (timeout_secs is long here), every one of them arrives whole (each work counter = seq * i,
    the histogram with seq observations) and in sequence without gaps; the agent's own series
    come back through its pipeline."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    port = free_port()
    s = fast_settings(tmp_path, [str(log)])
    s.metrics = dataclasses.replace(s.metrics, listen=f"127.0.0.1:{port}")
    own = f"http://127.0.0.1:{port}/metrics"
    sink = CollectSink()
    with exporter(SERIES) as url, hanging_target() as hang:
        s.prometheus_scrape = scrape_settings([url, hang, own], timeout_secs=60)
        async with running(Agent(s, sink)) as agent:
            await wait_until(lambda: stats(agent, url).results["ok"] >= 8, 30, "8 scrapes of the exporter")
            # the hanging target's first scrape has not ended: a target that waited for it
            # (one task for all) could not have been scraped 8 times
            assert sum(stats(agent, hang).results.values()) == 0
            await wait_until(lambda: len(sink.records) >= 100, what="the log lines")
        ex, me = stats(agent, url), stats(agent, own)
    records = metric_records(sink)
    instance = url.split("/")[2]
    scrapes = scrapes_of(records, instance)
    print(f"exporter scrapes ok={ex.results['ok']} own ok={me.results['ok']} records={len(records)}")
    assert sorted(scrapes) == list(range(1, max(scrapes) + 1)), "a scrape is missing"
    assert len(scrapes) == ex.results["ok"]
    for seq, ms in scrapes.items():
        work = {m["labels"]["i"]: m["value"] for m in ms if m["name"] == "exporter_work_total"}
        assert work == {str(i): float(seq * i) for i in range(SERIES)}, seq
        [hist] = [m for m in ms if m["name"] == "exporter_latency_seconds"]
        assert hist["count"] == seq and hist["buckets"][1] == {"le": 1.0, "count": float(seq)}
        [up] = [m for m in ms if m["name"] == "up"]
        assert up["value"] == 1.0 and up["labels"] == {"job": "test", "instance": instance}
    assert ex.up == 1.0 and ex.series == SERIES + 2
    own_lines = [r for r in records if r["metric"]["name"] == "tailship_input_lines_total"]
    assert own_lines and own_lines[-1]["metric"]["labels"]["instance"] == f"127.0.0.1:{port}"
    assert me.results["ok"] >= 1
    assert [r["message"] for r in sink.records if "message" in r] == [f"line {i}" for i in range(100)]
    assert ex.delivered == ex.emitted  # every record handed over was acknowledged by the sink


async def test_a_target_that_times_out_is_down_each_round(tmp_path):
    """A target that never answers: each round ends at its timeout as `up` 0 (with its
    scrape_duration_seconds and scrape_samples_scraped 0), counted as a timeout."""
    log = tmp_path / "app.log"
    log.write_text("a\n")
    s = fast_settings(tmp_path, [str(log)])
    sink = CollectSink()
    with hanging_target() as hang:
        s.prometheus_scrape = scrape_settings([hang])
        async with running(Agent(s, sink)) as agent:
            await wait_until(lambda: stats(agent, hang).results["timeout"] >= 3, 20, "3 timeouts")
        st = stats(agent, hang)
    ups = [r["metric"] for r in metric_records(sink) if r["metric"]["name"] == "up"]
    assert len(ups) == st.results["timeout"] and {m["value"] for m in ups} == {0.0}
    samples = [r["metric"]["value"] for r in metric_records(sink)
               if r["metric"]["name"] == "scrape_samples_scraped"]
    assert set(samples) == {0.0} and st.up == 0.0 and st.series == 0
    assert set(st.results) == {"timeout"}


async def test_routes_tell_logs_from_metrics(tmp_path):
    """A `kind = "metrics"` route sends metric records to their own sink; the logs, unmatched,
    go to theirs: neither sink gets a record of the other kind."""
    log = tmp_path / "app.log"
    log.write_text("".join(f'{{"msg": "m{i}", "metric": {{"name": "not-a-metric"}}}}\n' for i in range(50)))
    s = fast_settings(tmp_path, [str(log)])
    s.routing = RoutingSettings(unmatched="logs", routes=[
        RouteSettings(name="metrics", sinks=["metrics"], kind="metrics", all=True, final=True)])
    with exporter(3) as url:
        s.prometheus_scrape = scrape_settings([url])
        logs, metrics = named("logs"), named("metrics")
        async with running(Agent(s, {"logs": logs, "metrics": metrics})):
            await wait_until(lambda: len(logs.records) == 50 and len(metrics.records) >= 10, 20,
                             "logs and metrics")
    assert all("log" in r and r["metric"] == {"name": "not-a-metric"} for r in logs.records)
    assert all("log" not in r and r["metric"]["type"] for r in metrics.records)


async def test_a_full_memory_budget_skips_scrapes_and_never_holds_the_logs(tmp_path):
    """The sink is down and the logs fill the in-flight budget: scrapes are skipped and counted
    (a gap), nothing waits on them; once the sink is back every log line arrives and scrapes
    are shipped again."""
    log = tmp_path / "app.log"
    line = "x" * 1000
    log.write_text("".join(f"{i} {line}\n" for i in range(3000)))  # 3 MB: past a 1 MiB budget
    s = fast_settings(tmp_path, [str(log)])
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_bytes=64 << 10)
    sink = CollectSink()
    sink.down = True
    with exporter(3) as url:
        s.prometheus_scrape = scrape_settings([url])
        async with running(Agent(s, sink)) as agent:
            await wait_until(lambda: stats(agent, url).results["skipped_memory_full"] >= 3, 20,
                             "skipped scrapes")
            text = generate_latest(agent.metrics.registry).decode()
            assert 'result="skipped_memory_full"' in text
            ok_before = stats(agent, url).results["ok"]
            sink.down = False
            await wait_until(lambda: sum("message" in r for r in sink.records) == 3000, 30, "every line")
            await wait_until(lambda: stats(agent, url).results["ok"] > ok_before + 2, 20, "scrapes again")
    msgs = [r["message"] for r in sink.records if "message" in r]
    assert [int(m.split()[0]) for m in msgs] == list(range(3000))


async def test_host_metrics_through_the_pipeline(tmp_path):
    """Host metrics of this machine arrive as records with host.name, node_exporter names, one
    record per series, as many as the source reports."""
    log = tmp_path / "app.log"
    log.write_text("a\n")
    s = fast_settings(tmp_path, [str(log)])
    s.host_metrics = HostMetricsSettings(enabled=True, interval_secs=0.3, timeout_secs=0.3)
    sink = CollectSink()
    async with running(Agent(s, sink)) as agent:
        await wait_until(lambda: stats(agent, "host").delivered >= 2 * stats(agent, "host").series > 0,
                         20, "two collections")
        st = stats(agent, "host")
    records = metric_records(sink)
    assert {r["host"]["name"] for r in records} == {"testhost"}
    names = {r["metric"]["name"] for r in records}
    assert {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_load1",
            "node_network_receive_bytes_total", "node_filesystem_size_bytes"} <= names
    per_collection = defaultdict(int)
    for r in records:
        per_collection[r["@timestamp"]] += 1
    assert set(per_collection.values()) == {st.series}
    assert st.delivered == len(records)


ROUND = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
BIG = "# TYPE g gauge\n" + "".join(f'g{{i="{i}"}} {i}\n' for i in range(500))  # 500 samples, ~7 kB


@contextlib.asynccontextmanager
async def http_server(routes: dict[str, tuple[int, str]], port: int = 0) -> AsyncIterator[str]:
    """An aiohttp server answering each path with (status, text); yields its base URL."""
    from aiohttp import web

    def answer(status: int, text: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=status, text=text)
        return handler

    app = web.Application()
    for path, (status, text) in routes.items():
        app.router.add_get(path, answer(status, text))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_errors_and_limits_are_counted_and_ship_only_the_round(tmp_path):
    """A target answering 500 and one answering text that is no exposition are down: `up` 0
    and nothing else of theirs is shipped. One exposing more samples than max_samples ships the
    first ones; the rest are cut and counted."""
    log = tmp_path / "app.log"
    log.write_text("a\n")
    s = fast_settings(tmp_path, [str(log)])
    sink = CollectSink()
    async with http_server({"/err": (500, "boom"), "/bad": (200, 'x{a="1" 2\n'),
                            "/many": (200, BIG)}) as base:
        err, bad, many = f"{base}/err", f"{base}/bad", f"{base}/many"
        s.prometheus_scrape = scrape_settings([err, bad, many], max_samples=200)
        async with running(Agent(s, sink)) as agent:
            await wait_until(lambda: all(stats(agent, u).results["failed" if u != many else "ok"] >= 2
                                         for u in (err, bad, many)), 20, "two rounds each")
            text = generate_latest(agent.metrics.registry).decode()
            st = {u: stats(agent, u) for u in (err, bad, many)}
    shipped = defaultdict(list)
    for r in metric_records(sink):
        shipped[r["metric"]["labels"]["instance"] + r["metric"]["name"]].append(r["metric"]["value"])
    inst = base.removeprefix("http://")
    assert {k for k in shipped if not k.startswith(inst + "g")} == {inst + n for n in ROUND}
    assert len(shipped[inst + "g"]) == 200 * st[many].results["ok"]
    assert st[many].cut_samples == 300 * st[many].results["ok"] and st[many].series == 200
    assert st[err].up == st[bad].up == 0.0 and st[many].up == 1.0
    assert st[err].series == st[bad].series == 0
    assert (f'tailship_metric_samples_total{{outcome="cut",source="prometheus_scrape",target="{many}"}} '
            f'{float(st[many].cut_samples)}') in text


async def test_a_body_past_max_body_bytes_is_cut_at_a_whole_line(tmp_path):
    """The first samples of a body cut at max_body_bytes ship (none broken), the cut is counted."""
    log = tmp_path / "app.log"
    log.write_text("a\n")
    s = fast_settings(tmp_path, [str(log)])
    sink = CollectSink()
    async with http_server({"/many": (200, BIG)}) as base:
        s.prometheus_scrape = scrape_settings([f"{base}/many"], max_body_bytes=1024)
        async with running(Agent(s, sink)) as agent:
            await wait_until(lambda: stats(agent, f"{base}/many").cut_bodies >= 1, 20, "a cut body")
            st = stats(agent, f"{base}/many")
    first_ts = metric_records(sink)[0]["@timestamp"]
    first = [r["metric"] for r in metric_records(sink)
             if r["@timestamp"] == first_ts and r["metric"]["name"] == "g"]
    assert 0 < len(first) < 100 and st.up == 1.0
    assert [(m["labels"]["i"], m["value"]) for m in first] == [(str(i), float(i)) for i in range(len(first))]
    text = BIG.encode()[:1024]
    assert len(first) == text[:text.rfind(b"\n")].count(b"\ng{")  # every whole line, no more


async def test_an_unexpected_error_is_counted_and_the_target_scraped_again(tmp_path, monkeypatch):
    """A bug of ours in one scrape (here: injected) is logged and counted as `error`; the
    target's next rounds go on."""
    from agent.metricsources.source import MetricSources

    real = MetricSources.scrape_once
    calls = 0

    async def flaky(self, target):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return await real(self, target)

    monkeypatch.setattr(MetricSources, "scrape_once", flaky)
    log = tmp_path / "app.log"
    log.write_text("a\n")
    s = fast_settings(tmp_path, [str(log)])
    with exporter(2) as url:
        s.prometheus_scrape = scrape_settings([url])
        async with running(Agent(s, CollectSink())) as agent:
            await wait_until(lambda: stats(agent, url).results["ok"] >= 2, 20, "scrapes after the error")
    assert stats(agent, url).results["error"] == 1
