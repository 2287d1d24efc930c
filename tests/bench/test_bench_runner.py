"""Smoke test of the benchmark runner (`python -m bench --quick`), on a small workload.

It checks what the instrument must get right — every agent runs where it should (this checkout,
an older tailship, the Go baseline and its old version), every line arrives, the report is written
where a quick run belongs (not into the committed bench/results/), with gross, start-up and net
figures, the broker's CPU, the ratios, the targets table and the command — and nothing about speed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bench.__main__ as runner
from bench.__main__ import main
from tests.services import start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def _table(text: str, first_col: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with `first_col`, as dicts."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(f"| {first_col} |"))
    names = [c.strip() for c in lines[i].split("|")[1:-1]]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.split("|")[1:-1]), strict=True)))
    return rows


def test_quick_run_writes_a_report_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = start("kafka")["TAILSHIP_KAFKA_BOOTSTRAP"]
    committed, quick = tmp_path / "results", tmp_path / "quick-results"
    monkeypatch.setattr(runner, "RESULTS", committed)
    monkeypatch.setattr(runner, "QUICK_RESULTS", quick)
    argv = ["--quick", "--lines", "4000", "--scenarios", "null-cri,null1-docker,kafka,latency",
            "--tailship-rev", "HEAD", "--kafka", kafka, "--work", str(tmp_path / "work")]
    rc = main(argv)
    assert rc == 0, "the runner reports lost lines (exit 1)"
    assert not committed.exists(), "a quick run wrote into the committed results directory"
    [md] = quick.glob("*.md")
    text = md.read_text()
    assert "--quick --lines 4000" in text
    # the two agents did the same job on the parity sample: same records, same derived fields
    assert re.search(r"; 0 records only one of them wrote; docker [\d,]+ records in both, 0 whose "
                     r".*; cri [\d,]+ records in both, 0 whose", text), text[:3000]
    rows = _table(text, "scenario | agent | workers")
    assert {(r["scenario"], r["agent"]) for r in rows} == {
        *(("null-cri", a) for a in ("tailship", "go", "go@a1799ed")),
        ("null1-docker", "tailship"), ("null1-docker", "tailship@HEAD"),
        ("kafka-docker", "tailship"), ("kafka-docker", "go"), ("kafka-cri", "tailship"), ("kafka-cri", "go")}
    for r in rows:
        assert r["lost"] == "0" and r["dup"] == "0", f"{r['scenario']}/{r['agent']} lost or duplicated lines"
        assert (r["bad key"] == "0") == r["scenario"].startswith("kafka"), "Kafka keys unchecked"
        assert float(r["lines/s"].replace(",", "")) > 0
        net, gross = float(r["**CPU-s per M lines**"].strip("*")), float(r["gross CPU-s per M"])
        assert 0 <= net <= gross, r
        assert float(r["start-up CPU-s"]) > 0 or r["agent"].startswith("go"), r
        assert int(r["peak RSS MiB"]) >= int(r["largest process MiB"]) > 0, r
        assert (r["broker CPU-s per M"] != "") == r["scenario"].startswith("kafka"), r
        assert r["workers"] == ("1" if r["scenario"].startswith("null1") else "per CPU"), r
    ratios = {(r["scenario"], r["agent"], r["against"]) for r in _table(text, "scenario | agent | against")}
    assert {("null-cri", "tailship", "go"), ("null-cri", "tailship", "go@a1799ed"),
            ("null1-docker", "tailship", "tailship@HEAD"), ("kafka-cri", "tailship", "go")} <= ratios
    follow = _table(text, "scenario | agent | lines/s offered")
    assert {r["agent"] for r in follow if r["scenario"] == "latency"} == {"tailship", "go"}
    for r in follow:
        assert r["lost"] == "0", r
        assert 0 < float(r["p50 ms"]) <= float(r["p99 ms"]), r
    targets = _table(text, "target")
    assert len(targets) >= 8 and all(t[""] in ("met", "missed", "—") for t in targets), targets
    assert any(t["target"].startswith("latency setting") and t[""] in ("met", "missed") for t in targets)
