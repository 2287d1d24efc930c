"""Log metrics against hostile values: label values cut and marked, the guard counting bytes as
well as series, and the accounted bytes covering what the series really hold."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.logmetrics import CUT_MARK, OVERFLOW, LogMetrics
from pipelines.logmetrics_settings import LogMetricsSettings, MetricRule


def settings(*rules: MetricRule, **kw: Any) -> LogMetricsSettings:
    return dataclasses.replace(LogMetricsSettings(), rules=list(rules), **kw)


def exposition(lm: LogMetrics) -> str:
    reg = CollectorRegistry()
    reg.register(lm)
    return generate_latest(reg).decode()


def samples(lm: LogMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(exposition(lm)) for s in fam.samples}


def test_long_level_cut_marked_counted_and_not_kept_whole():
    """The issue's record: a 256 KiB `level`. Its label is cut to max_label_value_bytes and ends
    in the mark; the record is counted; neither the label nor the level cache keeps it whole."""
    lm = LogMetrics(settings())
    huge = "E" * (256 << 10)
    for i in range(400):
        lm.observe({"level": f"{i:04d}{huge}", "kubernetes": {"namespace": "shop"}}, None)
    got = samples(lm)
    lines = {dict(k[1])["level"]: v for k, v in got.items() if k[0] == "logs_lines_total"}
    assert len(lines) == 400
    limit = LogMetricsSettings().max_label_value_bytes
    for level in lines:
        assert len(level.encode()) <= limit and level.endswith(CUT_MARK), level[:40]
    assert all(level.startswith(f"{i:04d}e") for i, level in enumerate(sorted(lines)))
    assert got[("tailship_log_metrics_cut_total", (("metric", "logs_lines_total"),))] == 400
    assert lm.nbytes < 400 * 1024  # ~400 series of ~128-byte labels, not 100 MiB
    assert len(exposition(lm)) < 200 * 1024


def test_non_ascii_value_cut_at_a_character_boundary():
    """A value is cut in UTF-8 bytes without splitting a character; short ones pass unchanged."""
    lm = LogMetrics(settings(MetricRule(name="by_user", labels=["user"]), defaults=False,
                             max_label_value_bytes=32))
    lm.observe({"user": "é" * 40}, None)   # 80 bytes
    lm.observe({"user": "ünïcödé"}, None)  # short: unchanged
    users = [dict(k[1])["user"] for k in samples(lm) if k[0] == "logs_by_user_total"]
    cut = next(u for u in users if u.endswith(CUT_MARK))
    assert cut == "é" * 12 + CUT_MARK and len(cut.encode()) <= 32
    assert "ünïcödé" in users


def test_app_namespace_of_any_type_or_length_is_bounded():
    """Without kubelet metadata the app's own `kubernetes.namespace` labels the series: an object
    or a huge string must not raise (an unhashable label) nor be kept whole."""
    lm = LogMetrics(settings())
    lm.observe({"kubernetes": {"namespace": {"a": 1}}, "level": "info"}, None)
    lm.observe({"kubernetes": {"namespace": "n" * 100_000}, "level": "info"}, None)
    namespaces = {dict(k[1])["namespace"] for k in samples(lm) if k[0] == "logs_lines_total"}
    assert "" in namespaces
    assert any(ns.endswith(CUT_MARK) and len(ns) <= 128 for ns in namespaces)


def test_byte_guard_folds_new_label_sets_past_max_bytes():
    """Series well under max_series but past max_bytes: further label sets go to __overflow__,
    counted with reason max_bytes, and the accounted bytes stay within max_bytes plus one
    overflow series."""
    rule = MetricRule(name="by_path", labels=["path"], max_series=100_000)
    lm = LogMetrics(settings(rule, defaults=False, max_bytes=1 << 16))
    for i in range(5000):
        lm.observe({"path": f"/api/{i:05d}/" + "p" * 100}, None)
    got = samples(lm)
    kept = [k for k in got if k[0] == "logs_by_path_total"]
    assert 50 < len(kept) < 5000
    assert got[("logs_by_path_total", (("path", OVERFLOW),))] > 0
    over = got[("tailship_log_metrics_overflow_total", (("metric", "logs_by_path_total"),
                                                        ("reason", "max_bytes")))]
    assert over == 5000 - (len(kept) - 1)
    assert lm.nbytes <= (1 << 16) + 512


@pytest.mark.parametrize("kind", ["counter", "histogram"])
def test_accounted_bytes_cover_what_the_series_hold(kind: str):
    """tracemalloc over 3000 new series (their label strings made from the records, which are
    then freed): the accounted `nbytes` is at least what stays allocated."""
    rule = MetricRule(name="m", type=kind, field="v" if kind == "histogram" else "",
                      labels=["svc", "pod"], max_series=100_000)
    lm = LogMetrics(settings(rule, defaults=False, max_bytes=1 << 30))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            rec = {"svc": f"service-{i:05d}-" + "s" * (i % 60), "pod": f"pod-{i}", "v": i * 1.5}
            lm.observe(rec, None)
            lm.observe(rec, None)  # a second observation turns counts/buckets into new objects
        del rec
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"{kind}: traced {held} bytes, accounted {lm.nbytes} for 3000 series")
    assert held <= lm.nbytes <= 3 * held
