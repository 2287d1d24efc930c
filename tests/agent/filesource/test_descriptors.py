"""Descriptors: the soft limit is raised and reported; with more files than descriptors, files
are taken in turns and every line of every file is shipped; running out of descriptors is
logged, counted and retried, never taken for a file that vanished."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agent.filesource.descriptors import Slots, default_max_open_files, raise_limit
from pipelines.sinks.file import read_dir
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TAILSHIP = [sys.executable, "-m", "agent"]
LIMIT = 100
FILES = 150


def limited(soft: int, hard: int):  # type: ignore[no-untyped-def]
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return set_limit


def test_the_soft_limit_is_raised_to_the_hard_one():
    code = "from agent.filesource.descriptors import raise_limit; print(*raise_limit())"
    r = subprocess.run([sys.executable, "-c", code], preexec_fn=limited(100, 400),
                       capture_output=True, timeout=30, check=True)
    assert r.stdout.split() == [b"400", b"400"]
    assert raise_limit()[0] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_slots_ask_idle_files_to_let_go_while_others_wait():
    freed: list[int] = []
    slots = Slots(2, on_free=lambda: freed.append(1))
    assert slots.take() and slots.take() and not slots.take()
    assert slots.wanted
    slots.give()
    assert freed == [1] and slots.take()
    slots.served()
    assert not slots.wanted
    assert default_max_open_files(100) == 68 and default_max_open_files(1 << 20) > 900_000


def write_files(root: Path, n: int, lines: int, start: int = 0) -> None:
    root.mkdir(exist_ok=True)
    for f in range(n):
        with open(root / f"f{f:03d}.log", "a") as fh:
            fh.writelines(f"f{f:03d} {i}\n" for i in range(start, start + lines))


def shipped(out: Path) -> Counter[str]:
    return Counter(orjson.loads(r)["message"] for r in read_dir(out)) if out.exists() else Counter()


def want(n: int, lines: int) -> Counter[str]:
    return Counter(f"f{f:03d} {i}" for f in range(n) for i in range(lines))


def test_150_files_under_a_limit_of_100_are_read_in_turns_once(tmp_path):
    """`tail --once` with soft and hard limits of 100 and 150 files: every line of every file,
    once; the limit is reported."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    write_files(logs, FILES, 200)
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(logs / "*.log"), "--to", f"file:{out}",
                        "--workers", "1", "--format", "text"], preexec_fn=limited(LIMIT, LIMIT),
                       capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    got = shipped(out)
    print(f"lines written {sum(want(FILES, 200).values())}, shipped {sum(got.values())}")
    assert got == want(FILES, 200)
    assert f"open files limit {LIMIT} (hard {LIMIT}); up to 68 files held open" in err
    assert "vanished" not in err


def test_150_files_under_a_limit_of_100_are_followed_in_turns(tmp_path):
    """Following 150 files with limits of 100: files at their end let go of their descriptor
    while others wait, and are reopened when they grow; every line is shipped."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    write_files(logs, FILES, 100)
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([*TAILSHIP, "tail", str(logs / "*.log"), "--to", f"file:{out}",
                                 "--workers", "1", "--format", "text", "--no-progress",
                                 "--data-dir", str(tmp_path / "data")],
                                preexec_fn=limited(LIMIT, LIMIT), stderr=err)
    try:
        def got(n: int) -> bool:
            assert proc.poll() is None, (tmp_path / "err").read_text()
            return shipped(out) == want(FILES, n)

        wait_for(lambda: got(100), 90, "the first 100 lines of every file",
                 lambda: f"(got {sum(shipped(out).values())})")
        write_files(logs, FILES, 50, start=100)  # every file grows: the closed ones reopen
        wait_for(lambda: got(150), 90, "the 50 lines appended to every file",
                 lambda: f"(got {sum(shipped(out).values())})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = (tmp_path / "err").read_text()
    print(f"lines written {FILES * 150}, shipped {sum(shipped(out).values())}")
    assert proc.returncode == 0, text
    assert "file_reopened=" in text and "file_closed_idle=" in text


def test_out_of_descriptors_is_counted_and_retried(tmp_path):
    """`max_open_files` above what the limit allows: opens fail with EMFILE, which is logged,
    counted and retried (files wait their turn), never taken for a vanished file."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    write_files(logs, FILES, 100)
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nworkers = 1\n'
                      f'[source]\ninclude = ["{logs}/*.log"]\nformat = "text"\nmax_open_files = 1000\n'
                      f'[sink]\ntype = "file"\npath = "{out}"\n')
    r = subprocess.run([*TAILSHIP, "run", "-c", str(config), "--once", "--metrics-listen", ""],
                       preexec_fn=limited(LIMIT, LIMIT), capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert shipped(out) == want(FILES, 100)
    assert "too many open files" in err and "too_many_open_files=" in err, err


@pytest.mark.timeout(30)
async def test_idle_files_cost_no_poll_with_inotify(tmp_path, monkeypatch):
    """With inotify, an idle tailer sleeps until woken: over a second, 50 idle files make no
    read, where polling every 10 ms would make thousands; a write still wakes its file."""
    from agent.filesource.tailer import FileTailer
    from agent.runtime import Agent
    from tests.conftest import CollectSink, fast_settings, running, wait_until

    reads = 0
    real = FileTailer._read_some

    async def counted(self: FileTailer, loop: asyncio.AbstractEventLoop) -> bool:
        nonlocal reads
        reads += 1
        return await real(self, loop)

    monkeypatch.setattr(FileTailer, "_read_some", counted)
    write_files(tmp_path / "logs", 50, 1)
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(tmp_path / "logs" / "*.log")]), sink)):
        await wait_until(lambda: len(sink.records) == 50, what="every file")
        await asyncio.sleep(0.2)
        before = reads
        await asyncio.sleep(1.0)
        idle = reads - before
        write_files(tmp_path / "logs", 1, 1, start=1)
        await wait_until(lambda: len(sink.records) == 51, what="the line written to an idle file")
    assert idle == 0
