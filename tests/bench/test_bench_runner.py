"""Smoke test of the benchmark runner (`python -m bench --quick`), on a small workload.

It checks what the instrument must get right — both agents run, every line arrives, the report
is written with both agents' rows, the ratio and the command — and nothing about speed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.__main__ import main
from tests.services import start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def test_quick_run_writes_a_report_and_loses_nothing(tmp_path: Path) -> None:
    kafka = start("kafka")["TAILSHIP_KAFKA_BOOTSTRAP"]
    out = tmp_path / "results"
    argv = ["--quick", "--lines", "4000", "--scenarios", "null,kafka,latency", "--kafka", kafka,
            "--out", str(out), "--work", str(tmp_path / "work")]
    rc = main(argv)
    assert rc == 0, "the runner reports lost lines (exit 1)"
    [md] = out.glob("*.md")
    text = md.read_text()
    assert "--quick --lines 4000" in text
    # the two agents did the same job on the parity sample: same records, same derived fields
    assert re.search(r"; 0 records only one of them wrote, 0 whose", text), text[:2000]
    header = next(line for line in text.splitlines() if line.startswith("| scenario |"))
    col = {name.strip(): i for i, name in enumerate(header.split("|")[1:-1])}
    rows = [line.split("|")[1:-1] for line in text.splitlines()
            if re.match(r"\| (null|kafka|latency) \|", line)]
    assert {(r[0].strip(), r[1].strip()) for r in rows} == {
        (s, a) for s in ("null", "kafka", "latency") for a in ("tailship", "go")}
    for r in rows:
        cells = [c.strip() for c in r]
        c = {name: cells[i] for name, i in col.items()}
        assert c["lost"] == "0" and c["dup"] == "0", f"{cells[0]}/{cells[1]} lost or duplicated lines"
        bad = c["bad key"]
        assert bad in ("0", "") and (bad == "") == (cells[0] == "null"), "Kafka keys unchecked"
        assert float(c["lines/s"].replace(",", "")) > 0 and float(c["CPU-s per M lines"]) >= 0, cells
        assert int(c["peak RSS MiB"]) >= int(c["largest process MiB"]) > 0, cells
        if cells[1] == "tailship":
            assert float(c["tailship/Go lines/s"]) > 0, "lines/s ratio against Go missing"
            assert c["tailship/Go CPU per line"], "CPU ratio against Go missing"
        if cells[0] == "latency":
            p50, p99 = float(c["p50 ms"]), float(c["p99 ms"])
            assert 0 < p50 <= p99, cells
