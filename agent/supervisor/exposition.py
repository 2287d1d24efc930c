"""Merging the Prometheus text expositions of the workers into the one `/metrics` page the
supervisor serves, and keeping the counters of workers that died (`counters_only`), so that sums
never go back when a worker is restarted and counts from 0 again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

# gauges whose sum over workers means nothing: the merged value is the largest
MAX_GAUGES = frozenset(("tailship_checkpoint_age_seconds", "tailship_build_info"))
# histograms that describe the present (not accumulated): not kept from a worker that died
SNAPSHOT_FAMILIES = frozenset(("tailship_file_unread_bytes",))


def merge(texts: list[str], counters_only: bool = False) -> bytes:
    """Prometheus text expositions of several workers as one: samples with the same name and
    labels are added (counters, histogram buckets and sums, gauges such as bytes in flight);
    `_created` samples take the earliest, and gauges in MAX_GAUGES the largest value.
    `counters_only`: keep only what accumulates (counters, histograms, summaries)."""
    fams: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
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
