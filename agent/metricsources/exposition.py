"""A scraped exposition (Prometheus text 0.0.4 or OpenMetrics) → one metric record per series.

Parsing is prometheus_client's (`parser` for the text format, `openmetrics.parser` for
OpenMetrics), measured on 10,000 series (36,000 samples, 2 MB): 0.5 CPU-s for the text format,
1.0 for OpenMetrics, which is why the scraper asks for the text format first. No better-kept
Python parser exists; writing our own was not worth its risk.

A histogram's `_bucket`, `_sum` and `_count` samples (a summary's quantiles, `_sum`, `_count`)
become the one record of their series (`pipelines.metricrecords`); counters, gauges and the
other types give one record per sample. OpenMetrics `_created` samples are left out, as Prometheus
does by default (in the text format they come as gauges named after their family: left out too).
Labels are the exposed ones plus the target's (`job`, `instance`): on a clash the
target's win and the exposed value is kept as `exported_<name>`, unless `honor_labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from pipelines.metricrecords import HISTOGRAM, SUMMARY, metric_record, rfc3339_millis

_CREATED_TYPES = frozenset(("counter", "histogram", "summary"))


@dataclass(slots=True)
class Parsed:
    series: int = 0    # records handed on
    samples: int = 0   # samples exposed (the cut ones too)
    cut: int = 0       # samples left out past max_samples


class SeriesBuilder:
    """Records of one scrape: the target's labels and fields, the scrape's timestamp."""

    def __init__(self, target_labels: dict[str, str], honor_labels: bool, ts: str, host: str,
                 extra: dict[str, Any]) -> None:
        self.target = target_labels
        self.honor = honor_labels
        self.ts = ts
        self.host = host
        self.extra = extra

    def labels(self, exposed: dict[str, str]) -> dict[str, str]:
        if self.honor:
            return {**self.target, **exposed}
        out = dict(exposed)
        for k, v in self.target.items():
            if k in out:
                out[f"exported_{k}"] = out.pop(k)
            out[k] = v
        return out

    def record(self, name: str, type_: str, exposed: dict[str, str], when: Any, **values: Any
               ) -> dict[str, Any]:
        ts = self.ts if when is None else rfc3339_millis(float(when))
        return metric_record(ts, name, type_, self.labels(exposed), host=self.host,
                             extra=self.extra, **values)

    def records(self, fam: Metric) -> Iterator[tuple[dict[str, Any], int]]:
        """(record, samples in it) for each series of `fam`."""
        if fam.type in (HISTOGRAM, "gaugehistogram"):
            yield from self._grouped(fam, "le", "buckets")
        elif fam.type == SUMMARY:
            yield from self._grouped(fam, "quantile", "quantiles")
        else:
            created = fam.name + "_created"
            for s in fam.samples:
                if s.name != created:
                    yield self.record(s.name, fam.type, s.labels, s.timestamp, value=s.value), 1

    def _grouped(self, fam: Metric, key: str, field_: str) -> Iterator[tuple[dict[str, Any], int]]:
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        n: dict[tuple[tuple[str, str], ...], int] = {}
        suffix = len(fam.name)
        for s in fam.samples:
            labels = s.labels
            part = labels.get(key)
            rest = {k: v for k, v in labels.items() if k != key} if part is not None else labels
            ident = tuple(sorted(rest.items()))
            g = series.get(ident)
            if g is None:
                g = series[ident] = {"labels": rest, "when": s.timestamp, field_: []}
                n[ident] = 0
            n[ident] += 1
            end = s.name[suffix:]
            if part is not None and end in ("_bucket", ""):
                g[field_].append((float(part), s.value))
            elif end in ("_sum", "_gsum"):
                g["sum_"] = s.value
            elif end in ("_count", "_gcount"):
                g["count"] = s.value
            else:
                n[ident] -= 1  # _created and the like: left out
        for ident, g in series.items():
            when = g.pop("when")
            labels = g.pop("labels")
            yield self.record(fam.name, fam.type, labels, when, **g), n[ident]


def parse(text: str, openmetrics: bool, builder: SeriesBuilder, max_samples: int,
          add: Callable[[dict[str, Any]], None]) -> Parsed:
    """Hand `add` the record of each series in `text`, the first `max_samples` samples' worth;
    count the rest in `cut`. ValueError when the text is not the format it claims. Plain CPU
    work: the scraper runs it in a thread, so that the event loop (the files) gets its turns
    while a large exposition is parsed."""
    out = Parsed()
    families = parse_openmetrics(text) if openmetrics else parse_text(text)
    with_created: set[str] = set()  # families whose _created series the text format sends apart
    for fam in families:
        if fam.type in _CREATED_TYPES:
            with_created.add(fam.name)
        elif fam.name.endswith("_created") and fam.name[:-8] in with_created:
            continue
        for rec, n in builder.records(fam):
            out.samples += n
            if out.cut or out.samples > max_samples:
                out.cut += n
                continue
            add(rec)
            out.series += 1
    return out
