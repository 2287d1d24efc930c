"""Options of the metrics derived from log records (`[log_metrics]`, `[[log_metrics.rules]]`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.options import opt


@dataclass(slots=True)
class MetricRule:
    name: str = field(metadata={"help": "metric name after the prefix; counters get _total appended"})
    type: str = opt("counter", choices=("counter", "histogram"), help="what the rule computes")
    help: str = opt("", help="the metric's HELP text")
    field: str = opt("", help="histogram: the numeric record field observed (dotted path)")
    buckets: list[float] = opt(factory=lambda: [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                                                2500.0, 5000.0, 10000.0],
                               help="histogram: upper bounds of the buckets")
    labels: list[str] = opt(factory=list, help="record fields (dotted paths) whose values label the series")
    match_field: str = opt("", help="only records whose field (dotted path) passes the tests below")
    equals: str = opt("", help="match_field equals this (compared as text)")
    one_of: list[str] = opt(factory=list, help="match_field is one of these (compared as text)")
    exists: bool = opt(False, help="match_field is present")
    message_regex: str = opt("", help="only records whose message (message, else msg) matches this regex")
    max_series: int = opt(1000, min=1, help="label sets kept; more are folded into __overflow__")


@dataclass(slots=True)
class LogMetricsSettings:
    enabled: bool = opt(True, help="derive metrics from log records")
    prefix: str = opt("logs_", help="prefix of every derived metric name")
    defaults: bool = opt(True, help="built-in rules: lines by namespace and level, lines with trace context")
    host_label: bool = opt(False, help="label every derived series with host (host.name)")
    ship_to: str = opt("", help="also ship snapshots as records to this sink URL (kafka://, "
                                "elasticsearch://, file:, stdout); empty: only /metrics")
    ship_interval_secs: float = opt(60.0, min=1, help="how often a snapshot is shipped")
    rules: list[MetricRule] = opt(factory=list, help="user rules: [[log_metrics.rules]] tables")
