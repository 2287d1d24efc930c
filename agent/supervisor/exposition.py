"""The workers' Prometheus text expositions: the one way a worker's numbers reach the
supervisor, for the `/metrics` page and for the run summary alike.

A worker answers each of the supervisor's requests (one a second, and one more at each scrape)
with its whole exposition, and sends one last exposition when it stops. From those the
supervisor makes:

- the `/metrics` page: `merge` adds the workers' samples up (counters, histograms, gauges such
  as bytes in flight; a few gauges take the largest value, see MAX_GAUGES);
- the counters of worker processes that died: `merge(..., counters_only=True)` folds a dead
  worker's last exposition into what the supervisor carries, so sums never go back when the
  worker is restarted and counts from 0 again;
- the run summary printed at the end and on the progress line: `summarize` reads the few
  samples it needs (lines and bytes read, records, bytes and batches sent, events by name) out
  of the same texts.

Why this way and not the other: the page needs everything (histograms, labels, metrics derived
from logs), of which the summary is a handful of numbers, so the exposition can serve the
summary but a summary could not serve the page. Three numbers of the summary are not metrics
of the agent (distinct files read, CPU seconds, records not acknowledged): `RunTotals` adds them
to a worker's exposition as `tailship_run_*`, and the page leaves them out (RUN_FAMILIES), so
/metrics shows what a single-process agent shows. Their types give the carrying rules of the
summary: CPU seconds is a counter and is carried over a restart; files and unacknowledged
records are gauges and are not (a restarted worker counts its files again and reads again what
was not acknowledged). A worker that does not answer is represented by its latest exposition,
on the page and in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from agent.runtime import Summary

# gauges whose sum over workers means nothing: the merged value is the largest
MAX_GAUGES = frozenset(("tailship_checkpoint_age_seconds", "tailship_build_info",
                        "tailship_open_files_limit", "tailship_kubernetes_watch_age_seconds",
                        "tailship_kubernetes_pods"))
# histograms that describe the present (not accumulated): not kept from a worker that died
SNAPSHOT_FAMILIES = frozenset(("tailship_file_unread_bytes",))
# families a worker exposes for the run summary only (see `RunTotals`), not on /metrics
RUN_FAMILIES = frozenset(("tailship_run_files", "tailship_run_cpu_seconds", "tailship_run_unacked_records"))
# sample -> field of `Summary`
SUMMARY_SAMPLES = {
    "tailship_input_lines_total": "lines_read",
    "tailship_input_bytes_total": "bytes_read",
    "tailship_records_sent_total": "records_sent",
    "tailship_sent_bytes_total": "bytes_sent",
    "tailship_batches_sent_total": "batches_sent",
    "tailship_run_files": "files",
    "tailship_run_cpu_seconds_total": "cpu_secs",
    "tailship_run_unacked_records": "unacked_records",
}
EVENTS_SAMPLE = "tailship_events_total"  # `Summary.events`, by its `event` label
_WANTED = (*SUMMARY_SAMPLES, EVENTS_SAMPLE)


class RunTotals(Collector):
    """Registered in a worker's registry: the numbers of its run summary that are not metrics,
    read from `summary()` at each exposition."""

    def __init__(self, summary: Callable[[], Summary]) -> None:
        self.summary = summary

    def collect(self) -> Iterator[Metric]:
        s = self.summary()
        files = GaugeMetricFamily("tailship_run_files", "Distinct files this process has read")
        files.add_metric([], s.files)
        cpu = CounterMetricFamily("tailship_run_cpu_seconds", "CPU seconds this process has used "
                                  "since the agent started")
        cpu.add_metric([], s.cpu_secs)
        unacked = GaugeMetricFamily("tailship_run_unacked_records", "Records read and not "
                                    "acknowledged yet")
        unacked.add_metric([], s.unacked_records)
        return iter((files, cpu, unacked))

    def describe(self) -> Iterator[Metric]:
        return iter(())


def summarize(texts: Iterable[str]) -> Summary:
    """The run summary of the processes whose expositions are `texts`, added up (elapsed time
    left at 0: it is the supervisor's own)."""
    sums = dict.fromkeys(SUMMARY_SAMPLES.values(), 0.0)
    events: dict[str, float] = {}
    for text in texts:
        # only the lines of the samples wanted: an exposition may hold thousands of others
        # (metrics from logs), and this runs every second with the progress line
        wanted = "\n".join(line for line in text.splitlines() if line.startswith(_WANTED))
        for fam in text_string_to_metric_families(wanted):
            for sample in fam.samples:
                if math.isnan(sample.value):
                    continue
                if sample.name == EVENTS_SAMPLE:
                    name = sample.labels.get("event", "")
                    events[name] = events.get(name, 0.0) + sample.value
                elif sample.name in SUMMARY_SAMPLES:
                    sums[SUMMARY_SAMPLES[sample.name]] += sample.value
    total = Summary(events={k: round(v) for k, v in events.items()})
    for name, v in sums.items():
        setattr(total, name, v if name == "cpu_secs" else round(v))
    return total


def merge(texts: list[str], counters_only: bool = False,
          leave_out: frozenset[str] = frozenset()) -> bytes:
    """Prometheus text expositions of several workers as one: samples with the same name and
    labels are added (counters, histogram buckets and sums, gauges such as bytes in flight);
    `_created` samples take the earliest, and gauges in MAX_GAUGES the largest value.
    `counters_only`: keep only what accumulates (counters, histograms, summaries).
    `leave_out`: names of families to drop."""
    fams: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name in leave_out:
                continue
            if counters_only and (fam.type not in ("counter", "histogram", "summary")
                                  or fam.name in SNAPSHOT_FAMILIES):
                continue
            if fam.name not in fams:
                fams[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            acc = values[fam.name]
            for sample in fam.samples:
                if counters_only and sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                have = acc.get(key)
                if have is None or math.isnan(have):
                    acc[key] = sample.value
                elif math.isnan(sample.value):
                    continue
                elif sample.name.endswith("_created"):
                    acc[key] = min(have, sample.value)
                elif fam.type in ("info", "stateset") or fam.name in MAX_GAUGES:
                    acc[key] = max(have, sample.value)
                else:
                    acc[key] = have + sample.value

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            for name, fam in fams.items():
                for (sname, labels), v in values[name].items():
                    fam.add_sample(sname, dict(labels), v)
                yield fam

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Merged())  # type: ignore[arg-type]
    return generate_latest(reg)
