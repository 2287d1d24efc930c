"""Self-metrics, one registry per agent (tests run several agents in one process).

Per-line work never touches these: tailers count per chunk, the sender per batch, and the chain
reports rare events (truncations, malformed lines, ...) through `event`, which both counts and
keeps a tally for the run summary. Values that are cheaper to read than to maintain (unread bytes
per file, queue bytes, checkpoint age, dead letters) are computed at scrape time by `_Live`.
docs/metrics.md lists every metric with its meaning.
"""

from __future__ import annotations

import os
import platform
from collections import Counter as _Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from agent import __version__
from pipelines.records import Batch

# events that are parse errors, by kind (the rest are counted as events only)
PARSE_ERRORS = {"malformed": "malformed", "invalid_utf8": "invalid_utf8",
                "line_too_long": "line_too_long", "partial_emitted": "partial",
                "partial_line_emitted": "partial", "unparsable": "unparsable"}
FILE_EVENTS = {"file_truncated": "truncated", "file_rotated": "rotated", "file_discovered": "discovered",
               "file_deleted": "deleted", "file_renamed_while_stopped": "renamed_while_stopped",
               "file_rotated_unseen": "rotated_unseen"}
LAG_BUCKETS = (0, 4096, 65536, 1 << 20, 16 << 20, 256 << 20, 1 << 30)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.lines_read = Counter("tailship_input_lines_total", "Raw lines read from files", registry=r)
        self.bytes_read = Counter("tailship_input_bytes_total", "Bytes read from files", registry=r)
        self.records_sent = Counter("tailship_records_sent_total",
                                    "Records acknowledged by every sink they were routed to", registry=r)
        self.bytes_sent = Counter("tailship_sent_bytes_total", "Encoded bytes acknowledged by the sink",
                                  registry=r)
        self.batches_sent = Counter("tailship_batches_sent_total", "Batches acknowledged by the sink",
                                    registry=r)
        self.batches = Counter("tailship_sink_batches_total", "Delivery attempts of batches by sink and "
                               "result (ok, retry, fatal)", ["sink", "result"], registry=r)
        self.sink_records = Counter("tailship_sink_records_total", "Records acknowledged, by sink",
                                    ["sink"], registry=r)
        self.sink_bytes = Counter("tailship_sink_bytes_total", "Record bytes acknowledged by sink, before "
                                  "the sink's compression", ["sink"], registry=r)
        self.send_seconds = Histogram("tailship_sink_send_seconds", "Time of one successful delivery "
                                      "attempt of a batch", ["sink"], registry=r,
                                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.retries = Counter("tailship_sink_retries_total", "Retriable delivery failures", ["sink"],
                               registry=r)
        self.dropped = Counter("tailship_dropped_records_total", "Records dropped on purpose, by reason",
                               ["reason"], registry=r)
        self.deadlettered = Counter("tailship_records_deadlettered_total", "Records written to the "
                                    "dead-letter store, by sink and reason", ["sink", "reason"],
                                    registry=r)
        self.deadletter_dropped = Counter("tailship_deadletter_dropped_records_total", "Dead-lettered "
                                          "records deleted with the oldest segment at "
                                          "deadletter.max_bytes", ["sink"], registry=r)
        self.deadletter_dropped_bytes = Counter("tailship_deadletter_dropped_bytes_total", "Bytes of "
                                                "those segments", ["sink"], registry=r)
        self.parse_errors = Counter("tailship_parse_errors_total", "Lines that could not be parsed as "
                                    "their format says, by kind", ["kind"], registry=r)
        self.truncated = Counter("tailship_truncated_records_total", "Records cut at max_line_bytes or "
                                 "a multiline bound", registry=r)
        self.files = Counter("tailship_files_total", "File lifecycle events (discovered, rotated, "
                             "truncated, deleted, renamed_while_stopped, rotated_unseen)",
                             ["event"], registry=r)
        self.events_total = Counter("tailship_events_total", "Notable events by kind", ["event"],
                                    registry=r)
        self.internal_errors = Counter("tailship_internal_errors_total", "Unexpected exceptions in a "
                                       "long-lived task, which was restarted after a backoff, by task",
                                       ["task"], registry=r)
        self.files_open = Gauge("tailship_files_open", "Files being tailed", registry=r)
        self.inflight_bytes = Gauge("tailship_inflight_bytes", "Bytes read but not yet acknowledged",
                                    registry=r)
        build = Gauge("tailship_build_info", "Version of the agent and of Python (value 1)",
                      ["version", "python"], registry=r)
        build.labels(__version__, platform.python_version()).set(1)
        self.events: _Tally[str] = _Tally()

    def event(self, name: str, n: int = 1) -> None:
        self.events[name] += n
        self.events_total.labels(name).inc(n)
        kind = PARSE_ERRORS.get(name)
        if kind is not None:
            self.parse_errors.labels(kind).inc(n)
        fe = FILE_EVENTS.get(name)
        if fe is not None:
            self.files.labels(fe).inc(n)
        if name in ("truncated", "multiline_truncated", "line_too_long"):
            self.truncated.inc(n)

    def internal_error(self, task: str) -> None:
        """A supervised task (`pipelines.supervise`) raised and is restarted."""
        self.internal_errors.labels(task).inc()
        self.events[f"internal_error_{task}"] += 1

    def live(self, source: Callable[[], dict[str, Any]]) -> None:
        """Serve the values `source()` returns at every scrape (see `_Live`)."""
        self.registry.register(_Live(source))


class MetricsReport:
    """What the data path reports (`pipelines.delivery.DeliveryReport`,
    `pipelines.fanout.FanoutReport`, `pipelines.deadletter.DeadLetterReport`), counted in
    `Metrics`: the one place that turns delivery events into self-metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def sent(self, sink: str, batch: Batch, secs: float) -> None:
        m = self.m
        m.send_seconds.labels(sink).observe(secs)
        m.batches.labels(sink, "ok").inc()
        m.batches_sent.inc()
        m.sink_records.labels(sink).inc(batch.nrecords)
        m.sink_bytes.labels(sink).inc(batch.nbytes)

    def retried(self, sink: str) -> None:
        self.m.event("sink_retry")
        self.m.batches.labels(sink, "retry").inc()
        self.m.retries.labels(sink).inc()

    def failed(self, sink: str) -> None:
        self.m.batches.labels(sink, "fatal").inc()

    def dropped(self, reason: str, n: int) -> None:
        self.m.dropped.labels(reason).inc(n)
        self.m.event(f"dropped_{reason}", n)

    def deadlettered(self, sink: str, reason: str, n: int) -> None:
        self.m.deadlettered.labels(sink, reason).inc(n)
        self.m.event("deadlettered", n)

    def deadletter_dropped(self, sink: str, records: int, nbytes: int) -> None:
        self.m.deadletter_dropped.labels(sink).inc(records)
        self.m.deadletter_dropped_bytes.labels(sink).inc(nbytes)
        self.m.event("deadletter_dropped", records)

    def delivered(self, nrecords: int, nbytes: int) -> None:
        self.m.records_sent.inc(nrecords)
        self.m.bytes_sent.inc(nbytes)

    def inflight(self, nbytes: int) -> None:
        self.m.inflight_bytes.set(nbytes)


class _Live(Collector):
    """Scrape-time values from the running agent: `source()` returns
    {"files": [(fd, position)], "queues": {stage: bytes}, "checkpoint_age": secs | None,
     "dead_letter_bytes": {sink: n}, "buffer_bytes": n, "sinks_healthy": {sink: bool},
     "file_pruned": {sink: (files, bytes)}}."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        s = self.source()
        lags = []
        for fd, pos in s.get("files", []):
            try:
                lags.append(max(0, os.fstat(fd).st_size - pos))
            except OSError:  # closed between the snapshot and now
                continue
        total = GaugeMetricFamily("tailship_unread_bytes", "Bytes written to tailed files and not read "
                                  "yet (lag), all files")
        total.add_metric([], sum(lags))
        yield total
        hist = HistogramMetricFamily("tailship_file_unread_bytes", "Unread bytes per tailed file "
                                     "(distribution over files)")
        buckets = [(str(b), float(sum(1 for x in lags if x <= b))) for b in LAG_BUCKETS]
        hist.add_metric([], [*buckets, ("+Inf", float(len(lags)))], sum_value=float(sum(lags)))
        yield hist
        q = GaugeMetricFamily("tailship_queue_bytes", "Bytes waiting in each stage", labels=["stage"])
        for stage, n in s.get("queues", {}).items():
            q.add_metric([stage], n)
        yield q
        age = s.get("checkpoint_age")
        ck = GaugeMetricFamily("tailship_checkpoint_age_seconds", "Seconds since checkpoints were last "
                               "written (NaN before the first write)")
        ck.add_metric([], float("nan") if age is None else age)
        yield ck
        dl = GaugeMetricFamily("tailship_deadletter_bytes", "Bytes held in the dead-letter store, "
                               "by sink (bounded by deadletter.max_bytes)", labels=["sink"])
        for sink, n in s.get("dead_letter_bytes", {}).items():
            dl.add_metric([sink], n)
        yield dl
        paused = CounterMetricFamily("tailship_backpressure_paused_seconds", "Seconds during which "
                                     "tailers waited for room in the in-flight budget (sink slower "
                                     "than input)")
        paused.add_metric([], s.get("paused_secs", 0.0))
        yield paused
        buf = GaugeMetricFamily("tailship_buffer_bytes", "Bytes held in the disk buffer")
        buf.add_metric([], s.get("buffer_bytes", 0))
        yield buf
        up = GaugeMetricFamily("tailship_sink_healthy", "1 while the sink's last delivery attempt "
                               "succeeded", labels=["sink"])
        for sink, ok in s.get("sinks_healthy", {}).items():
            up.add_metric([sink], 1.0 if ok else 0.0)
        yield up
        files = CounterMetricFamily("tailship_file_sink_pruned_files", "Output files the file sink "
                                    "deleted for retention (retention_bytes, retention_secs)",
                                    labels=["sink"])
        nbytes = CounterMetricFamily("tailship_file_sink_pruned_bytes", "Bytes of the output files the "
                                     "file sink deleted for retention", labels=["sink"])
        for sink, (n, b) in s.get("file_pruned", {}).items():
            files.add_metric([sink], n)
            nbytes.add_metric([sink], b)
        yield files
        yield nbytes

    def describe(self) -> Iterator[Any]:
        return iter(())

