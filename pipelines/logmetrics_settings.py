"""Options of the metrics derived from log records (`[log_metrics]`, `[[log_metrics.rules]]`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pipelines.options import opt

_METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


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

    def check(self, at: str, earlier: int | None) -> list[tuple[str, str]]:
        """This rule's problems; `earlier`: the index of an earlier rule of the same name."""
        problems: list[tuple[str, str]] = []
        if not _METRIC_NAME.fullmatch(self.name):
            problems.append((f"{at}.name", f"expected a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*), "
                                           f"got {self.name!r}"))
        elif earlier is not None:
            problems.append((f"{at}.name", f"expected a unique name, got {self.name!r} "
                                           f"(also rules[{earlier}])"))
        for j, label in enumerate(self.labels):
            if not _METRIC_NAME.fullmatch(label.replace(".", "_")):
                problems.append((f"{at}.labels[{j}]", f"expected a field path usable as a label name, "
                                                      f"got {label!r}"))
        if self.type == "histogram":
            if not self.field:
                problems.append((f"{at}.field", "expected the numeric field a histogram observes, "
                                                "got nothing"))
            if not self.buckets or any(not math.isfinite(b) for b in self.buckets) or \
                    len(set(self.buckets)) != len(self.buckets):
                problems.append((f"{at}.buckets", f"expected distinct finite bucket bounds, "
                                                  f"got {self.buckets!r}"))
        elif self.field:
            problems.append((f"{at}.field", "expected no field for a counter (it counts records)"))
        tests = self.equals != "" or bool(self.one_of) or self.exists
        if self.match_field and not tests:
            problems.append((f"{at}.match_field", "expected one of equals, one_of or exists with it"))
        if tests and not self.match_field:
            problems.append((f"{at}.match_field", "expected the field that equals/one_of/exists test, "
                                                  "got nothing"))
        if self.message_regex:
            try:
                re.compile(self.message_regex)
            except re.error as exc:
                problems.append((f"{at}.message_regex", f"expected a regular expression, got "
                                                        f"{self.message_regex!r} ({exc})"))
        return problems


@dataclass(slots=True)
class LogMetricsSettings:
    enabled: bool = opt(True, help="derive metrics from log records")
    prefix: str = opt("logs_", help="prefix of every derived metric name")
    defaults: bool = opt(True, help="built-in rules: lines by namespace and level, lines with trace context")
    host_label: bool = opt(False, help="label every derived series with host (host.name)")
    ship_to: str = opt("", help="also ship snapshots as records to this sink URL (kafka://, "
                                "elasticsearch://, file:, stdout); empty: only /metrics")
    ship_interval_secs: float = opt(60.0, min=1, help="how often a snapshot is shipped")
    max_label_value_bytes: int = opt(128, min=16, help="a label value taken from a record (UTF-8) "
                                     "longer than this is cut to it, ending in ...[cut]")
    max_bytes: int = opt(8 << 20, min=1 << 16, help="bytes the label sets of every rule may hold "
                         "together (label text plus a fixed cost per series); a new label set "
                         "past it is folded into __overflow__")
    rules: list[MetricRule] = opt(factory=list, help="user rules: [[log_metrics.rules]] tables")

    def check(self, path: str) -> list[tuple[str, str]]:
        """Each rule must compile: valid names, a field for histograms, a regex that compiles;
        `ship_to` a sink URL. Problems as (key path, what)."""
        problems: list[tuple[str, str]] = []
        if self.prefix and not _METRIC_NAME.fullmatch(self.prefix):
            problems.append((f"{path}.prefix", f"expected a Prometheus name prefix "
                                               f"([a-zA-Z_][a-zA-Z0-9_]*), got {self.prefix!r}"))
        if self.ship_to:
            from pipelines.sinks.registry import parse_sink_url

            try:
                parse_sink_url(self.ship_to)
            except ValueError as exc:
                problems.append((f"{path}.ship_to", str(exc)))
        seen: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            problems += r.check(f"{path}.rules[{i}]", seen.get(r.name))
            seen.setdefault(r.name, i)
        return problems
