"""A real Prometheus exporter for the tests: prometheus_client's HTTP server in a subprocess, on a
free loopback port (`python -m tests.agent.metricsources.exporter SERIES`).

Every scrape it answers is numbered: `exporter_scrape_seq` is the number, each of the SERIES
`exporter_work_total{i}` counters is `seq * i`, and the `exporter_latency_seconds` histogram has
`seq` observations; so a test can tell which scrapes arrived, and whether each arrived whole.
`exporter_scrapes` (a file beside, when given) holds the number of scrapes answered.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

BUCKETS = (0.1, 1.0, 10.0)


class Numbered:
    def __init__(self, series: int) -> None:
        self.series = series
        self.seq = 0
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self.lock:
            self.seq += 1
            seq = self.seq
        g = GaugeMetricFamily("exporter_scrape_seq", "Number of this scrape")
        g.add_metric([], seq)
        yield g
        c = CounterMetricFamily("exporter_work", "Work per series", labels=["i"])
        for i in range(self.series):
            c.add_metric([str(i)], seq * i)
        yield c
        h = HistogramMetricFamily("exporter_latency_seconds", "seq observations of 0.5",
                                  labels=["seq_label"])
        h.add_metric(["x"], [("0.1", 0), ("1.0", seq), ("10.0", seq), ("+Inf", seq)], sum_value=seq * 0.5)
        yield h


def main() -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    series = int(sys.argv[1])
    registry = CollectorRegistry()
    registry.register(Numbered(series))
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_address[1], flush=True)
    while True:
        time.sleep(3600)


@contextlib.contextmanager
def exporter(series: int) -> Iterator[str]:
    """The URL of a running exporter with `series` work counters."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.agent.metricsources.exporter", str(series)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def hanging_target() -> Iterator[str]:
    """A URL whose socket accepts connections (the kernel completes them: it listens) and never
    answers a byte."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
    finally:
        s.close()


if __name__ == "__main__":
    main()
