"""inotify wakes tailers and discovery at once; polling stays as the fallback."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from agent.filesource.inotify import IN_CREATE, IN_MODIFY, DirWatcher, parse
from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)

SLOW = {"poll_interval_ms": 60_000, "scan_interval_secs": 60.0}  # no poll or scan within a test


def test_parse_events():
    name = b"0.log\0\0\0"
    data = struct.pack("iIII", 3, IN_MODIFY, 0, 0) + struct.pack("iIII", 4, IN_CREATE, 0, len(name)) + name
    assert parse(data) == [(3, IN_MODIFY, ""), (4, IN_CREATE, "0.log")]


async def test_a_names_only_watch_reports_no_writes_until_widened(tmp_path):
    """Directories where only other workers read are watched for names only (no event per
    write); a watch asked for in full later widens the same watch."""
    (tmp_path / "a.log").write_text("x\n")
    events: list[tuple[str, int]] = []
    watcher = DirWatcher(lambda _d, name, mask: events.append((name, mask)), lambda: None)
    loop = asyncio.get_running_loop()
    assert watcher.start(loop)
    try:
        watcher.watch(str(tmp_path), names_only=True)
        with open(tmp_path / "a.log", "a") as f:
            f.write("y\n")
        (tmp_path / "b.log").touch()  # events come in order: a write to a.log would come first
        await wait_until(lambda: ("b.log", IN_CREATE) in events, what="the create event")
        assert not [e for e in events if e[1] & IN_MODIFY]
        watcher.watch(str(tmp_path))
        with open(tmp_path / "a.log", "a") as f:
            f.write("z\n")
        await wait_until(lambda: any(n == "a.log" and m & IN_MODIFY for n, m in events), what="a write event")
        assert len(watcher.watched) == 1
    finally:
        watcher.close(loop)


async def test_a_names_only_watch_under_another_path_keeps_a_full_one(tmp_path):
    """The kernel has one watch per directory inode: a names-only request through the real
    path of a directory watched in full through a link adds to the watch, never narrows it;
    events are reported under both paths."""
    logs, alias = tmp_path / "logs", tmp_path / "alias"
    logs.mkdir()
    alias.symlink_to(logs)
    (logs / "a.log").write_text("x\n")
    events: list[tuple[str, str, int]] = []
    watcher = DirWatcher(lambda d, name, mask: events.append((d, name, mask)), lambda: None)
    loop = asyncio.get_running_loop()
    assert watcher.start(loop)
    try:
        watcher.watch(str(alias))
        watcher.watch(str(logs), names_only=True)
        with open(logs / "a.log", "a") as f:
            f.write("y\n")
        await wait_until(lambda: {d for d, n, m in events if n == "a.log" and m & IN_MODIFY}
                         == {str(alias), str(logs)}, what="the write, under both paths")
    finally:
        watcher.close(loop)


async def test_write_wakes_the_tailer_before_its_poll(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first\n")
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(log)], **SLOW), sink)):
        await wait_until(lambda: len(sink.records) == 1, what="the first line")
        assert agent.source.watcher is not None
        with open(log, "a") as f:
            f.write("second\n")
        await wait_until(lambda: len(sink.records) == 2, what="the line written after start")
    assert sink.messages() == ["first", "second"]


async def test_new_file_and_rotation_seen_before_the_next_scan(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(logs / "*.log")], **SLOW), sink)):
        await wait_until(lambda: agent.source.watcher is not None and not agent.source._first_scan,
                         what="the first scan")
        (logs / "new.log").write_text("a 0\n")
        await wait_until(lambda: len(sink.records) == 1, what="a file created after start")
        os.rename(logs / "new.log", logs / "new.log.1")  # rotation: the new file is found at once
        (logs / "new.log").write_text("b 0\n")
        await wait_until(lambda: len(sink.records) == 2, what="the file after the rotation")
    assert sink.messages() == ["a 0", "b 0"]


async def test_polling_only_when_inotify_is_off(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first\n")
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(log)], inotify=False), sink)):
        await wait_until(lambda: len(sink.records) == 1, what="the first line")
        assert agent.source.watcher is None
        with open(log, "a") as f:
            f.write("second\n")
        await wait_until(lambda: len(sink.records) == 2, what="the polled line")
