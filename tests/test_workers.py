"""Worker processes (`workers = N`): file assignment, checkpoint hand-over between worker counts,
metrics merged into one scrape, a killed worker restarted without loss, SIGTERM drains all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import psutil
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from agent.checkpoints import CheckpointStore, repartition, worker_dir
from agent.discovery import owner
from agent.settings import Settings
from agent.workers import _cgroup_quota, merge, resolve_workers, worker_settings
from bench.generate import generate_tree
from pipelines.sinks.file import read_dir
from tests.conftest import free_port
from tests.crash import live_writer

TAILSHIP = [sys.executable, "-m", "agent"]


# -- units ----------------------------------------------------------------------------------------

def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(str(tmp_path)) == 2.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(str(tmp_path)) is None


def test_resolve_workers():
    s = Settings()
    s.workers = 3
    assert resolve_workers(s) == 3
    s.workers = 0
    assert resolve_workers(s) == min(8, len(os.sched_getaffinity(0)))
    s.sink.type = "stdout"  # one writer to a pipe: several processes would interleave lines
    s.workers = 4
    assert resolve_workers(s) == 1


def test_owner_is_stable_and_spreads_files():
    paths = [f"/var/log/containers/pod-{i}_ns_c-{i:064x}.log" for i in range(200)]
    first = [owner(p, 4) for p in paths]
    # the same in another interpreter (no per-process hash seed)
    code = "import sys; from agent.discovery import owner; print([owner(p, 4) for p in sys.argv[1:]])"
    r = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": "123"})
    assert orjson.loads(r.stdout) == first
    assert set(Counter(first)) == {0, 1, 2, 3} and min(Counter(first).values()) > 20
    assert {owner(p, 1) for p in paths} == {0}


def test_worker_settings_divide_memory_and_separate_state(tmp_path):
    s = Settings(data_dir=str(tmp_path))
    s.batch.memory_limit_bytes = 64 << 20
    s.buffer.max_size_bytes = 1 << 30
    s.buffer.path = str(tmp_path / "buf")
    s.sink.type = "file"
    w = worker_settings(s, 1, 4)
    assert w.data_dir == str(tmp_path / "worker-1")
    assert w.batch.memory_limit_bytes == 16 << 20 and w.buffer.max_size_bytes == 256 << 20
    assert w.buffer.path == str(tmp_path / "buf" / "worker-1")
    assert w.sink.path == str(tmp_path / "out")  # one output directory, files named per worker
    assert w.metrics.listen == "" and w.workers == 1
    assert s.batch.memory_limit_bytes == 64 << 20  # the original is untouched


def _store(d: str, entries: dict[str, tuple[int, str]]) -> None:
    os.makedirs(d, exist_ok=True)
    st = CheckpointStore(d, lambda _k, _n: None)
    st.load()
    for key, (offset, path) in entries.items():
        st.put(key, offset, path)
    st.persist()


def _load(d: str) -> dict[str, int]:
    st = CheckpointStore(d, lambda _k, _n: None)
    st.load()
    return {k: e["offset"] for k, e in st.entries.items()}


def test_repartition_moves_checkpoints_to_the_new_owner(tmp_path):
    data = str(tmp_path)
    paths = {f"k{i}": f"/logs/f{i}.log" for i in range(12)}
    _store(data, {k: (100 + i, p) for i, (k, p) in enumerate(paths.items())})  # a one-process run
    assert repartition(data, 3, owner) == 12
    for i in range(3):
        got = _load(worker_dir(data, i, 3))
        assert set(got) == {k for k, p in paths.items() if owner(p, 3) == i}
    assert _load(data) == {}
    assert repartition(data, 3, owner) == 0  # already in place: nothing moves
    # a file in two stores (an old copy left behind): the higher offset wins
    _store(worker_dir(data, 0, 3), {"k0": (5000, paths["k0"])})
    repartition(data, 1, owner)
    merged = _load(data)
    assert set(merged) == set(paths) and merged["k0"] == 5000 and merged["k5"] == 105
    assert all(_load(worker_dir(data, i, 3)) == {} for i in range(3))


def test_merge_sums_workers_and_keeps_the_largest_age():
    texts = []
    for lines, age, sends in ((10, 0.5, (0.01, 0.2)), (32, 2.0, (0.02,))):
        r = CollectorRegistry()
        PromCounter("tailship_input_lines_total", "lines", registry=r).inc(lines)
        c = PromCounter("tailship_files_total", "files", ["event"], registry=r)
        c.labels("discovered").inc(2)
        Gauge("tailship_checkpoint_age_seconds", "age", registry=r).set(age)
        h = Histogram("tailship_sink_send_seconds", "send", ["sink"], buckets=(0.05, 1.0), registry=r)
        for v in sends:
            h.labels("kafka").observe(v)
        texts.append(generate_latest(r).decode())
    fams = {f.name: f for f in text_string_to_metric_families(merge(texts).decode())}
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert val[("tailship_input_lines_total", ())] == 42
    assert val[("tailship_files_total", (("event", "discovered"),))] == 4
    assert val[("tailship_checkpoint_age_seconds", ())] == 2.0
    assert val[("tailship_sink_send_seconds_bucket", (("le", "0.05"), ("sink", "kafka")))] == 2
    assert val[("tailship_sink_send_seconds_bucket", (("le", "1.0"), ("sink", "kafka")))] == 3
    assert val[("tailship_sink_send_seconds_count", (("sink", "kafka"),))] == 3
    assert fams["tailship_sink_send_seconds"].type == "histogram"


# -- processes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("wtree")
    m = generate_tree(root, seed=21, pods=8, lines=16000, fmt="mixed", long_every=400, stack_every=150)
    return root, m


def _once(root: Path, tmp: Path, workers: int) -> list[dict]:
    out, data = tmp / f"out{workers}", tmp / f"data{workers}"
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(root / "containers" / "*.log"),
                        "--to", f"file:{out}", "--data-dir", str(data), "--workers", str(workers)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return [orjson.loads(x) for x in read_dir(out)]


@pytest.mark.timeout(240)
def test_one_and_two_workers_deliver_the_same_records(tree, tmp_path):
    root, m = tree
    one, two = _once(root, tmp_path, 1), _once(root, tmp_path, 2)
    assert len(one) == m.total_records
    key = lambda r: (r["log"]["file"]["path"], r["log"]["offset"])  # noqa: E731
    assert sorted(one, key=key) == sorted(two, key=key)
    # both workers wrote: their files are named apart in the one output directory
    names = {p.name.split("-")[2] for p in (tmp_path / "out2").iterdir()}
    assert names == {"w0", "w1"}
    # order within each file is kept
    for path in {key(r)[0] for r in two}:
        offsets = [r["log"]["offset"] for r in two if r["log"]["file"]["path"] == path]
        assert offsets == sorted(offsets)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _workers_of(sup: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The worker processes: children of the fork server, itself a child of the supervisor."""
    return [p for c in psutil.Process(sup.pid).children()
            if "forkserver" in " ".join(c.cmdline()) for p in c.children()]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_killed_worker_is_restarted_and_nothing_is_lost(tmp_path):
    """Two workers follow six growing files; one is killed with -9 mid-stream. The supervisor
    restarts it, it resumes from its checkpoints; /metrics sums both workers; SIGTERM drains
    both. Every line is delivered (copies allowed: at-least-once), each worker kept its files."""
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [logs / f"app-{i}.log" for i in range(6)]
    assert {owner(str(f), 2) for f in files} == {0, 1}
    out, data, port = tmp_path / "out", tmp_path / "data", free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
data_dir = "{data}"
workers = 2
checkpoint_interval_secs = 0.05
[source]
include = ["{logs}/*.log"]
poll_interval_ms = 20
scan_interval_secs = 0.2
[batch]
linger_ms = 20
[sink]
type = "file"
path = "{out}"
[metrics]
listen = "127.0.0.1:{port}"
""")
    stop = threading.Event()
    per_file = 6000
    writers = [threading.Thread(target=live_writer, args=(f, per_file, 3000, stop), daemon=True)
               for f in files]
    err = open(tmp_path / "agent.err", "wb")
    sup = subprocess.Popen([*TAILSHIP, "run", "--config", str(cfg)], stderr=err)
    try:
        for w in writers:
            w.start()
        _wait(lambda: len(_workers_of(sup)) == 2, 30, "two workers")
        _wait(lambda: _scrape(port).get(("tailship_input_lines_total", ()), 0) > 3000, 60,
              "lines read by the workers")
        victim = _workers_of(sup)[0]
        victim.kill()
        _wait(lambda: _scrape(port).get(("tailship_worker_restarts_total", (("cause", "exited"),))) == 1,
              30, "the restart counted")
        _wait(lambda: len(_workers_of(sup)) == 2 and victim.pid not in {p.pid for p in _workers_of(sup)},
              30, "a new worker")
        for w in writers:
            w.join(timeout=60)
        total = per_file * len(files)
        # one scrape holds both workers' lines: each worker reads only its own files
        _wait(lambda: _scrape(port).get(("tailship_input_lines_total", ()), 0) >= total, 60,
              "every line read, summed over the workers")
        got = _scrape(port)
        assert got[("tailship_workers", ())] == 2
        assert got[("tailship_files_open", ())] == len(files)
        pids = [p.pid for p in _workers_of(sup)]
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0, (tmp_path / "agent.err").read_text()
    finally:
        stop.set()
        if sup.poll() is None:
            sup.kill()
        err.close()
    assert not [p for p in pids if psutil.pid_exists(p)], "a worker outlived the supervisor"
    recs = [orjson.loads(x) for x in read_dir(out)]
    by_file: dict[str, Counter[int]] = {}
    for r in recs:
        by_file.setdefault(r["log"]["file"]["path"], Counter())[int(r["message"].split()[1])] += 1
    assert set(by_file) == {str(f) for f in files}
    for f, counts in by_file.items():
        assert set(counts) == set(range(per_file)), f"{f}: lines lost"
    for i in range(2):  # each worker kept the checkpoints of its own files, and only those
        stored = CheckpointStore(worker_dir(str(data), i, 2), lambda _k, _n: None)
        stored.load()
        mine = {str(f) for f in files if owner(str(f), 2) == i}
        assert {e["path"] for e in stored.entries.values()} == mine
    log = (tmp_path / "agent.err").read_text()
    assert "died (signal 9); restarting it" in log


@pytest.mark.timeout(120)
def test_stuck_worker_is_killed_and_restarted(tmp_path):
    """A worker that stops answering (SIGSTOP: its event loop cannot run) is killed after
    worker_stuck_secs and restarted; the restart is counted as `stuck`."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one\n")
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
data_dir = "{tmp_path / 'data'}"
workers = 2
worker_stuck_secs = 2
[source]
include = ["{logs}/*.log"]
[sink]
type = "null"
[metrics]
listen = "127.0.0.1:{port}"
""")
    err = open(tmp_path / "agent.err", "wb")
    sup = subprocess.Popen([*TAILSHIP, "run", "--config", str(cfg)], stderr=err)
    try:
        _wait(lambda: len(_workers_of(sup)) == 2, 30, "two workers")
        _wait(lambda: ("tailship_workers", ()) in _scrape(port), 30, "metrics served")
        victim = _workers_of(sup)[0]
        victim.suspend()
        _wait(lambda: _scrape(port).get(("tailship_worker_restarts_total", (("cause", "stuck"),))) == 1,
              30, "the stuck worker restarted")
        assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
        _wait(lambda: len(_workers_of(sup)) == 2, 30, "two workers again")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
        err.close()
    assert "has not answered for" in (tmp_path / "agent.err").read_text()
