"""pytest-benchmark: the per-line hot path (docker decode → JSON parse → trace → enrich → encode).

Run with `scripts/test tests/bench/test_bench_hotpath.py --benchmark-enable`; by default the suite runs
each benchmark once as a test (benchmarks disabled), which still checks the outputs.
"""

from __future__ import annotations

import random
import string

import orjson
import pytest

from pipelines.chain import ChainSpec, FileProcessor

N = 2000


def docker_lines(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        msg = "".join(rnd.choices(string.ascii_letters + " ", k=rnd.randint(400, 700)))
        payload = orjson.dumps({
            "ts": "2026-11-24T10:00:00.000Z", "level": "info", "logger": "http.server",
            "msg": msg, "service": "checkout", "http.method": "GET", "status": 200,
            "duration_ms": rnd.randint(1, 900), "trace_id": f"{rnd.getrandbits(128):032x}",
            "span_id": f"{rnd.getrandbits(64):016x}", "seq": i,
        }).decode()
        out.append(orjson.dumps({"log": payload + "\n", "stream": "stdout",
                                 "time": "2026-11-24T10:00:00.123456789Z"}))
    return out


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return docker_lines(N)


def test_hot_path_docker_json(benchmark, lines):
    """~1 KB docker JSON lines through the whole chain; every line comes out with its trace id."""
    spec = ChainSpec(format="docker", host_name="bench")

    def run():
        proc = FileProcessor(spec, "1:1:ff", "/var/log/containers/a_b_c-" + "0" * 64 + ".log",
                             {}, lambda name, n: None)
        return proc.process(lines, 0, 0.0)

    seg = benchmark(run)
    assert len(seg.records) == N
    assert all(t is not None for t in seg.trace_ids)
    assert seg.safe_offset == sum(len(x) + 1 for x in lines)
