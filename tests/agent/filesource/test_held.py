"""Rotated files held open during a sink outage: reported (files, bytes), and bounded by
`source.max_held_rotated_bytes` when it is set: the oldest released, its unread bytes counted
as lost, with an error; without the bound nothing is lost. With a disk buffer that has room,
held files are read into it (to their end, then closed) instead of released: nothing is lost
whatever the bound; a full disk buffer takes nothing in, and the bound applies."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(60)

FILE_LINES = 15000  # ~3 MB a file: more than the 1 MiB in-flight budget


def content(tag: str, noise: bool = False) -> str:
    """`noise`: lines that do not compress (to fill a disk buffer, which compresses)."""
    return "".join(f"{tag} {i:05d} {os.urandom(95).hex() if noise else 'x' * 190}\n"
                   for i in range(FILE_LINES))


async def rotate_three(agent: Agent, logs: Path, noise: bool = False) -> list[Path]:
    """Three files written and rotated away (renamed out of `*.log`) once each is being read."""
    rotated = []
    for r in range(3):
        log = logs / "app.log"
        log.write_text(content(f"r{r}", noise))
        ino = os.stat(log).st_ino
        await wait_until(lambda ino=ino: any(t.inode[1] == ino for t in agent.source.tailing.values()),
                         what=f"file {r} opened")
        rotated.append(logs / f"app.log.{r}")
        os.rename(log, rotated[-1])
    return rotated


async def test_held_rotated_files_are_reported_and_nothing_is_lost_without_a_bound(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    s = fast_settings(tmp_path, [str(logs / "*.log")])
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_bytes=256 << 10)
    sink = CollectSink()
    sink.down = True
    async with running(agent := Agent(s, sink)):
        rotated = await rotate_three(agent, logs)
        sizes = sum(p.stat().st_size for p in rotated)
        await wait_until(lambda: sum(size for _, size in agent.source.held_rotated()) == sizes,
                         what="the three rotated files reported as held")
        sink.down = False
        await wait_until(lambda: len(sink.records) == 3 * FILE_LINES, timeout=30, what="every line")
    print(f"lines written {3 * FILE_LINES}, delivered {len(sink.records)}, held bytes {sizes}")
    assert agent.metrics.events["held_rotated_released"] == 0


async def test_past_the_bound_the_oldest_held_file_is_released_and_its_rest_counted(tmp_path, caplog):
    logs = tmp_path / "logs"
    logs.mkdir()
    bound = 6_500_000  # two of the three files
    s = fast_settings(tmp_path, [str(logs / "*.log")], max_held_rotated_bytes=bound)
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_bytes=256 << 10)
    sink = CollectSink()
    sink.down = True
    caplog.set_level(logging.ERROR, logger="tailship.agent")
    async with running(agent := Agent(s, sink)):
        rotated = await rotate_three(agent, logs)
        await wait_until(lambda: agent.metrics.events["held_rotated_released"] == 1,
                         what="the oldest held file released")
        assert sum(size for _, size in agent.source.held_rotated()) <= bound
        sink.down = False
        await wait_until(lambda: any(m.startswith("r2 14999") for m in sink.messages()), timeout=30,
                         what="the newest file to its end")
        await wait_until(lambda: agent.unacked == 0, what="everything read acknowledged")
    got = sink.messages()
    size = rotated[0].stat().st_size
    lost = agent.metrics.lost_bytes.labels("held_rotated_bound")._value.get()
    first = [m for m in got if m.startswith("r0 ")]
    print(f"lines written {3 * FILE_LINES}, delivered {len(got)}, released file: {len(first)} lines "
          f"delivered, {lost:.0f} bytes lost")
    assert first == [f"r0 {i:05d} {'x' * 190}" for i in range(len(first))]  # a prefix, in order
    assert lost == size - len(first) * len(content("r0").splitlines(keepends=True)[0])
    assert len([m for m in got if not m.startswith("r0 ")]) == 2 * FILE_LINES
    assert any("LOST" in r.getMessage() and "app.log" in r.getMessage() for r in caplog.records)


def buffered_settings(tmp_path: Path, logs: Path, bound: int, buffer_bytes: int):
    s = fast_settings(tmp_path, [str(logs / "*.log")], max_held_rotated_bytes=bound)
    s.batch = dataclasses.replace(s.batch, memory_limit_bytes=1 << 20, max_bytes=256 << 10)
    s.buffer = dataclasses.replace(s.buffer, type="disk", max_size_bytes=buffer_bytes, ack="on_write")
    return s


async def test_with_a_disk_buffer_held_files_are_read_into_it_and_nothing_is_lost(tmp_path):
    """Sink down during the rotations, a bound smaller than one file, a disk buffer with room:
    each rotated file is read to its end into the buffer and closed (none released), then the
    sink comes back and every line arrives."""
    logs = tmp_path / "logs"
    logs.mkdir()
    s = buffered_settings(tmp_path, logs, bound=1_000_000, buffer_bytes=64 << 20)
    sink = CollectSink()
    sink.down = True
    async with running(agent := Agent(s, sink)):
        await rotate_three(agent, logs, noise=True)
        await wait_until(lambda: agent.metrics.lines_read._value.get() == 3 * FILE_LINES, timeout=30,
                         what="the three files read into the buffer while the sink is down")
        await wait_until(lambda: agent.source.held_rotated() == [], what="the three files closed")
        assert sink.records == [] and agent.metrics.events["held_rotated_released"] == 0
        sink.down = False
        await wait_until(lambda: len(sink.records) == 3 * FILE_LINES, timeout=30, what="every line")
    got = sink.messages()
    lost = agent.metrics.lost_bytes.labels("held_rotated_bound")._value.get()
    print(f"lines written {3 * FILE_LINES}, delivered {len(got)}, duplicates "
          f"{len(got) - len(set(got))}, bytes lost {lost:.0f}")
    assert len(set(got)) == 3 * FILE_LINES and lost == 0
    assert agent.metrics.events["held_rotated_released"] == 0


async def test_a_full_disk_buffer_takes_nothing_in_and_the_bound_applies(tmp_path, caplog):
    """The buffer (1 MiB) fills during the outage: held files can no longer be read into it, so
    past the bound the oldest is released, its unread bytes counted as lost, as without one."""
    logs = tmp_path / "logs"
    logs.mkdir()
    s = buffered_settings(tmp_path, logs, bound=6_500_000, buffer_bytes=1 << 20)
    sink = CollectSink()
    sink.down = True
    caplog.set_level(logging.ERROR, logger="tailship.agent")
    async with running(agent := Agent(s, sink)):
        rotated = await rotate_three(agent, logs, noise=True)
        await wait_until(lambda: agent.metrics.events["held_rotated_released"] == 1, timeout=30,
                         what="the oldest held file released")
        sink.down = False
        await wait_until(lambda: any(m.startswith("r2 14999") for m in sink.messages()), timeout=30,
                         what="the newest file to its end")
        await wait_until(lambda: agent.unacked == 0, what="everything read acknowledged")
    got = sink.messages()
    lost = agent.metrics.lost_bytes.labels("held_rotated_bound")._value.get()
    first = [m for m in got if m.startswith("r0 ")]
    print(f"lines written {3 * FILE_LINES}, delivered {len(got)}, released file: {len(first)} lines "
          f"delivered, {lost:.0f} bytes lost")
    assert [m[:8] for m in first] == [f"r0 {i:05d}" for i in range(len(first))]  # a prefix, in order
    assert lost == rotated[0].stat().st_size - len(first) * 200 > 0
    assert len([m for m in got if not m.startswith("r0 ")]) == 2 * FILE_LINES
    assert any("LOST" in r.getMessage() and "app.log" in r.getMessage() for r in caplog.records)
