"""Worker processes (`workers = N`): file assignment, checkpoint hand-over between worker counts,
metrics merged into one scrape, a killed worker restarted without loss, SIGTERM drains all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from agent.filesource.checkpoints import CheckpointStore, repartition
from agent.filesource.discovery import owner
from agent.filesource.identity import FileId
from agent.settings import Settings
from agent.supervisor.cpus import _cgroup_quota, resolve_workers
from agent.supervisor.exposition import RUN_FAMILIES, RunTotals, merge, summarize
from agent.supervisor.worker import worker_settings
from bench.generate import generate_tree
from pipelines.layout import worker_dir
from pipelines.sinks.config import SinkSettings
from pipelines.sinks.file import read_dir
from tests.conftest import free_port, wait_for
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
    inodes = [(64769, 1_000_000 + i) for i in range(200)]
    first = [owner(dev, ino, 4) for dev, ino in inodes]
    # the same in another interpreter (no per-process hash seed)
    code = ("import sys; from agent.filesource.discovery import owner; "
            "print([owner(64769, int(i), 4) for i in sys.argv[1:]])")
    r = subprocess.run([sys.executable, "-c", code, *(str(i) for _, i in inodes)], capture_output=True,
                       text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert orjson.loads(r.stdout) == first
    assert set(Counter(first)) == {0, 1, 2, 3} and min(Counter(first).values()) > 20
    assert {owner(dev, ino, 1) for dev, ino in inodes} == {0}


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


def test_worker_settings_divide_each_sinks_memory_limit():
    """A sink's own budget is divided like the shared one: a worker's sink budget above its
    shared budget would never bind, and a stalled sink would take the whole shared budget."""
    s = Settings()
    s.batch.memory_limit_bytes = 256 << 20
    s.sinks = {"a": SinkSettings(type="null", memory_limit_bytes=64 << 20),
               "b": SinkSettings(type="null")}
    w = worker_settings(s, 0, 8)
    assert w.batch.memory_limit_bytes == 32 << 20
    assert w.sinks["a"].memory_limit_bytes == 8 << 20
    assert w.sinks["b"].memory_limit_bytes == 0  # still half of the worker's shared budget
    assert s.sinks["a"].memory_limit_bytes == 64 << 20


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
    return {k: e.offset for k, e in st.entries.items()}


def _owner_of(key: str, workers: int) -> int:
    fid = FileId.parse(key)
    return owner(fid.dev, fid.ino, workers)


def test_repartition_moves_checkpoints_to_the_new_owner(tmp_path):
    data = str(tmp_path)
    keys = {f"2049:{7000 + i}:{i:016x}": f"/logs/f{i}.log" for i in range(12)}
    _store(data, {k: (100 + i, p) for i, (k, p) in enumerate(keys.items())})  # a one-process run
    assert repartition(data, 3, owner) == 12
    for i in range(3):
        got = _load(worker_dir(data, i, 3))
        assert set(got) == {k for k in keys if _owner_of(k, 3) == i}
    assert _load(data) == {}
    assert repartition(data, 3, owner) == 0  # already in place: nothing moves
    # a file in two stores (an old copy left behind): the higher offset wins
    k0, k5 = list(keys)[0], list(keys)[5]
    _store(worker_dir(data, (_owner_of(k0, 3) + 1) % 3, 3), {k0: (5000, keys[k0])})
    repartition(data, 1, owner)
    merged = _load(data)
    assert set(merged) == set(keys) and merged[k0] == 5000 and merged[k5] == 105
    assert all(_load(worker_dir(data, i, 3)) == {} for i in range(3))


def test_repartition_sets_an_unreadable_store_aside(tmp_path):
    data = str(tmp_path)
    _store(data, {"2049:1:aa": (10, "/logs/a.log")})
    os.makedirs(worker_dir(data, 1, 2))
    Path(worker_dir(data, 1, 2), "checkpoints.json").write_text("{not json")
    repartition(data, 2, owner)
    assert list(Path(worker_dir(data, 1, 2)).glob("checkpoints.json.corrupt-*"))
    assert {**_load(worker_dir(data, 0, 2)), **_load(worker_dir(data, 1, 2))} == {"2049:1:aa": 10}


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


def _worker_exposition(lines: int, files: int, cpu: float, unacked: int, events: dict[str, int]) -> str:
    """The exposition of a worker's own registry (`agent.metrics.Metrics`, with `RunTotals`)."""
    from agent.metrics import Metrics
    from agent.runtime import Summary

    m = Metrics()
    m.lines_read.inc(lines)
    m.bytes_read.inc(lines * 10)
    m.records_sent.inc(lines - unacked)
    m.bytes_sent.inc((lines - unacked) * 12)
    m.batches_sent.inc(3)
    for name, n in events.items():
        m.event(name, n)
    m.registry.register(RunTotals(lambda: Summary(files=files, cpu_secs=cpu, unacked_records=unacked)))
    return generate_latest(m.registry).decode()


def test_the_run_summary_is_read_from_the_expositions_and_carried_like_the_counters():
    """The supervisor's run summary comes from the workers' expositions: summed over the workers;
    over a restart (the dead worker's exposition kept as counters only) lines, records, events
    and CPU seconds are carried, files and unacknowledged records are not; the tailship_run_*
    families that carry them are not on the /metrics page."""
    w0 = _worker_exposition(100, 2, 1.5, 4, {"malformed": 2, "file_discovered": 2})
    w1 = _worker_exposition(30, 1, 0.5, 0, {"malformed": 1})
    s = summarize([w0, w1])
    assert (s.lines_read, s.bytes_read, s.records_sent, s.bytes_sent, s.batches_sent) == \
        (130, 1300, 126, 1512, 6)
    assert (s.files, s.unacked_records, s.cpu_secs) == (3, 4, 2.0)
    assert s.events == {"malformed": 3, "file_discovered": 2}
    # worker 0 died and was restarted; the new one read 5 lines of one file so far
    dead = merge([w0], counters_only=True).decode()
    s = summarize([dead, _worker_exposition(5, 1, 0.25, 5, {}), w1])
    assert (s.lines_read, s.records_sent, s.files, s.unacked_records, s.cpu_secs) == (135, 126, 2, 5, 2.25)
    assert s.events == {"malformed": 3, "file_discovered": 2}
    text = merge([dead, w1], leave_out=RUN_FAMILIES).decode()
    page = {f.name for f in text_string_to_metric_families(text)}
    assert "tailship_input_lines" in page and not page & RUN_FAMILIES
    assert RUN_FAMILIES <= {f.name for f in text_string_to_metric_families(w0)}


# -- processes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("wtree")
    m = generate_tree(root, seed=21, pods=8, lines=16000, fmt="mixed", long_every=400, stack_every=150)
    return root, m


def _once(root: Path, tmp: Path, workers: int) -> tuple[list[dict], str]:
    """The records delivered, and the run summary's first line."""
    out, data = tmp / f"out{workers}", tmp / f"data{workers}"
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(root / "containers" / "*.log"),
                        "--to", f"file:{out}", "--data-dir", str(data), "--workers", str(workers)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    [summary] = [x for x in r.stderr.decode().splitlines() if x.startswith("tailship: ") and "file(s)" in x]
    return [orjson.loads(x) for x in read_dir(out)], summary


@pytest.mark.timeout(240)
def test_one_and_two_workers_deliver_the_same_records(tree, tmp_path):
    root, m = tree
    (one, one_summary), (two, two_summary) = _once(root, tmp_path, 1), _once(root, tmp_path, 2)
    assert len(one) == m.total_records
    # the supervisor's summary (from the workers' expositions) counts what one process counts:
    # files, lines and bytes read, records acknowledged (batches differ)
    assert f"{m.total_records:,} records in" in two_summary
    assert two_summary.split(" in ")[0] == one_summary.split(" in ")[0], (one_summary, two_summary)
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


def _distinct(out: Path) -> set[tuple[str, int]]:
    """(file, offset) of every record delivered so far."""
    recs = (orjson.loads(x) for x in read_dir(out)) if out.exists() else iter(())
    return {(r["log"]["file"]["path"], r["log"]["offset"]) for r in recs}


def _workers_of(sup: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The worker processes: children of the fork server, itself a child of the supervisor."""
    return [p for c in psutil.Process(sup.pid).children()
            if "forkserver" in " ".join(c.cmdline()) for p in c.children()]


@contextlib.contextmanager
def _supervisor(tmp_path: Path, body: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`tailship run` with two workers, the TOML `body` (its top-level keys first) and /metrics
    on a free port, once both workers run and /metrics answers: (the supervisor, the port). Its
    stderr goes to `agent.err`; it is killed on the way out if it still runs."""
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\nworkers = 2\n{body}\n'
                   f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    err = open(tmp_path / "agent.err", "wb")  # noqa: SIM115 - closed below, after the process
    sup = subprocess.Popen([*TAILSHIP, "run", "--config", str(cfg)], stderr=err)
    try:
        wait_for(lambda: len(_workers_of(sup)) == 2, 30, "two workers")
        wait_for(lambda: ("tailship_workers", ()) in _scrape(port), 30, "metrics served")
        yield sup, port
    finally:
        if sup.poll() is None:
            sup.kill()
        err.close()


@pytest.mark.timeout(240)
def test_killed_worker_is_restarted_and_nothing_is_lost(tmp_path):
    """Two workers follow six growing files; one is killed with -9 mid-stream. The supervisor
    restarts it, it resumes from its checkpoints; /metrics sums both workers; SIGTERM drains
    both. Every line is delivered (copies allowed: at-least-once), each worker kept its files."""
    logs = tmp_path / "logs"
    logs.mkdir()
    stage = tmp_path / "stage"
    stage.mkdir()
    files = [logs / f"app-{i}.log" for i in range(6)]
    for i, f in enumerate(files):  # three (empty) files per worker
        _inode_of_worker(stage, "", i % 2, 2).rename(f)
    owners = {str(f): owner(f.stat().st_dev, f.stat().st_ino, 2) for f in files}
    out, data = tmp_path / "out", tmp_path / "data"
    stop = threading.Event()
    per_file = 6000
    writers = [threading.Thread(target=live_writer, args=(f, per_file, 3000, stop), daemon=True)
               for f in files]
    with _supervisor(tmp_path, f"""checkpoint_interval_secs = 0.05
[source]
include = ["{logs}/*.log"]
poll_interval_ms = 20
scan_interval_secs = 0.2
[batch]
linger_ms = 20
[sink]
type = "file"
path = "{out}"
""") as (sup, port):
        try:
            for w in writers:
                w.start()
            # one scrape sums both workers: each has 3 of the 6 files open
            wait_for(lambda: _scrape(port).get(("tailship_files_open", ()), 0) == len(files), 30,
                     "both workers' files in one scrape")
            wait_for(lambda: _scrape(port).get(("tailship_input_lines_total", ()), 0) > 3000, 60,
                     "lines read by the workers")
            victim = _workers_of(sup)[0]
            victim.kill()
            restarts = ("tailship_worker_restarts_total", (("cause", "exited"),))
            wait_for(lambda: _scrape(port).get(restarts) == 1, 30, "the restart counted")
            wait_for(lambda: len(_workers_of(sup)) == 2
                     and victim.pid not in {p.pid for p in _workers_of(sup)}, 30, "a new worker")
            for w in writers:
                w.join(timeout=60)
            total = per_file * len(files)
            wait_for(lambda: len(_distinct(out)) >= total, 60, "every line delivered")
            got = _scrape(port)
            # counters stay monotonic across the restart: at least what the live workers read
            assert got[("tailship_input_lines_total", ())] > 0
            assert got[("tailship_workers", ())] == 2
            assert got[("tailship_files_open", ())] == len(files)
            pids = [p.pid for p in _workers_of(sup)]
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(timeout=60) == 0, (tmp_path / "agent.err").read_text()
        finally:
            stop.set()
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
        mine = {f for f, o in owners.items() if o == i}
        assert {e.path for e in stored.entries.values()} == mine
    log = (tmp_path / "agent.err").read_text()
    assert "died (signal 9); restarting it" in log


@pytest.mark.timeout(120)
def test_stuck_worker_is_killed_and_restarted(tmp_path):
    """A worker that stops answering (SIGSTOP: its event loop cannot run) is killed after
    worker_stuck_secs and restarted; the restart is counted as `stuck`."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one\n")
    with _supervisor(tmp_path, f"""worker_stuck_secs = 2
[source]
include = ["{logs}/*.log"]
[sink]
type = "null"
""") as (sup, port):
        victim = _workers_of(sup)[0]
        victim.suspend()
        wait_for(lambda: _scrape(port).get(("tailship_worker_restarts_total", (("cause", "stuck"),))) == 1,
                 30, "the stuck worker restarted")
        assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
        wait_for(lambda: len(_workers_of(sup)) == 2, 30, "two workers again")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
    assert "has not answered for" in (tmp_path / "agent.err").read_text()


@pytest.mark.timeout(120)
def test_concurrent_scrapes_while_a_worker_is_silent(tmp_path):
    """Three scrapes at once while one worker's loop cannot run (SIGSTOP, short of the stuck
    deadline): each answers, and the silent worker is represented by its latest exposition
    (its files still count in `tailship_files_open`), so the sums do not drop; after it runs
    again the scrapes are answered by both workers live."""
    logs = tmp_path / "logs"
    logs.mkdir()
    stage = tmp_path / "stage"
    stage.mkdir()
    for i in range(6):  # three files per worker
        _inode_of_worker(stage, "one\n", i % 2, 2).rename(logs / f"app-{i}.log")
    key = ("tailship_files_open", ())
    with _supervisor(tmp_path, f"""worker_stuck_secs = 600
[source]
include = ["{logs}/*.log"]
[sink]
type = "null"
""") as (sup, port):
        wait_for(lambda: _scrape(port).get(key) == 6, 30, "both workers' files in one scrape")
        victim = _workers_of(sup)[0]
        victim.suspend()
        try:
            with ThreadPoolExecutor(3) as pool:
                got = list(pool.map(lambda _: _scrape(port), range(3)))
        finally:
            victim.resume()
        assert [g.get(key) for g in got] == [6, 6, 6]
        wait_for(lambda: _scrape(port).get(key) == 6, 30, "a scrape with the worker running again")
        assert victim.is_running() and victim.status() != psutil.STATUS_STOPPED
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
    assert "has not answered" not in (tmp_path / "agent.err").read_text()


# -- review findings ------------------------------------------------------------------------------

@pytest.mark.timeout(60)
async def test_file_renamed_to_a_matching_name_is_read_once_across_workers(tmp_path):
    """`app.log` renamed to `app.0.log`, which `*.log` still matches: the file keeps its inode,
    so it stays with the worker that reads it, and no other worker reads it again."""
    from agent.runtime import Agent
    from tests.conftest import CollectSink, fast_settings, running, wait_until

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("".join(f"old {i}\n" for i in range(500)))
    sinks, agents = [CollectSink(), CollectSink()], []
    scans = [0, 0]
    for i in range(2):
        # no inotify: with it, a scan with no event since the last one is skipped
        s = fast_settings(tmp_path / f"w{i}", [str(logs / "*.log")], inotify=False)
        agent = Agent(s, sinks[i], shard=(i, 2))
        discover = agent.source.discover

        async def counted(i: int = i, discover=discover) -> None:  # type: ignore[no-untyped-def]
            await discover()
            scans[i] += 1
        agent.source.discover = counted  # type: ignore[method-assign]
        agents.append(agent)
    async with running(agents[0]), running(agents[1]):
        await wait_until(lambda: sum(len(k.records) for k in sinks) == 500, what="the first file")
        os.rename(log, logs / "app.0.log")
        log.write_text("".join(f"new {i}\n" for i in range(300)))
        await wait_until(lambda: sum(len(k.records) for k in sinks) >= 800, what="the new file")
        before = list(scans)
        await wait_until(lambda: all(n >= b + 5 for n, b in zip(scans, before, strict=True)),
                         what="five more scans by each worker")
    got = [r["message"] for k in sinks for r in k.records]
    assert sorted(got) == sorted([f"old {i}" for i in range(500)] + [f"new {i}" for i in range(300)])


def test_a_disk_buffer_of_another_worker_count_stops_the_start(tmp_path):
    from agent.state import StartupError, check_buffers

    s = Settings(data_dir=str(tmp_path))
    s.buffer.type = "disk"
    seg = tmp_path / "worker-1" / "buffer" / "seg-00000000000000000001.tsb"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"x" * 100)
    check_buffers(s, 2)  # its own workers' buffers: fine
    with pytest.raises(StartupError, match=r"worker-1/buffer holds 100 bytes written with at least 2 "):
        check_buffers(s, 1)
    seg.write_bytes(b"")
    check_buffers(s, 1)  # empty: nothing would be left behind
    (tmp_path / "buffer").mkdir()
    (tmp_path / "buffer" / "seg-00000000000000000001.tsb").write_bytes(b"y")
    with pytest.raises(StartupError, match=r"written with workers = 1"):
        check_buffers(s, 2)


@pytest.mark.timeout(30)
def test_a_stop_before_the_workers_started_starts_none(tmp_path):
    import asyncio

    from agent.supervisor.supervisor import Supervisor

    s = Settings(data_dir=str(tmp_path))
    s.metrics.listen = ""
    sup = Supervisor(s, 2)

    async def go() -> int:
        sup.request_stop()
        return await sup.run()

    assert asyncio.run(go()) == 0
    assert all(w.proc is None for w in sup.workers)


@pytest.mark.timeout(120)
def test_restarted_worker_reads_files_created_while_it_was_down_from_their_head(tmp_path):
    """read_from = "tail" applies to the agent's first start only: a restarted worker reads a
    file that appeared while it was down (no checkpoint) from its head."""
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out"
    with _supervisor(tmp_path, f"""[source]
include = ["{logs}/*.log"]
read_from = "tail"
poll_interval_ms = 20
scan_interval_secs = 0.1
[batch]
linger_ms = 20
[sink]
type = "file"
path = "{out}"
""") as (sup, _port):
        victim = _workers_of(sup)[0]
        index = 0 if victim.pid == min(p.pid for p in _workers_of(sup)) else 1  # started first
        victim.suspend()  # it cannot scan: nothing it owns is opened until it is restarted
        victim.kill()
        # a file created while the worker is down, owned by it (by inode)
        for n in range(50):
            f = logs / f"new-{n}.log"
            f.write_text("".join(f"line {i}\n" for i in range(100)))
            if owner(f.stat().st_dev, f.stat().st_ino, 2) == index:
                break  # (the others stay: deleting them would hand their inode to the next)
        else:
            raise AssertionError("no file name landed on the killed worker")
        def mine() -> set[int]:
            return {off for path, off in _distinct(out) if path == str(f)}
        wait_for(lambda: len(mine()) == 100, 30, "the new file read from its head")
        assert mine() >= {len("line 0\n") * i for i in range(10)}  # its first lines too
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0


def _inode_of_worker(stage: Path, text: str, worker: int, workers: int) -> Path:
    """A file holding `text`, made in `stage` (outside the watched directories) until its inode
    belongs to `worker`: renamed into place, it is that worker's file."""
    for attempt in range(64):
        f = stage / str(attempt)
        f.write_text(text)
        if owner(f.stat().st_dev, f.stat().st_ino, workers) == worker:
            return f
    raise AssertionError(f"64 inodes and none of worker {worker}")


class _Kubelet:
    """One container under pods/ with its link under containers/, and the agents (one per
    worker, in this process) that read it."""

    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.pod, self.links, self.stage = (tmp_path / "pods" / "ns_web_uid" / "app",
                                            tmp_path / "containers", tmp_path / "stage")
        for d in (self.pod, self.links, self.stage):
            d.mkdir(parents=True)
        self.first = self.links / "web_ns_app-aaaa.log"
        (self.pod / "0.log").write_text("".join(f"a {i}\n" for i in range(10)))
        self.first.symlink_to(self.pod / "0.log")
        st = (self.pod / "0.log").stat()
        self.reader = owner(st.st_dev, st.st_ino, workers)  # the worker that reads 0.log
        self.tmp_path, self.workers = tmp_path, workers

    def agents(self, sinks: list[Any], **source: Any) -> list[Any]:
        from agent.runtime import Agent
        from tests.conftest import fast_settings

        out = []
        for i in range(self.workers):
            s = fast_settings(self.tmp_path / f"w{i}", [str(self.links / "*.log")], **source)
            s.shutdown_timeout_secs = 0.5
            out.append(Agent(s, sinks[i], shard=(i, self.workers)))
        return out

    def rotate_and_restart(self, new_owner: int) -> None:
        """Without an await: no scan sees the new 0.log while the first link leads to it."""
        new = _inode_of_worker(self.stage, "".join(f"b {i}\n" for i in range(30)), new_owner, self.workers)
        os.rename(self.pod / "0.log", self.pod / "0.log.20261124-100001")
        os.rename(new, self.pod / "0.log")
        self.first.unlink()
        (self.pod / "1.log").write_text("".join(f"c {i}\n" for i in range(5)))
        (self.links / "web_ns_app-bbbb.log").symlink_to(self.pod / "1.log")


EXPECTED_AFTER_RESTART = sorted([f"a {i}" for i in range(10)] + [f"b {i}" for i in range(30)]
                                + [f"c {i}" for i in range(5)])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_container_restart_right_after_a_rotation_loses_nothing(tmp_path, workers):
    """CI found this (tests/agent/filesource/test_kubelet.py, 400 lines lost): the kubelet rotates
    `0.log` and the new `0.log` gets lines; before any scan has seen it, the container restarts and
    its link is replaced by one to `1.log`. No include pattern leads to the new `0.log` any more: it is
    found as the last target of the link that went away and read from its head, under that
    link's name, by the worker that owns it (with two workers, the one that did not read the
    file before it)."""
    from tests.conftest import CollectSink, running, wait_until

    kubelet = _Kubelet(tmp_path, workers)
    sinks = [CollectSink() for _ in range(workers)]
    agents = kubelet.agents(sinks, scan_interval_secs=60.0)
    new_owner = (kubelet.reader + 1) % workers

    def got() -> list[dict]:
        return [r for k in sinks for r in k.records]
    async with contextlib.AsyncExitStack() as stack:
        for agent in agents:
            await stack.enter_async_context(running(agent))
        await wait_until(lambda: len(got()) == 10, what="the first file")
        kubelet.rotate_and_restart(new_owner)
        await wait_until(lambda: len(got()) >= 45, what="the new 0.log and 1.log")
        assert agents[new_owner].metrics.events["file_rotated_unseen"] == 1
    assert sorted(r["message"] for r in got()) == EXPECTED_AFTER_RESTART
    b = [r for r in sinks[new_owner].records if r["message"].startswith("b")]
    assert len(b) == 30 and {r["log"]["file"]["path"] for r in b} == {str(kubelet.first)}


@pytest.mark.timeout(60)
async def test_a_left_behind_file_read_before_a_restart_is_read_after_it(tmp_path):
    """The same, and the agent stops (the sink is down) before the new 0.log is delivered: at
    the next start no link leads to it, and it is found at its last real path by its checkpoint
    (not only beside it) and read from there."""
    from tests.conftest import CollectSink, running, wait_until

    kubelet = _Kubelet(tmp_path, 1)
    sink = CollectSink()
    [agent] = kubelet.agents([sink], scan_interval_secs=60.0)
    async with running(agent):
        await wait_until(lambda: len(sink.records) == 10, what="the first file")
        sink.down = True
        kubelet.rotate_and_restart(0)
        await wait_until(lambda: agent.metrics.events["file_rotated_unseen"] == 1, what="the new 0.log found")
        await wait_until(lambda: agent.summary().lines_read >= 45, what="both new files read")
    sink.down = False
    [again] = kubelet.agents([sink], scan_interval_secs=60.0)
    async with running(again):
        await wait_until(lambda: len(sink.records) >= 45, what="the new 0.log and 1.log after the restart")
    assert sorted(r["message"] for r in sink.records) == EXPECTED_AFTER_RESTART
    assert again.metrics.events["file_renamed_while_stopped"] == 1


@pytest.mark.timeout(60)
async def test_a_rotation_wakes_the_worker_that_owns_the_new_file(tmp_path):
    """The kubelet rotates a file of one worker in its pod directory; the new `0.log` belongs to
    the other worker (by its inode), whose discovery is woken by inotify on that directory,
    not left to its periodic scan (a minute here)."""
    from tests.conftest import CollectSink, running, wait_until

    kubelet = _Kubelet(tmp_path, 2)
    first, pod = kubelet.reader, kubelet.pod
    new = _inode_of_worker(kubelet.stage, "".join(f"b {i}\n" for i in range(30)), 1 - first, 2)
    sinks = [CollectSink(), CollectSink()]
    agents = kubelet.agents(sinks, scan_interval_secs=60.0)
    async with running(agents[0]), running(agents[1]):
        await wait_until(lambda: len(sinks[first].records) == 10, what="the first file")
        await wait_until(lambda: all(a.source._targets for a in agents), what="both workers' first scans")
        os.rename(pod / "0.log", pod / "0.log.20261124-100001")
        os.rename(new, pod / "0.log")
        await wait_until(lambda: len(sinks[1 - first].records) == 30,
                         what="the new 0.log, by the other worker")
    assert [r["message"] for r in sinks[1 - first].records] == [f"b {i}" for i in range(30)]
    assert agents[1 - first].metrics.events["file_rotated_unseen"] == 0
