"""Checkpoints on a full or read-only disk (a small tmpfs; tests run as root): written completely
or not at all, the last good file kept, and the agent goes on."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.filesource.checkpoints import FILE_NAME, CheckpointStore
from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until
from tests.services import unavailable

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs; unmounted at the end whatever happens."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount a tmpfs (root needed): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> list[Path]:
    """Fill the disk with one-page files until it is full; returns them."""
    pages: list[Path] = []
    while True:
        p = disk / f"fill-{len(pages)}"
        try:
            with open(p, "wb") as f:
                f.write(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            p.unlink(missing_ok=True)
            return pages
        pages.append(p)


def store(disk: Path, n: int) -> CheckpointStore:
    s = CheckpointStore(disk / "data", lambda name, k: None)
    for i in range(n):
        s.put(f"2049:{i}:{'ab' * 16}", 1000 + i, f"/var/log/containers/{'p' * 80}-{i}.log")
    return s


def test_a_short_write_on_a_full_disk_keeps_the_last_good_file(small_disk: Path) -> None:
    """With one page free and a store of several pages, the write is cut short: the old file
    stays byte for byte, no temporary file is left, and once space is back the new one is
    written whole."""
    (small_disk / "data").mkdir()
    s = store(small_disk, 3)
    assert s.persist()
    good = (small_disk / "data" / FILE_NAME).read_bytes()
    pages = fill(small_disk)
    pages.pop().unlink()  # one page free: less than the store needs
    big = store(small_disk, 200)
    with pytest.raises(OSError) as err:
        big.persist()
    assert err.value.errno == errno.ENOSPC
    assert (small_disk / "data" / FILE_NAME).read_bytes() == good
    assert sorted(os.listdir(small_disk / "data")) == [FILE_NAME]
    for p in pages:
        p.unlink()
    assert big.persist()
    again = CheckpointStore(small_disk / "data", lambda name, k: None)
    assert again.load() and len(again.entries) == 200
    print(f"checkpoints: {len(good)} bytes kept through ENOSPC; {len(again.entries)} entries written after")


async def test_read_only_data_dir_at_stop_is_logged_not_raised(small_disk: Path, tmp_path: Path) -> None:
    """The data directory turns read-only mid-run: shipping goes on, each failed write is counted,
    and the stop ends with exit 0 and the last good checkpoints in place."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    s = fast_settings(tmp_path, [str(log)])
    s.data_dir = str(small_disk / "data")
    sink = CollectSink()
    async with running(Agent(s, sink)) as agent:  # asserts exit code 0 at the end
        size = log.stat().st_size
        await wait_until(lambda: [e.offset for e in agent.checkpoints.entries.values()] == [size]
                         and agent.checkpoints.age() == 0, what="first 100 lines checkpointed")
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        with open(log, "a") as f:
            f.write("".join(f"line {i}\n" for i in range(100, 200)))
        await wait_until(lambda: len(sink.records) == 200, what="lines after the remount shipped")
        await wait_until(lambda: agent.summary().events.get("checkpoint_write_failed", 0) >= 1,
                         what="the failed write counted")
    kept = CheckpointStore(small_disk / "data", lambda name, k: None)
    assert kept.load() and [e.offset for e in kept.entries.values()] == [size]
    print(f"read-only data dir: 200 lines shipped, checkpoint kept at {size} (the first 100 lines), "
          f"{agent.summary().events['checkpoint_write_failed']} failed writes counted")
