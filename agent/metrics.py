"""Self-metrics, one registry per agent (tests run several agents in one process).

Per-line work never touches these: tailers count per chunk, and the chain reports rare events
(truncations, malformed lines, ...) through `event`, which both counts and, for the first
occurrences, is visible in `events` for the summary.
"""

from __future__ import annotations

from collections import Counter as _Tally

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.lines_read = Counter("tailship_input_lines_total", "Raw lines read from files", registry=r)
        self.bytes_read = Counter("tailship_input_bytes_total", "Bytes read from files", registry=r)
        self.records_sent = Counter("tailship_records_sent_total", "Records acknowledged by the sink",
                                    registry=r)
        self.bytes_sent = Counter("tailship_sent_bytes_total", "Encoded bytes acknowledged by the sink",
                                  registry=r)
        self.batches_sent = Counter("tailship_batches_sent_total", "Batches acknowledged by the sink",
                                    registry=r)
        self.events_total = Counter("tailship_events_total", "Notable events by kind", ["event"],
                                    registry=r)
        self.files_open = Gauge("tailship_files_open", "Files being tailed", registry=r)
        self.inflight_bytes = Gauge("tailship_inflight_bytes", "Bytes read but not yet acknowledged",
                                    registry=r)
        self.events: _Tally[str] = _Tally()

    def event(self, name: str, n: int = 1) -> None:
        self.events[name] += n
        self.events_total.labels(name).inc(n)
