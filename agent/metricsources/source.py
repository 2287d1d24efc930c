"""The metric sources of one agent: Prometheus scrape targets and the host's metrics, shipped
through the same routes, budget, batching and acknowledgements as the logs.

    target task (one per URL) ─► fetch (timeout) ─► parse (thread) ─► records ┐
    host task ─► /proc, /sys in a thread (timeout) ─► records ───────────────┴► route ─► Fanout.offer

* Each target has its own task, so a slow or hung target delays only itself: its scrape ends at
  `timeout_secs` as a failure (`up` 0). Targets are staggered over the interval by a hash of
  their URL, as Prometheus does, so their scrapes do not all land at once.
* A scrape's series become one segment, offered to the fanout without waiting
  (`Fanout.offer`): when the shared budget is full the scrape is skipped and counted
  (`tailship_metric_scrapes_total{result="skipped_memory_full"}`), a gap like a failed scrape,
  never a wait that would hold the logs. Its segment's file key is unique per scrape, so sinks
  that derive ids from (file, offset) keep every scrape and a retried batch overwrites itself.
* Every scrape also gives `up`, `scrape_duration_seconds` and `scrape_samples_scraped` records
  with the target's labels, as Prometheus records them.
* Bounds: `max_samples` and `max_body_bytes` per target, `max_series` per host collection; what
  is past them is cut and counted. Cardinality (series of the last scrape) is reported per target.

Self-metrics are kept as plain numbers per target and served by `SourceStats` (a collector).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.metricsources import host as hostmetrics
from agent.metricsources.exposition import Parsed, SeriesBuilder, parse
from agent.metricsources.scrape import HttpScraper, ScrapeError
from agent.metricsources.settings import HostMetricsSettings, PrometheusScrapeSettings
from agent.metricsources.targets import StaticTargets, Target, TargetProvider, merge
from pipelines.metricrecords import GAUGE, MetricSegment, metric_record, rfc3339_millis
from pipelines.records import Segment
from pipelines.routes import METRICS, FileRoutes

log = logging.getLogger("tailship.metrics_source")

HOST_TARGET = "host"  # the `target` label of the host metrics source
Offer = Callable[[Segment, Callable[[int], None]], Awaitable[bool]]
Route = Callable[[dict[str, Any], str], FileRoutes]  # Router.for_file


@dataclass
class TargetStats:
    source: str                                              # prometheus_scrape | host_metrics
    results: Counter[str] = field(default_factory=Counter)    # scrapes by result
    samples: int = 0          # samples scraped (cut ones too)
    cut_samples: int = 0      # samples left out past max_samples / max_series
    cut_bodies: int = 0       # scrapes whose body was cut at max_body_bytes
    series: int = 0           # series of the last scrape (cardinality)
    up: float = 0.0
    duration: float = 0.0     # seconds of the last scrape
    emitted: int = 0          # records handed to the fanout
    delivered: int = 0        # records every sink acknowledged
    errors: Counter[str] = field(default_factory=Counter)     # host collectors that failed


class SourceStats(Collector):
    """The metric sources' self-metrics, read at scrape time from `TargetStats`."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetStats] = {}

    def of(self, target: str, source: str) -> TargetStats:
        st = self.targets.get(target)
        if st is None:
            st = self.targets[target] = TargetStats(source)
        return st

    def collect(self) -> Iterator[Any]:
        ls = ["source", "target"]
        scrapes = CounterMetricFamily("tailship_metric_scrapes", "Scrapes of metric targets by result "
                                      "(ok, failed, timeout, skipped_memory_full, skipped_busy, error)",
                                      labels=[*ls, "result"])
        samples = CounterMetricFamily("tailship_metric_samples", "Samples scraped per target, by "
                                      "outcome (kept, cut: past max_samples or max_series)",
                                      labels=[*ls, "outcome"])
        bodies = CounterMetricFamily("tailship_metric_bodies_cut", "Scrapes whose body was cut at "
                                     "max_body_bytes", labels=ls)
        series = GaugeMetricFamily("tailship_metric_target_series", "Series in the last scrape of a "
                                   "target (its cardinality)", labels=ls)
        up = GaugeMetricFamily("tailship_metric_target_up", "1 if the last scrape of the target "
                               "succeeded", labels=ls)
        dur = GaugeMetricFamily("tailship_metric_scrape_duration_seconds", "Seconds the last scrape "
                                "of the target took", labels=ls)
        records = CounterMetricFamily("tailship_metric_records", "Metric records per target, by "
                                      "stage (emitted, delivered: acknowledged by every sink)",
                                      labels=[*ls, "stage"])
        errors = CounterMetricFamily("tailship_metric_collector_errors", "Host metric collectors "
                                     "that failed to read", labels=["collector"])
        for name, st in self.targets.items():
            key = [st.source, name]
            for result, n in st.results.items():
                scrapes.add_metric([*key, result], n)
            samples.add_metric([*key, "kept"], st.samples - st.cut_samples)
            samples.add_metric([*key, "cut"], st.cut_samples)
            bodies.add_metric(key, st.cut_bodies)
            series.add_metric(key, st.series)
            up.add_metric(key, st.up)
            dur.add_metric(key, st.duration)
            records.add_metric([*key, "emitted"], st.emitted)
            records.add_metric([*key, "delivered"], st.delivered)
            for collector, n in st.errors.items():
                errors.add_metric([collector], n)
        yield from (scrapes, samples, bodies, series, up, dur, records, errors)

    def describe(self) -> Iterator[Any]:
        return iter(())


class MetricSources:
    """`offer`: `Fanout.offer`; `route`: `Router.for_file` (called with kind METRICS)."""

    def __init__(self, scrape: PrometheusScrapeSettings, hostm: HostMetricsSettings, host_name: str,
                 offer: Offer, route: Route, providers: list[TargetProvider] | None = None) -> None:
        self.scrape_s = scrape
        self.host_s = hostm
        self.host_name = host_name
        self.offer = offer
        self.route = route
        self.stats = SourceStats()
        self.providers: list[TargetProvider] = list(providers or [])
        if scrape.enabled and scrape.urls:
            self.providers.insert(0, StaticTargets(scrape.urls, scrape.job))
        self.http = HttpScraper(scrape)
        # parsing is CPU work: in threads, so the event loop (the files) gets its turns meanwhile
        self._parse_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="metric-parse")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._main: list[asyncio.Task[None]] = []
        self._routes: dict[str, FileRoutes] = {}
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.providers) or self.host_s.enabled

    async def start(self) -> None:
        if self.providers:
            await self.http.start()
            self._main.append(asyncio.create_task(self._follow_targets(), name="metric-targets"))
        if self.host_s.enabled:
            self._main.append(asyncio.create_task(self._host_loop(), name="host-metrics"))

    async def stop(self) -> None:
        tasks = [*self._main, *self._tasks.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main.clear()
        self._tasks.clear()
        await self.http.close()
        self._parse_pool.shutdown(wait=False, cancel_futures=True)

    # -- targets ---------------------------------------------------------------------------------

    async def _follow_targets(self) -> None:
        """One task per target URL; targets that left the providers lose theirs."""
        while True:
            wanted = merge(self.providers)
            for url in self._tasks.keys() - wanted.keys():
                self._tasks.pop(url).cancel()
                self._routes.pop(url, None)
            for url, target in wanted.items():
                if url not in self._tasks:
                    self._tasks[url] = asyncio.create_task(self._target_loop(target), name=f"scrape {url}")
            changes = [asyncio.create_task(p.changed.wait()) for p in self.providers]
            try:
                await asyncio.wait(changes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for c in changes:
                    c.cancel()
            for p in self.providers:
                p.changed.clear()

    async def _target_loop(self, target: Target) -> None:
        self.stats.of(target.name, "prometheus_scrape")  # reported from the start (up 0)
        interval = self.scrape_s.interval_secs
        loop = asyncio.get_running_loop()
        digest = hashlib.blake2b(target.url.encode(), digest_size=8).digest()
        await asyncio.sleep(int.from_bytes(digest, "big") % 1000 / 1000 * interval)
        while True:
            started = loop.time()
            try:
                await self.scrape_once(target)
            except Exception:  # a bug of ours must not end this target's scrapes for good
                self.stats.of(target.name, "prometheus_scrape").results["error"] += 1
                log.exception("metric target %s: scrape failed unexpectedly (retried next round)",
                              target.name)
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    async def scrape_once(self, target: Target) -> bool:
        """Scrape `target` once and offer its records; False when skipped for lack of memory.
        A failed scrape ships only its `up` 0 round, as Prometheus keeps nothing of it."""
        s = self.scrape_s
        st = self.stats.of(target.name, "prometheus_scrape")
        builder = SeriesBuilder(target.labels, s.honor_labels, rfc3339_millis(), self.host_name,
                                target.meta)
        out = self._segment(target.url, target.meta)
        t0 = time.monotonic()
        parsed, result = Parsed(), "ok"
        try:
            async with asyncio.timeout(s.timeout_secs):
                fetched = await self.http.fetch(target.url)
            parsed = await asyncio.get_running_loop().run_in_executor(
                self._parse_pool, parse, fetched.text, fetched.openmetrics, builder, s.max_samples,
                out.add)
            st.cut_bodies += fetched.cut
            if fetched.cut:
                self._warn(target.name, "cut", f"body longer than max_body_bytes "
                           f"({s.max_body_bytes}); cut and counted")
        except TimeoutError:
            result = "timeout"
            self._warn(target.name, result, f"no answer within timeout_secs ({s.timeout_secs:g})")
        except (ScrapeError, OSError, ValueError) as exc:
            result = "failed"
            self._warn(target.name, result, str(exc))
            out, parsed = self._segment(target.url, target.meta), Parsed()  # nothing of it is kept
        else:
            self._recovered(target.name)
        st.duration = time.monotonic() - t0
        st.up = 1.0 if result == "ok" else 0.0
        st.samples += parsed.samples
        st.cut_samples += parsed.cut
        if parsed.cut:
            self._warn(target.name, "limit", f"{parsed.samples} samples exposed, more than "
                       f"max_samples ({s.max_samples}): {parsed.cut} cut and counted")
        st.series = parsed.series
        for name, value in (("up", st.up), ("scrape_duration_seconds", st.duration),
                            ("scrape_samples_scraped", float(parsed.samples))):
            out.add(builder.record(name, GAUGE, {}, None, value=value))
        return await self._emit(target.url, out, st, result)

    def _recovered(self, target: str) -> None:
        for what in ("failed", "timeout"):
            if f"{target}\0{what}" in self._warned:
                self._warned.discard(f"{target}\0{what}")
                log.info("metric target %s: answering again", target)

    def _warn(self, target: str, what: str, message: str) -> None:
        """Log a target's trouble once until it recovers (counted either way)."""
        key = f"{target}\0{what}"
        if key not in self._warned:
            self._warned.add(key)
            log.warning("metric target %s: %s", target, message)

    # -- host ------------------------------------------------------------------------------------

    async def _host_loop(self) -> None:
        self.stats.of(HOST_TARGET, "host_metrics")
        loop = asyncio.get_running_loop()
        paths = hostmetrics.HostPaths.of(self.host_s)
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="host-metrics")
        busy: asyncio.Future[Any] | None = None
        try:
            while True:
                started = loop.time()
                try:
                    busy = await self.collect_host(paths, pool, busy)
                except Exception:  # as for targets: counted, logged, tried again next round
                    self.stats.of(HOST_TARGET, "host_metrics").results["error"] += 1
                    log.exception("host metrics: collection failed unexpectedly (retried next round)")
                await asyncio.sleep(max(0.0, started + self.host_s.interval_secs - loop.time()))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    async def collect_host(self, paths: hostmetrics.HostPaths, pool: concurrent.futures.Executor,
                           busy: asyncio.Future[Any] | None = None) -> asyncio.Future[Any] | None:
        """One collection in `pool`; returns the collection still running after its timeout
        (the next one is skipped while it runs: a hung filesystem holds one thread, not more)."""
        st = self.stats.of(HOST_TARGET, "host_metrics")
        if busy is not None and not busy.done():
            st.results["skipped_busy"] += 1
            return busy
        ts = rfc3339_millis()
        t0 = time.monotonic()
        fut = asyncio.get_running_loop().run_in_executor(pool, hostmetrics.collect, paths,
                                                         self.host_s.collectors)
        try:
            samples, errors = await asyncio.wait_for(asyncio.shield(fut), self.host_s.timeout_secs)
        except TimeoutError:
            st.results["timeout"] += 1
            self._warn(HOST_TARGET, "timeout", f"host metrics not collected within timeout_secs "
                       f"({self.host_s.timeout_secs:g}): a hung filesystem? skipped until it returns")
            return fut
        st.duration = time.monotonic() - t0
        for name, why in errors.items():
            st.errors[name] += 1
            self._warn(HOST_TARGET, name, f"collector {name}: {why}")
        st.samples += len(samples)
        keep = self.host_s.max_series
        st.cut_samples += max(0, len(samples) - keep)
        st.series = min(len(samples), keep)
        st.up = 1.0
        out = self._segment(HOST_TARGET, {})
        for name, type_, labels, v in samples[:keep]:
            out.add(metric_record(ts, name, type_, labels, value=v, host=self.host_name))
        await self._emit(HOST_TARGET, out, st, "ok")
        return None

    # -- into the pipeline -------------------------------------------------------------------------

    def _segment(self, key: str, meta: dict[str, Any]) -> MetricSegment:
        """An empty segment for `key`'s records, routed as the target's fields decide."""
        routes = self._routes.get(key)
        if routes is None:
            fields = {**meta, "host": {"name": self.host_name}} if self.host_name else dict(meta)
            routes = self._routes[key] = self.route(fields, METRICS)
        return MetricSegment(key, meta, routes.mask, routes.per_record)

    async def _emit(self, key: str, out: MetricSegment, st: TargetStats, result: str) -> bool:
        seg = out.done()
        n = len(seg)

        def delivered(nrecords: int) -> None:
            st.delivered += nrecords

        if not await self.offer(seg, delivered):
            st.results["skipped_memory_full"] += 1
            self._warn(key, "memory", "the in-flight budget (batch.memory_limit_bytes) is full: "
                       "scrape skipped and counted (a gap), the logs go on")
            return False
        st.results[result] += 1
        st.emitted += n
        with contextlib.suppress(KeyError):
            self._warned.remove(f"{key}\0memory")
        return True
