"""Metrics derived from log records: counters and histograms computed in the pipeline.

Rules (`[[log_metrics.rules]]`) are compiled once into small closures. Each record is offered
to every rule right before it is encoded, as the dict the chain already holds (no extra parse).
A rule that does not match costs a dict lookup: its field condition is tested first, and a
message regex only runs when the rule has one and the field condition held.

Series live in plain dicts keyed by label-value tuples (a prometheus_client `labels()` call per
record would cost more than the rest of the rule), and are exported at scrape time by a
collector. Each rule holds at most `max_series` label sets; new ones beyond that are folded into
one series whose label values are all `__overflow__`, counted by `tailship_log_metrics_overflow_total`.
A histogram rule whose field is missing or not a number counts the record in
`tailship_log_metrics_skipped_total{reason}` instead of raising.

Hostile values: a pod decides what its records hold, so every label value taken from a record is
cut to `max_label_value_bytes` (UTF-8), ending in `...[cut]` (counted by
`tailship_log_metrics_cut_total{metric}`), and the guard counts bytes as well as series: the label
sets of all rules together (their strings as Python holds them, plus the measured cost of a series)
stay within `max_bytes`; a new label set past it is folded into `__overflow__` too (reason
`max_bytes`). `nbytes` is that accounted figure, exported with the other memory figures
(`tailship_queue_bytes{stage="log_metrics"}`). Worst case per worker: `max_bytes` plus one
`__overflow__` series per rule (before this bound, 400 lines with 256 KiB levels kept 200 MiB).

Built-in rules (on unless `defaults = false`): `lines_total{namespace, level}` with the level
normalized from `level`, `severity`, `lvl` or `log.level`, and `trace_context_lines_total{has_trace}`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipelines.backoff import Backoff, send_with_retry
from pipelines.errors import SinkError
from pipelines.fields import as_text, getter
from pipelines.logmetrics_settings import LogMetricsSettings, MetricRule
from pipelines.metricrecords import COUNTER, HISTOGRAM, MetricSegment, encode, metric_record, rfc3339_millis
from pipelines.records import Batch
from pipelines.sinks.base import Sink

log = logging.getLogger("tailship.log_metrics")
Observer = Callable[[dict[str, Any], "str | None"], None]

OVERFLOW = "__overflow__"
MISSING = ""  # label value of a record without the labelled field
CUT_MARK = "...[cut]"  # ends a label value cut at max_label_value_bytes
# What one series costs beyond its label strings: the key tuple (56 bytes for two labels), its
# dict slot (~30, amortized over the table's growth) and the count (28): ~85 measured with
# tracemalloc over 5000 counter series, rounded up; a histogram adds its list and a float per
# slot. tests/pipelines/test_logmetrics_bounds.py checks the accounted bytes cover the traced ones.
SERIES_BYTES = 128
HIST_SERIES_BYTES = 56  # a histogram's list object
BUCKET_BYTES = 32  # a list slot (8) and its float (24)
LEVEL_CACHE = 1000  # raw level strings remembered with their normalized form
_LEVEL_KEYS = ("level", "severity", "lvl")
_LEVELS = {"warn": "warning", "err": "error", "eror": "error", "dbug": "debug", "dbg": "debug",
           "information": "info", "informational": "info", "notice": "info", "trce": "trace",
           "crit": "critical", "alert": "critical", "fatal": "fatal", "panic": "fatal", "emerg": "fatal"}


def _label_text(v: Any) -> str:
    return as_text(v, MISSING)


def _message(rec: dict[str, Any]) -> str:
    """The record's message: `message`, else `msg` (JSON loggers use both), else ""."""
    m = rec.get("message")
    if type(m) is str:
        return m
    m = rec.get("msg")
    return m if type(m) is str else ""


_NUMERIC = {10: "trace", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "fatal"}  # pino/bunyan


def normalize_level(rec: dict[str, Any]) -> str:
    for k in _LEVEL_KEYS:
        v = rec.get(k)
        if type(v) is str and v:
            low = v.lower()
            return _LEVELS.get(low, low)
        if type(v) is int and v in _NUMERIC:
            return _NUMERIC[v]
    log = rec.get("log")
    v = log.get("level") if type(log) is dict else rec.get("log.level")
    if type(v) is str and v:
        low = v.lower()
        return _LEVELS.get(low, low)
    return "unknown"


class Series:
    """One rule's values by label set, bounded."""

    def __init__(self, name: str, help_text: str, labels: list[str], max_series: int,
                 buckets: list[float] | None, stats: LogMetrics) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.max_series = max_series
        self.buckets = buckets
        self.stats = stats
        self.counts: dict[tuple[str, ...], int] = {}
        self.hists: dict[tuple[str, ...], list[float]] = {}  # per bucket counts..., +Inf count, sum
        self._overflow = (OVERFLOW,) * len(labels)

    def cost(self, values: tuple[str, ...]) -> int:
        """Accounted bytes of a new series with these label values."""
        n = SERIES_BYTES + sum(map(sys.getsizeof, values))
        if self.buckets is not None:
            n += HIST_SERIES_BYTES + BUCKET_BYTES * (len(self.buckets) + 2)
        return n

    def key(self, values: tuple[str, ...], table: dict[tuple[str, ...], Any]) -> tuple[str, ...]:
        """`values`, or the overflow key when a new series would pass max_series or max_bytes."""
        if values in table:
            return values
        stats = self.stats
        size = self.cost(values)
        if len(table) < self.max_series and stats.nbytes + size <= stats.max_bytes:
            stats.nbytes += size
            return values
        why = (self.name, "max_series" if len(table) >= self.max_series else "max_bytes")
        stats.overflowed[why] = stats.overflowed.get(why, 0) + 1
        if self._overflow not in table:  # one per rule, beyond max_bytes (the documented slack)
            stats.nbytes += self.cost(self._overflow)
        return self._overflow

    def inc(self, values: tuple[str, ...]) -> None:
        counts = self.counts
        if values not in counts:
            values = self.key(values, counts)
        counts[values] = counts.get(values, 0) + 1

    def observe(self, values: tuple[str, ...], x: float) -> None:
        hists = self.hists
        h = hists.get(values)
        if h is None:
            values = self.key(values, hists)
            h = hists.get(values)
            if h is None:
                assert self.buckets is not None
                h = hists[values] = [0.0] * (len(self.buckets) + 2)
        assert self.buckets is not None
        h[bisect.bisect_left(self.buckets, x)] += 1  # le semantics: x <= bound
        h[-1] += x

    def families(self) -> Iterator[Any]:
        if self.buckets is None:
            fam = CounterMetricFamily(self.name, self.help, labels=self.labels)
            for values, n in self.counts.items():
                fam.add_metric(list(values), n)
            yield fam
            return
        hfam = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for values, h in self.hists.items():
            acc = 0.0
            cumulative = []
            for bound, c in zip([*self.buckets, math.inf], h[:-1], strict=True):
                acc += c
                cumulative.append((floatToGoString(bound), acc))
            hfam.add_metric(list(values), cumulative, sum_value=h[-1])
        yield hfam


class LogMetrics(Collector):
    """Compiled rules and their series; `observe(rec, trace_id)` is the per-record entry point
    (`trace_id`: the normalized id the chain found, or None)."""

    def __init__(self, settings: LogMetricsSettings, host_name: str = "") -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.max_bytes = settings.max_bytes
        self.nbytes = 0  # accounted bytes of every series' labels and of the level cache
        self.overflowed: dict[tuple[str, str], int] = {}  # (rule, reason) → records
        self.cut: dict[str, int] = {}  # rule → label values cut
        self.skipped: dict[tuple[str, str], int] = {}  # (rule, reason) → records
        self.series: list[Series] = []
        self._observers: list[Observer] = []
        self.host_label = host_name if settings.host_label else None
        if settings.defaults:
            self._defaults()
        for rule in settings.rules:
            self._compile(rule)
        observers = tuple(self._observers)

        def observe(rec: dict[str, Any], tid: str | None) -> None:
            for fn in observers:
                fn(rec, tid)

        # one rule (the defaults alone, typically): no loop in between
        self.observe: Observer = observers[0] if len(observers) == 1 else observe

    def _name(self, name: str, counter: bool) -> str:
        full = self.prefix + name
        return full if not counter or full.endswith("_total") else full + "_total"

    def _labels(self, names: list[str]) -> list[str]:
        return [*names, "host"] if self.host_label is not None else names

    def _host(self) -> tuple[str, ...]:
        return (self.host_label,) if self.host_label is not None else ()

    def _bounder(self, name: str) -> Callable[[str], str]:
        """The label values of rule `name`, cut to max_label_value_bytes (and counted)."""
        limit = self.settings.max_label_value_bytes
        keep = limit - len(CUT_MARK)
        cut = self.cut

        def bound(v: str) -> str:
            if len(v) <= limit and v.isascii():  # both O(1): the usual case costs nothing more
                return v
            b = v.encode("utf-8", "surrogatepass")
            if len(b) <= limit:
                return v
            cut[name] = cut.get(name, 0) + 1
            return b[:keep].decode("utf-8", "ignore") + CUT_MARK  # "ignore": a split character
        return bound

    def _defaults(self) -> None:
        host = self._host()
        lines = Series(self._name("lines", True), "Log lines by namespace and normalized level",
                       self._labels(["namespace", "level"]), 1000, None, self)
        traced = Series(self._name("trace_context_lines", True),
                        "Log lines with and without trace context", self._labels(["has_trace"]),
                        10, None, self)
        self.series += [lines, traced]
        lcounts, tcounts = lines.counts, traced.counts
        yes, no = ("true", *host), ("false", *host)
        tcounts[yes] = tcounts[no] = 0
        levels: dict[str, str] = {}  # raw value → normalized and bounded (see remember)
        bound = self._bounder(lines.name)
        limit = self.settings.max_label_value_bytes

        def remember(raw: str, level: str) -> None:
            """Cache a short raw level (a long one is cut anew each time: never kept whole)."""
            size = sys.getsizeof(raw) + sys.getsizeof(level) + SERIES_BYTES
            if len(levels) < LEVEL_CACHE and len(raw) <= limit and self.nbytes + size <= self.max_bytes:
                levels[raw] = level
                self.nbytes += size

        def defaults(rec: dict[str, Any], tid: str | None) -> None:  # both built-ins: the hot path
            k8s = rec.get("kubernetes")
            ns = k8s.get("namespace", MISSING) if type(k8s) is dict else MISSING
            if type(ns) is not str or len(ns) > limit or not ns.isascii():  # an app's own value
                ns = bound(_label_text(ns))
            raw = rec.get("level") or rec.get("severity") or rec.get("lvl")
            if type(raw) is str:
                level = levels.get(raw)
                if level is None:
                    level = bound(normalize_level({"level": bound(raw)}))
                    remember(raw, level)
            else:
                level = bound(normalize_level(rec))
            key = (ns, level, *host) if host else (ns, level)
            n = lcounts.get(key)
            if n is None:
                lines.inc(key)
            else:
                lcounts[key] = n + 1
            tcounts[no if tid is None else yes] += 1

        self._observers.append(defaults)

    def _compile(self, rule: MetricRule) -> None:
        counter = rule.type == "counter"
        series = Series(self._name(rule.name, counter), rule.help or f"derived from logs: {rule.name}",
                        self._labels([p.replace(".", "_") for p in rule.labels]), rule.max_series,
                        None if counter else sorted(rule.buckets), self)
        self.series.append(series)
        labels_of = _labels_fn(rule.labels, self._host(), self._bounder(series.name))
        match = _matcher(rule)
        field = getter(rule.field) if rule.field else None
        skipped = self.skipped
        name = series.name
        counts = series.counts

        if counter:
            def observe(rec: dict[str, Any], tid: str | None) -> None:
                if match is None or match(rec):
                    key = labels_of(rec)
                    n = counts.get(key)
                    if n is None:
                        series.inc(key)
                    else:
                        counts[key] = n + 1
        else:
            assert field is not None

            def observe(rec: dict[str, Any], tid: str | None) -> None:
                if match is not None and not match(rec):
                    return
                raw = v = field(rec)
                if type(v) is str:
                    try:
                        v = float(v)
                    except ValueError:
                        v = None
                if type(v) not in (int, float) or v != v:  # missing, not a number, NaN
                    reason = "missing_field" if raw is None else "not_a_number"
                    skipped[(name, reason)] = skipped.get((name, reason), 0) + 1
                    return
                series.observe(labels_of(rec), float(v))

        self._observers.append(observe)

    # prometheus_client collector
    def collect(self) -> Iterator[Any]:
        for s in self.series:
            yield from s.families()
        over = CounterMetricFamily("tailship_log_metrics_overflow", "Records folded into the "
                                   "__overflow__ series of a log metric past its max_series "
                                   "(max_series) or its share of log_metrics.max_bytes (max_bytes)",
                                   labels=["metric", "reason"])
        for (name, reason), n in self.overflowed.items():
            over.add_metric([name, reason], n)
        yield over
        cut = CounterMetricFamily("tailship_log_metrics_cut", "Label values taken from records cut "
                                  "at log_metrics.max_label_value_bytes", labels=["metric"])
        for name, n in self.cut.items():
            cut.add_metric([name], n)
        yield cut
        skip = CounterMetricFamily("tailship_log_metrics_skipped", "Records a histogram rule matched "
                                   "but could not observe", labels=["metric", "reason"])
        for (name, reason), n in self.skipped.items():
            skip.add_metric([name, reason], n)
        yield skip

    def describe(self) -> Iterator[Any]:
        return iter(())  # families are only known at scrape time


def _labels_fn(paths: list[str], host: tuple[str, ...],
               bound: Callable[[str], str]) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    """Label values of a record as a tuple, each bounded, specialized for the common small cases."""
    getters = [getter(p) for p in paths]
    if not getters:
        return lambda rec: host
    if len(getters) == 1 and not host:
        g0 = getters[0]
        return lambda rec: (bound(_label_text(g0(rec))),)
    return lambda rec: (*[bound(_label_text(g(rec))) for g in getters], *host)


def _matcher(rule: MetricRule) -> Callable[[dict[str, Any]], bool] | None:
    """The rule's condition, cheapest test first; None when it matches every record."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    if rule.match_field:
        key = rule.match_field
        simple = "." not in key
        get = getter(key)
        if rule.exists:
            tests.append((lambda rec: key in rec) if simple else (lambda rec: get(rec) is not None))
        if rule.equals != "":
            want = rule.equals
            if simple:
                def equals(rec: dict[str, Any]) -> bool:  # a dict lookup when the key is absent
                    v = rec.get(key)
                    return v is not None and (v if type(v) is str else _label_text(v)) == want
                tests.append(equals)
            else:
                tests.append(lambda rec: _label_text(get(rec)) == want)
        if rule.one_of:
            allowed = frozenset(rule.one_of)
            if simple:
                def one_of(rec: dict[str, Any]) -> bool:
                    v = rec.get(key)
                    return v is not None and (v if type(v) is str else _label_text(v)) in allowed
                tests.append(one_of)
            else:
                tests.append(lambda rec: _label_text(get(rec)) in allowed)
    if rule.message_regex:
        rx = re.compile(rule.message_regex)
        tests.append(lambda rec: rx.search(_message(rec)) is not None)
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    return lambda rec: all(t(rec) for t in tests)


def snapshot_records(lm: LogMetrics, host: str, now: float | None = None,
                     worker: int | None = None) -> Iterator[dict[str, Any]]:
    """Every derived series as one metric record (`pipelines.metricrecords`, the schema of every
    metric source): counters with `metric.value`, histograms with `metric.buckets`, `.sum` and
    `.count`; with worker processes, `worker` (the index of the process that counted: each counts
    the files it reads, so sum over workers)."""
    extra = {} if worker is None else {"worker": worker}
    ts = rfc3339_millis(now)
    for s in lm.series:
        if s.buckets is None:
            for values, n in s.counts.items():
                yield metric_record(ts, s.name, COUNTER, dict(zip(s.labels, values, strict=True)),
                                    value=n, host=host, extra=extra)
            continue
        for values, h in s.hists.items():
            acc, buckets = 0.0, []
            for bound, c in zip([*s.buckets, math.inf], h[:-1], strict=True):
                acc += c
                buckets.append((bound, acc))
            yield metric_record(ts, s.name, HISTOGRAM, dict(zip(s.labels, values, strict=True)),
                                buckets=buckets, sum_=h[-1], count=acc, host=host, extra=extra)


def snapshot(lm: LogMetrics, host: str, now: float | None = None, worker: int | None = None) -> list[bytes]:
    """`snapshot_records`, encoded."""
    return [encode(r) for r in snapshot_records(lm, host, now, worker)]


class MetricShipper:
    """Ships a snapshot of the derived metrics every `interval` seconds (and a last one at stop)
    through a sink of its own (`log_metrics.ship_to`). Values are cumulative, so a snapshot that
    cannot be delivered is not retried forever: the next one carries the totals. A sink that could
    not be started (`started` False: the daemon does not stop for it) is started by the next
    snapshot."""

    def __init__(self, lm: LogMetrics, sink: Sink, interval: float, host: str,
                 attempts: int = 5, worker: int | None = None) -> None:
        self.lm, self.sink, self.interval, self.host = lm, sink, interval, host
        self.worker = worker
        self.attempts = attempts
        self.shipped = 0   # snapshots delivered
        self.failed = 0    # snapshots given up on
        self.started = True  # set False by the agent when the sink's start failed
        self._seq = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.ship()

    async def ship(self) -> bool:
        out = MetricSegment(f"log_metrics:{self.host}", {})
        for rec in snapshot_records(self.lm, self.host, worker=self.worker):
            out.add(rec)
        if not len(out):
            return True
        self._seq += 1
        seg = out.done()
        batch = Batch(seq=self._seq)
        batch.add(seg)
        try:
            if not self.started:
                await self.sink.start()
                self.started = True
            await send_with_retry(lambda: self.sink.send(batch), Backoff(0.5, 10.0, 1.0, 1.0),
                                  lambda exc, attempt: None, self.attempts)
            self.shipped += 1
            return True
        except SinkError as exc:
            log.warning("log metrics snapshot not shipped: %s", exc)
        self.failed += 1
        return False
