"""Rotated files held open during a sink outage: reported (files, bytes), and bounded by
`source.max_held_rotated_bytes` when it is set: the oldest released, its unread bytes counted
as lost, with an error; without the bound nothing is lost."""

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


def content(tag: str) -> str:
    return "".join(f"{tag} {i:05d} {'x' * 190}\n" for i in range(FILE_LINES))


async def rotate_three(agent: Agent, logs: Path) -> list[Path]:
    """Three files written and rotated away (renamed out of `*.log`) once each is being read."""
    rotated = []
    for r in range(3):
        log = logs / "app.log"
        log.write_text(content(f"r{r}"))
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
