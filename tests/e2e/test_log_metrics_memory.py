"""The issue's finding through a real agent process: 400 lines whose `level` is 256 KiB each
raised RSS from 29 to 230 MiB for good and made /metrics a 100 MiB page. Now the process keeps
within the documented bound (the in-flight budget, `batch.memory_limit_bytes`, plus
`log_metrics.max_bytes`) and /metrics stays small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest

from agent.settings import Settings
from tests.conftest import free_port, http_get, sample_value, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_hostile_levels_keep_rss_bounded_and_metrics_small(tmp_path: Path):
    log = tmp_path / "a.log"
    log.write_bytes(b'{"level": "info", "msg": "first"}\n')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "tail", str(log), "--to", "null",
                             "--workers", "1", "--data-dir", str(tmp_path / "data"),
                             "--metrics-listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def get(path: str) -> bytes:
        return http_get(port, path, timeout=10)

    try:
        wait_for(lambda: get("/healthz") == b"ok\n", 30, "the agent's /healthz")
        wait_for(lambda: sample_value(get("/metrics"), "tailship_records_sent_total") == 1, 30,
                 "the first record")
        base = psutil.Process(proc.pid).memory_info().rss
        with log.open("ab") as f:
            for i in range(400):
                f.write(orjson.dumps({"level": f"{i:04d}" + "E" * (256 << 10), "msg": "x"}) + b"\n")
        wait_for(lambda: sample_value(get("/metrics"), "tailship_records_sent_total") == 401, 60,
                 "the 400 records acknowledged")
        rss = psutil.Process(proc.pid).memory_info().rss
        body = get("/metrics")
        s = Settings()
        bound = s.batch.memory_limit_bytes + s.log_metrics.max_bytes
        held = sample_value(body, 'tailship_queue_bytes{stage="log_metrics"}')
        print(f"RSS {base / 2**20:.0f} -> {rss / 2**20:.0f} MiB (growth {(rss - base) / 2**20:.1f} MiB, "
              f"bound {bound / 2**20:.0f} MiB); /metrics {len(body)} bytes; log metrics hold "
              f"{held:.0f} accounted bytes")
        assert rss - base < bound
        assert len(body) < 256 << 10
        assert 0 < held <= s.log_metrics.max_bytes
        assert sample_value(body, 'tailship_log_metrics_cut_total{metric="logs_lines_total"}') == 400
    finally:
        proc.terminate()
        proc.wait(30)
