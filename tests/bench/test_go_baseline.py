"""The Go baseline does tailship's job: the same records, field for field, and checkpoints.

bench/go-baseline/README.md claims the Go agent does the same work per line as tailship (trace
and span ids in every convention, set-asides, agent-key collisions, flags, stack-line
inheritance) and lists what still differs; these tests hold it to that on a file of edge cases
and on a generated tree, and check that its checkpoints end where the files end. Nothing here
measures speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import generate_tree
from tests.services import ROOT, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GO_DIR = ROOT / "bench" / "go-baseline"
# the environment of `go build` and `go test` here: no cgo (see go_binary)
GO_ENV = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}

# payloads exercising each convention and rule (see pipelines/trace.py and pipelines/chain.py)
PAYLOADS = [
    '{"msg":"a","trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736","span_id":"00F067AA0BA902B7"}',
    '{"msg":"b","trace_id":"bogus","traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}',
    '{"msg":"c","trace_id":"bogus","trace_id_original":"x"}',
    '{"msg":"d","trace_id":null,"span_id":""}',
    '{"msg":"e","@timestamp":"app","stream":"app","log":{"level":"info","offset":5},"host":"h1",'
    '"kubernetes":{"x":1,"pod":"mine"}}',
    '{"msg":"f","host":{"ip":"1.2.3.4","name":"app"},"log":"str"}',
    '{"msg":"g","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}',
    '{"msg":"h","dd.trace_id":"1234567890","dd.span_id":987654321}',
    '{"msg":"i","dd":{"trace_id":12345,"span_id":"678"}}',
    '{"msg":"j","X-Amzn-Trace-Id":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}',
    '{"msg":"k","b3":"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}',
    '{"msg":"l","logging.googleapis.com/trace":"projects/p/traces/80f198ee56343ba864fe8b2a57d3eff7",'
    '"logging.googleapis.com/spanId":"000000000000004a"}',
    '{"msg":"m","trace":{"id":"80f198ee56343ba864fe8b2a57d3eff7"},"span":{"id":"e457b5a2e4d86bd1"}}',
    '{"msg":"n","trace_id":12345678901234567890,"span_id":42}',
    '{"msg":"o","trace_id":"1-5759e988-bd862e3fe1be46a994272793"}',
    '{"msg":"q","@timestamp_app":"old","@timestamp":"new"}',
    '{"msg":"r","span_id":"ZZZ","spanId":"00f067aa0ba902b7","span_id_original":1}',
    '{"msg":"esc \\u00e9 \\ud83d\\ude00 <>&"}',
    "{}",
    "[1,2,3]",
    "plain text trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
    "ERROR boom traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "    at com.x.Y.z(Y.java:1)",
    "Caused by: java.lang.IllegalStateException: bad",
    '{"msg":"p","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}',
    "Traceback (most recent call last):",
    '  File "x.py", line 1',
    "ValueError: nope",
    "main.main()",
    "goroutine 1 [running]:",
    'text with "quotes" and \\ backslash and \t tab  ',
    "ünïcödé spanId: \"00f067aa0ba902b7\" traceID='4bf92f3577b34da6a3ce929d0e0e4736'",
    "xtrace_id=4bf92f3577b34da6a3ce929d0e0e4736 dd.trace_id=555",
]


def _edge_files(d: Path) -> None:
    ts = [f"2026-11-24T10:00:00.{i * 1000:09d}Z" for i in range(len(PAYLOADS))]
    streams = ["stderr" if i % 3 == 0 else "stdout" for i in range(len(PAYLOADS))]
    with open(d / "d.log", "w") as f:
        for p, t, s in zip(PAYLOADS, ts, streams, strict=True):
            f.write(json.dumps({"log": p + "\n", "stream": s, "time": t}, separators=(",", ":")) + "\n")
        f.write('{"log":"{\\"msg\\":\\"split","stream":"stdout","time":"2026-11-24T10:00:01Z"}\n')
        f.write('{"log":"ted\\",\\"span_id\\":\\"00f067aa0ba902b7\\"}\\n","stream":"stdout",'
                '"time":"2026-11-24T10:00:02Z"}\n')
        f.write('{"time":"2026-11-24T10:00:03Z","stream":"stdout","log":"reordered\\n"}\n\n')
    with open(d / "c.log", "wb") as fb:
        for p, t, s in zip(PAYLOADS, ts, streams, strict=True):
            fb.write(f"{t} {s} F {p}\n".encode())
        fb.write(b'2026-11-24T10:00:01Z stdout P {"msg":"par\n2026-11-24T10:00:02Z stderr F other\n')
        fb.write(b'2026-11-24T10:00:03Z stdout F tial"}\n2026-11-24T10:00:04Z stdout F bad \xff\xfe\n')
        fb.write(b"2026-11-24T10:00:05Z stdout F\n2026-11-24T10:00:06Z stdout P unfinished at eof\n")


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline built without cgo (the Kafka compressor it adds plays no part here)."""
    if shutil.which("go") is None:
        unavailable("go is not installed: the Go baseline cannot be built")
    out = tmp_path_factory.mktemp("go") / "go-baseline"
    r = subprocess.run(["go", "build", "-o", str(out), "."], cwd=GO_DIR, capture_output=True,
                       text=True, env=GO_ENV, timeout=500)
    assert r.returncode == 0, f"go build failed:\n{r.stderr[-3000:]}"
    return out


def _records(cmd: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
    r = subprocess.run(cmd, capture_output=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]
    return {(x["log"]["file"]["path"], x["log"]["offset"]): x for x in recs}


def _compare(go: Path, include: str, tmp: Path) -> int:
    """Both agents on the same files; asserts equal records (read-time timestamps of malformed
    lines aside); returns how many records were compared."""
    t = _records([sys.executable, "-m", "agent", "tail", include, "--to", "stdout", "--once",
                  "--data-dir", str(tmp / "tailship"), "--workers", "0", "--no-progress"])
    g = _records([str(go), "-include", include, "-to", "stdout", "-once"])
    assert t.keys() == g.keys()
    for k in t:
        a, b = dict(t[k]), dict(g[k])
        if "malformed" in a["log"].get("flags", []):
            a.pop("@timestamp"), b.pop("@timestamp")  # the read time
        assert a == b, f"record at {k}:\ntailship {a}\ngo       {b}"
    return len(t)


def test_records_equal_tailship_on_edge_cases(go_binary: Path, tmp_path: Path) -> None:
    files = tmp_path / "edge"
    files.mkdir()
    _edge_files(files)
    n = _compare(go_binary, str(files / "*.log"), tmp_path)
    assert n == 2 * len(PAYLOADS) + 7, n
    print(f"go baseline: {n} edge-case records equal to tailship's")


def test_records_equal_tailship_on_generated_tree(go_binary: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    generate_tree(tree, seed=5, pods=4, lines=3000, fmt="mixed", avg_bytes=600, long_every=300,
                  stack_every=100, with_expected=False, clean=True)
    n = _compare(go_binary, str(tree / "containers" / "*.log"), tmp_path)
    assert n == 3000
    print(f"go baseline: {n} generated records equal to tailship's")


def test_checkpoints_end_where_the_files_end_and_a_restart_reads_nothing(
        go_binary: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    generate_tree(tree, seed=6, pods=3, lines=1500, fmt="mixed", avg_bytes=500, long_every=0,
                  stack_every=0, with_expected=False, clean=True)
    cmd = [str(go_binary), "-include", str(tree / "containers" / "*.log"), "-to", "null", "-once",
           "-data", str(tmp_path / "state")]
    first = json.loads(subprocess.run(cmd, capture_output=True, timeout=60, check=True).stdout)
    assert first["records"] == first["acked"] == 1500
    files = json.loads((tmp_path / "state" / "checkpoints.json").read_text())["files"]
    assert len(files) == 3
    for e in files.values():
        assert e["offset"] == os.path.getsize(e["path"]), e
    again = json.loads(subprocess.run(cmd, capture_output=True, timeout=60, check=True).stdout)
    assert again["lines"] == again["records"] == 0, again
    print(f"go baseline: {first['records']} records acknowledged, 3 checkpoints at end of file, "
          f"{again['records']} read again after a restart")


def test_go_unit_tests_pass(go_binary: Path) -> None:
    """The baseline's own Go tests (bench/go-baseline/*_test.go: a rotated file's reader keeps
    its fsnotify wake-up when the old reader lets go)."""
    r = subprocess.run(["go", "test", "-count=1", "./..."], cwd=GO_DIR, capture_output=True,
                       text=True, env=GO_ENV, timeout=500)
    assert r.returncode == 0, f"go test failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    assert "ok" in r.stdout, r.stdout
