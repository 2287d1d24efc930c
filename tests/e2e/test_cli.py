"""End to end through the real CLI in separate processes: stdout, file sink, validate, crashes."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.generate import Manifest, generate_tree
from pipelines.sinks.file import read_dir
from tests.conftest import seq_of, state_files
from tests.crash import kill_while_writing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TAILSHIP = [sys.executable, "-m", "agent"]


def check_records(records: list[dict], m: Manifest) -> None:
    """Every generated record exactly once, with its file's metadata and expected trace context."""
    by_link = {f.link: f for f in m.files}
    seqs = Counter(seq_of(r) for r in records)
    assert sorted(seqs) == list(range(m.total_records))
    assert max(seqs.values()) == 1
    for r in records:
        f = by_link[r["log"]["file"]["path"]]
        assert f.seq_first <= seq_of(r) <= f.seq_last
        assert r["kubernetes"] == {"namespace": f.namespace, "pod": f.pod, "pod_uid": f.pod_uid,
                                   "container": f.container, "container_id": f.container_id}
        exp_tid, exp_sid, _ = m.expected[seq_of(r)]
        assert (r.get("trace_id"), r.get("span_id")) == (exp_tid, exp_sid)
        assert r["stream"] in ("stdout", "stderr") and r["@timestamp"].startswith("2026-11-24T")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("tree")
    return root, generate_tree(root, seed=11, pods=5, lines=4000, fmt="mixed", long_every=300,
                               stack_every=150, with_expected=True)


def test_tail_once_to_stdout(tree):
    """`tail --once GLOB --to stdout` prints every line exactly once with the right fields."""
    root, m = tree
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(root / "containers" / "*.log"), "--to", "stdout"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    check_records([orjson.loads(x) for x in r.stdout.splitlines()], m)
    assert f"{m.total_records:,} records" in r.stderr.decode()


def test_tail_once_to_file_sink(tree, tmp_path):
    """`tail --once --to file:DIR` writes zstd NDJSON with every line exactly once."""
    root, m = tree
    out = tmp_path / "out"
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(root / "containers"), "--to", f"file:{out}"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    check_records([orjson.loads(x) for x in read_dir(out)], m)


def test_run_once_with_default_config(tree, tmp_path):
    """The shipped config/agent.toml, pointed at a tree by env vars, ships everything to files."""
    root, m = tree
    env = {**os.environ, "TAILSHIP_LOG_ROOT": str(root), "TAILSHIP_DATA_DIR": str(tmp_path / "data")}
    cfg = Path(__file__).resolve().parents[2] / "config" / "agent.toml"
    r = subprocess.run([*TAILSHIP, "run", "--config", str(cfg), "--once", "--metrics-listen", ""], env=env,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    check_records([orjson.loads(x) for x in read_dir(tmp_path / "data" / "out")], m)
    assert state_files(tmp_path / "data", "checkpoints.json")


def test_validate_reports_every_problem(tmp_path):
    """`tailship validate` on a config with five mistakes prints five messages and exits 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dir = 3\nshutdown_timeout_secs = -1\n[source]\nread_from = "middle"\n'
                   'includ = ["x"]\n[batch]\nlinger_ms = "soon"\n')
    r = subprocess.run([*TAILSHIP, "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    for key in ("data_dir", "shutdown_timeout_secs", "source.read_from", "source.includ",
                "batch.linger_ms"):
        assert re.search(rf"^{re.escape(key)}: ", r.stderr, re.M), (key, r.stderr)
    assert "5 problem(s)" in r.stderr


def test_unwritable_data_dir_is_a_clear_startup_error(tmp_path):
    """A data directory that cannot be created fails at start with exit 3 and names it."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    log = tmp_path / "a.log"
    log.write_text("hello\n")
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(log), "--to", "null", "--data-dir",
                        str(blocker / "data")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert str(blocker / "data") in r.stderr and "not usable" in r.stderr


def test_sigterm_drains_and_exits_zero(tmp_path):
    """SIGTERM stops a following agent cleanly: exit 0, checkpoints written, lines shipped."""
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    out = tmp_path / "out"
    p = subprocess.Popen([*TAILSHIP, "tail", str(log), "--to", f"file:{out}", "--data-dir",
                          str(tmp_path / "d")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or len(read_dir(out)) < 100):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()
    assert len(read_dir(out)) == 100
    assert state_files(tmp_path / "d", "checkpoints.json")


def test_kill_9_repeatedly_loses_nothing(tmp_path):
    """kill -9 mid-stream several times while a file grows, restart each time: nothing is lost."""
    root = tmp_path / "tree"
    m = generate_tree(root, seed=5, pods=3, lines=30000, fmt="mixed", long_every=1000,
                      stack_every=0, with_expected=False)
    live = root / "containers" / "live.log"
    out, data = tmp_path / "out", tmp_path / "data"
    cmd = [*TAILSHIP, "tail", str(root / "containers" / "*.log"), "--to", f"file:{out}",
           "--data-dir", str(data)]
    live_total = 40000
    kills = kill_while_writing(cmd, live, live_total, seed=42, pause=(0.5, 1.2))
    r = subprocess.run([*cmd, "--once"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    recs = [orjson.loads(x) for x in read_dir(out)]
    counts = Counter(seq_of(x) for x in recs if not x.get("message", "").startswith("live "))
    live_counts = Counter(int(x["message"].split()[1]) for x in recs
                          if x.get("message", "").startswith("live "))
    assert set(counts) == set(range(m.total_records)), "pre-written lines lost"
    assert set(live_counts) == set(range(live_total)), "live lines lost"
    dupes = sum(c - 1 for c in counts.values()) + sum(c - 1 for c in live_counts.values())
    print(f"kill -9 x{kills}: {m.total_records + live_total} lines, {dupes} duplicates")
    assert max([*counts.values(), *live_counts.values()]) <= kills + 1  # at most once per run


def test_second_signal_forces_exit(tmp_path):
    """With the sink stuck (nobody reads stdout), SIGTERM waits to drain; a second one exits 130."""
    log = tmp_path / "a.log"
    log.write_text("".join(f"{'y' * 500} {i}\n" for i in range(5000)))  # far more than a pipe holds
    p = subprocess.Popen([*TAILSHIP, "tail", str(log), "--to", "stdout", "--data-dir", str(tmp_path / "d")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)  # records reached the pipe (unread)
        assert ready, "no output within 20s"
        p.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.0)  # draining: still waiting for the stuck sink
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 130
    finally:
        p.kill()
        _, err = p.communicate()
    assert b"SIGTERM again: exiting without draining" in err


def test_progress_line_on_a_terminal(tmp_path):
    """On a terminal, `tail` shows a live progress line and the summary."""
    import pty

    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    master, slave = pty.openpty()
    p = subprocess.Popen([*TAILSHIP, "tail", str(log), "--to", "null", "--data-dir", str(tmp_path / "d")],
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 20
    try:
        while b"lines/s" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)
        os.close(master)
    assert b"lines/s" in seen and b"MB/s" in seen
    assert p.returncode == 0


def test_version():
    """--version prints the version."""
    r = subprocess.run([*TAILSHIP, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("tailship 0.")


def test_once_reads_tiny_file_without_newline(tmp_path):
    """--once ships a short file whose only line has no newline (no fingerprint wait)."""
    log = tmp_path / "tiny.log"
    log.write_text("just this")
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(log), "--to", "stdout"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    [rec] = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert rec["message"] == "just this"
