"""Disk faults under the disk buffer, on a real small tmpfs (tests run as root; under CI=true a
mount that fails fails the test): the data directory full (ENOSPC) while the sink is down, and
remounted read-only mid-run and back. The agent backpressures instead of dropping, /readyz says
why, and every line written arrives once the disk and the sink are back. Each scenario prints
its figures (lines written, delivered, duplicates, failed writes, seconds to recover)."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime import Agent
from pipelines.buffer import DiskBuffer
from pipelines.records import Batch, Segment
from tests.conftest import CollectSink, fast_settings, running, wait_until
from tests.services import unavailable

pytestmark = pytest.mark.timeout(120)


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount a tmpfs (root needed): {r.stderr.strip()}")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs; unmounted at the end whatever happens."""
    mnt = tmp_path / "disk"
    mount_tmpfs(mnt, "8m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def ballast(disk: Path, leave_bytes: int) -> Path:
    """A file that fills `disk` but for about `leave_bytes`."""
    st = os.statvfs(disk)
    path = disk / "ballast"
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return path


def remount(disk: Path, mode: str) -> None:
    """`mount -o remount,<mode>`; a write in flight at that instant makes it busy: tried again."""
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True, text=True)
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, f"remount {mode} failed: {r.stderr}"
        time.sleep(0.01)


def write_lines(log: Path, start: int, n: int) -> list[str]:
    """Append lines `start`..`start+n` with 64 random hex digits each (they compress badly, so
    the buffer's files grow); returns their text."""
    lines = [f"line {i} {os.urandom(32).hex()}" for i in range(start, start + n)]
    with open(log, "a") as f:
        f.write("".join(f"{ln}\n" for ln in lines))
    return lines


def buffered_settings(tmp_path: Path, disk: Path, log: Path):  # type: ignore[no-untyped-def]
    s = fast_settings(tmp_path, [str(log)])
    s.data_dir = str(disk / "data")
    s.buffer = dataclasses.replace(s.buffer, type="disk", max_size_bytes=256 << 20)  # the disk is smaller
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_records=200)
    s.metrics = dataclasses.replace(s.metrics, ready_failing_secs=0.5)
    return s


def check_all_arrived(sink: CollectSink, lines: list[str]) -> tuple[int, int]:
    got = [r["message"] for r in sink.records]
    missing = set(lines) - set(got)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    return len(got), len(got) - len(set(got))


@pytest.mark.parametrize("free_space", [True, False], ids=["space-freed", "disk-stays-full"])
async def test_full_data_dir_while_the_sink_is_down_loses_nothing(tmp_path: Path, disk: Path,
                                                                  free_space: bool) -> None:
    """The sink is down, the buffer fills the disk (ENOSPC): appends are retried, counted, the
    tailers wait, /readyz names the buffer's directory and the cause. The sink back (and the other
    file on the disk deleted, or not: then the buffer's own delivered files make the room), every
    line arrives."""
    log = tmp_path / "app.log"
    lines = write_lines(log, 0, 60_000)  # ~5 MB: more than the disk, the budget and the buffer hold
    (disk / "data").mkdir()
    weight = ballast(disk, 256 << 10)
    sink = CollectSink()
    sink.down = True
    async with running(Agent(buffered_settings(tmp_path, disk, log), sink)) as agent:
        await wait_until(lambda: agent.summary().events.get("buffer_write_failed", 0) >= 1, 30,
                         what="an append refused by the full disk")
        await wait_until(lambda: agent.fanout.paused_secs() > 0, 30, what="the tailers waiting")
        ready, why = agent.readiness()
        assert not ready and "disk buffer cannot append to" in why and "No space left" in why, why
        read_during = agent.summary().lines_read
        assert read_during < len(lines)  # backpressure: the rest waits in the file
        if free_space:
            os.unlink(weight)
        freed = time.monotonic()
        sink.down = False
        await wait_until(lambda: len({r["message"] for r in sink.records}) >= len(lines), 60,
                         what="every line delivered")
        recovered = time.monotonic() - freed
        await wait_until(lambda: agent.readiness()[0], 10, what="ready again")
        failed = agent.summary().events["buffer_write_failed"]
    delivered, dups = check_all_arrived(sink, lines)
    how = "space freed" if free_space else "disk stays full"
    print(f"ENOSPC under the disk buffer ({how}): {len(lines)} lines written, {delivered} delivered, {dups} "
          f"duplicates, 0 lost; {failed} failed appends; {read_during} lines read while full; "
          f"recovered in {recovered:.1f}s after the sink came back")


async def test_read_only_data_dir_mid_run_and_back_loses_nothing(tmp_path: Path, disk: Path) -> None:
    """The data directory is remounted read-only mid-run: appends fail (counted), the agent
    backpressures, /readyz is 503 with the cause; remounted read-write, everything flows again."""
    log = tmp_path / "app.log"
    lines = write_lines(log, 0, 1000)
    sink = CollectSink()
    async with running(Agent(buffered_settings(tmp_path, disk, log), sink)) as agent:
        await wait_until(lambda: len(sink.records) == len(lines), 30, what="the first lines delivered")
        remount(disk, "ro")
        try:
            lines += write_lines(log, 1000, 20_000)
            await wait_until(lambda: agent.summary().events.get("buffer_write_failed", 0) >= 1, 30,
                             what="an append refused by the read-only disk")
            await wait_until(lambda: not agent.readiness()[0], 10, what="not ready")
            why = agent.readiness()[1]
            assert "Read-only file system" in why, why
            assert len(sink.records) < len(lines)  # the refused batch waits for the disk
            failed_ro = agent.summary().events["buffer_write_failed"]
        finally:
            remount(disk, "rw")
        back = time.monotonic()
        await wait_until(lambda: len({r["message"] for r in sink.records}) >= len(lines), 60,
                         what="every line delivered")
        recovered = time.monotonic() - back
        await wait_until(lambda: agent.readiness()[0], 10, what="ready again")
    delivered, dups = check_all_arrived(sink, lines)
    print(f"read-only data dir under the disk buffer: {len(lines)} lines written, {delivered} delivered, "
          f"{dups} duplicates, 0 lost; {failed_ro} failed appends while read-only (readiness 503: {why!r}); "
          f"recovered in {recovered:.1f}s after the remount read-write")


def test_a_torn_append_is_cut_off_and_the_buffer_reads_whole_after_a_restart(disk: Path) -> None:
    """An append cut short by ENOSPC leaves no bytes behind: after space is back, the next
    appends follow the last whole frame, and a new start reads every frame, nothing set aside."""
    buf = DiskBuffer(disk / "buf")
    buf.open()

    def batch(i: int) -> Batch:
        b = Batch(seq=i)
        recs = [os.urandom(2000).hex().encode() for _ in range(20)]  # ~80 KiB, incompressible-ish
        b.add(Segment(f"k{i}", "/x.log", {}, recs, list(range(1, 21)), [None] * 20, [None] * 20,
                      sum(map(len, recs)), 20))
        return b

    buf.append(buf.compress(batch(1)))
    seg = next((disk / "buf").glob("seg-*.tsb"))
    good = seg.stat().st_size
    weight = ballast(disk, 24 << 10)  # less than a frame: the write is cut short, then ENOSPC
    with pytest.raises(OSError) as err:
        buf.append(buf.compress(batch(2)))
    assert err.value.errno == errno.ENOSPC
    assert seg.stat().st_size == good  # the torn bytes were cut off
    os.unlink(weight)
    buf.append(buf.compress(batch(2)))
    buf.append(buf.compress(batch(3)))
    buf.close()
    again = DiskBuffer(disk / "buf")
    again.open()
    assert again.corrupt == 0 and not (disk / "buf" / "corrupt").exists()
    got = [again.read(f) for f in again.frames]
    assert [b.segments[0].file_key for b in got if b is not None] == ["k1", "k2", "k3"]
    print(f"torn append: {good} good bytes kept, 3 frames read back whole after a restart, 0 set aside")
