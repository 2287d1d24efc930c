"""What the metric sources cost: the CPU of one scrape of N series, and the records a node's host
metrics produce.

    python -m bench.metric_sources [--series 10000] [--rounds 5]

A scrape is measured whole, as the agent does it: HTTP fetch from an exporter in another process
(Python's http.server serving a generated exposition: 60% counters, 20% gauges, 20% histograms
of 11 buckets), parse, one record per series, JSON encoding, the offer to the pipeline (a stub
that takes the segment). Host metrics: `collect_host` on this machine's /proc and /sys. Prints
process CPU seconds (this process only: the exporter runs apart), medians over the rounds, and the
longest the event loop (where the files are read) waited during a scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from agent.metricsources import host as hostmetrics
from agent.metricsources.settings import HostMetricsSettings, PrometheusScrapeSettings
from agent.metricsources.source import HOST_TARGET, MetricSources
from agent.metricsources.targets import StaticTargets
from pipelines.records import Segment
from pipelines.routes import FileRoutes

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def exposition(series: int) -> str:
    """`series` series: 60% counters, 20% gauges, 20% histograms (14 samples each)."""
    nc, ng = series * 6 // 10, series * 2 // 10
    out = ["# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n"]
    out += [f'app_requests_total{{method="GET",path="/api/v{i % 7}/item/{i}",code="{200 + i % 5}"}} {i * 3}\n'
            for i in range(nc)]
    out.append("# HELP app_temp Temperature.\n# TYPE app_temp gauge\n")
    out += [f'app_temp{{sensor="s{i}",zone="z{i % 13}"}} {i * 0.37}\n' for i in range(ng)]
    out.append("# HELP app_latency_seconds Latency.\n# TYPE app_latency_seconds histogram\n")
    for i in range(series - nc - ng):
        acc = 0
        for b in BOUNDS:
            acc += i % 3
            out.append(f'app_latency_seconds_bucket{{handler="h{i}",le="{b}"}} {acc}\n')
        out.append(f'app_latency_seconds_bucket{{handler="h{i}",le="+Inf"}} {acc}\n')
        out.append(f'app_latency_seconds_sum{{handler="h{i}"}} {acc * 0.1}\n')
        out.append(f'app_latency_seconds_count{{handler="h{i}"}} {acc}\n')
    return "".join(out)


@contextlib.contextmanager
def served(text: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "metrics.txt").write_text(text)
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                                 "--directory", d], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        try:
            assert proc.stdout is not None
            port = proc.stdout.readline().split("port ")[1].split()[0]
            url = f"http://127.0.0.1:{port}/metrics.txt"
            urllib.request.urlopen(url, timeout=10).read()
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


async def _longest_stall(out: list[float]) -> None:
    """How late a 1 ms sleep wakes at worst while it runs (appended to `out` when cancelled)."""
    worst = 0.0
    try:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)
    finally:
        out.append(worst)


async def run(series: int, rounds: int) -> None:
    offered: list[Segment] = []

    async def offer(seg: Segment, on_done: object) -> bool:
        offered.append(seg)
        return True

    text = exposition(series)
    with served(text) as url:
        s = PrometheusScrapeSettings(enabled=True, urls=[url], timeout_secs=30, interval_secs=30)
        src = MetricSources(s, HostMetricsSettings(), "bench", offer, lambda f, k: FileRoutes(1, None))
        await src.http.start()
        try:
            [target] = StaticTargets([url], "bench").targets()
            cpu, stalls = [], []
            for _ in range(rounds):
                ticker = asyncio.create_task(_longest_stall(stalls))
                t0 = time.process_time()
                await src.scrape_once(target)
                cpu.append(time.process_time() - t0)
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        finally:
            await src.http.close()
    seg = offered[-1]
    st = src.stats.targets[url]
    print(f"scrape: {len(text) / 1e6:.1f} MB, {st.samples // rounds} samples, {len(seg)} records "
          f"({seg.nbytes / 1e6:.1f} MB of JSON): CPU {statistics.median(cpu):.3f} s "
          f"(median of {rounds}; all: {', '.join(f'{c:.3f}' for c in cpu)}); longest event-loop "
          f"stall {max(stalls) * 1000:.0f} ms (a 1 ms ticker's worst lateness)")

    offered.clear()
    hs = HostMetricsSettings(enabled=True)
    hsrc = MetricSources(PrometheusScrapeSettings(), hs, "bench", offer, lambda f, k: FileRoutes(1, None))
    paths = hostmetrics.HostPaths.of(hs)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    cpu = []
    for _ in range(rounds):
        t0 = time.process_time()
        await hsrc.collect_host(paths, pool)
        cpu.append(time.process_time() - t0)
    pool.shutdown()
    n = len(offered[-1])
    print(f"host metrics: {n} records per collection ({offered[-1].nbytes / 1e3:.0f} kB), "
          f"{n / hs.interval_secs:.1f} records/s at the default {hs.interval_secs:g} s interval; "
          f"CPU {statistics.median(cpu) * 1000:.1f} ms per collection "
          f"(series of {HOST_TARGET}: {hsrc.stats.targets[HOST_TARGET].series})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    asyncio.run(run(args.series, args.rounds))


if __name__ == "__main__":
    main()
