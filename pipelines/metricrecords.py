"""The one record schema of metric samples, whoever produced them: a Prometheus scrape, the host
metrics source, or the metrics derived from logs (`log_metrics.ship_to`).

One record per series (one label set of one metric):

    {"@timestamp": "2026-12-04T20:00:00.000Z",
     "metric": {"name": "http_request_duration_seconds", "type": "histogram",
                "labels": {"job": "...", "instance": "...", "handler": "/api"},
                "value": 1.0,                                  # counter, gauge, untyped, ...
                "buckets": [{"le": 0.1, "count": 3.0}, ...],   # histogram: cumulative, finite bounds
                "quantiles": [{"quantile": 0.5, "value": 0.2}],  # summary
                "sum": 12.5, "count": 7.0},                    # histogram and summary
     "host": {"name": "node-1"}, "kubernetes": {...}}         # kubernetes: pod targets only

Why these choices:
* A histogram's buckets and a summary's quantiles stay in the record of their series, so a
  consumer never has to join sample records back into a distribution.
* Bucket bounds are numbers, so a store can compare them; the `+Inf` bucket is left out because it
  is `count` by definition (JSON has no infinity, and a bound that is sometimes a number and
  sometimes "+Inf" breaks a typed index mapping).
* NaN and infinite values (a summary with no observations yet) become JSON `null`: JSON has no such
  numbers; the record still says the series exists.
* Labels are one object of strings (`flattened` in Elasticsearch): their keys are unbounded.

`pipelines` imports nothing from `agent`: the sources in `agent/metricsources` and
`pipelines.logmetrics` both build records with `metric_record` and encode them with `encode`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from pipelines.records import Segment

# types as Prometheus and OpenMetrics name them
COUNTER, GAUGE, HISTOGRAM, SUMMARY = "counter", "gauge", "histogram", "summary"


def rfc3339_millis(epoch: float | None = None) -> str:
    """`@timestamp` of a sample: RFC 3339, UTC, milliseconds (Prometheus' resolution)."""
    when = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite(x: float) -> float | None:
    """The value, or None (JSON null) for NaN and infinities."""
    return x if math.isfinite(x) else None


def metric_record(ts: str, name: str, type_: str, labels: Mapping[str, str], *,
                  value: float | None = None,
                  buckets: Iterable[tuple[float, float]] | None = None,
                  quantiles: Iterable[tuple[float, float]] | None = None,
                  sum_: float | None = None, count: float | None = None,
                  host: str = "", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One series as a record. `buckets`: (upper bound, cumulative count) pairs, in order; the
    `+Inf` one is dropped (see the module doc). `extra`: more top-level fields (`kubernetes`)."""
    metric: dict[str, Any] = {"name": name, "type": type_, "labels": dict(labels)}
    if value is not None:
        metric["value"] = finite(float(value))
    if buckets is not None:
        metric["buckets"] = [{"le": float(le), "count": float(c)} for le, c in buckets
                             if le != math.inf]
    if quantiles is not None:
        metric["quantiles"] = [{"quantile": float(q), "value": finite(float(v))} for q, v in quantiles]
    if sum_ is not None:
        metric["sum"] = finite(float(sum_))
    if count is not None:
        metric["count"] = float(count)
    rec: dict[str, Any] = {"@timestamp": ts, "metric": metric}
    if host:
        rec["host"] = {"name": host}
    if extra:
        rec.update(extra)
    return rec


def encode(rec: dict[str, Any]) -> bytes:
    # orjson writes NaN and infinities as null already; `finite` above makes that explicit
    return orjson.dumps(rec)


class MetricSegment:
    """Metric records encoded into one `Segment` as they come, so each dict lives only until it
    is encoded (a scrape of 50,000 series holds 50,000 short byte strings, not dicts).

    The file key is unique per segment (`metrics:<key>:<ns>`), offsets count from 0: sinks that
    derive ids from (file, offset) keep every scrape or snapshot, and a retried batch overwrites
    itself. `route`: the sinks of one record, where routing depends on record fields (called
    here, where the record is still a dict); else every record goes to `mask`."""

    def __init__(self, key: str, meta: dict[str, Any], mask: int = -1,
                 route: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.seg = Segment(f"metrics:{key}:{time.time_ns()}", key, meta, mask=mask,
                           routes=None if route is None else [])
        self.route = route

    def add(self, rec: dict[str, Any]) -> None:
        seg = self.seg
        b = orjson.dumps(rec)
        seg.offsets.append(len(seg.records))
        seg.records.append(b)
        seg.nbytes += len(b)
        if self.route is not None:
            seg.routes.append(self.route(rec))  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.seg.records)

    def done(self) -> Segment:
        """The segment (no trace context: metric records have none)."""
        seg = self.seg
        seg.trace_ids = [None] * len(seg.records)
        seg.span_ids = [None] * len(seg.records)
        return seg
