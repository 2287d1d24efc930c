"""inotify wakes tailers and discovery at once; polling stays as the fallback."""

from __future__ import annotations

import os
import struct

import pytest

from agent.inotify import IN_CREATE, IN_MODIFY, parse
from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)

SLOW = {"poll_interval_ms": 60_000, "scan_interval_secs": 60.0}  # no poll or scan within a test


def test_parse_events():
    name = b"0.log\0\0\0"
    data = struct.pack("iIII", 3, IN_MODIFY, 0, 0) + struct.pack("iIII", 4, IN_CREATE, 0, len(name)) + name
    assert parse(data) == [(3, IN_MODIFY, ""), (4, IN_CREATE, "0.log")]


async def test_write_wakes_the_tailer_before_its_poll(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first\n")
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(log)], **SLOW), sink)):
        await wait_until(lambda: len(sink.records) == 1, what="the first line")
        assert agent.watcher is not None
        with open(log, "a") as f:
            f.write("second\n")
        await wait_until(lambda: len(sink.records) == 2, what="the line written after start")
    assert sink.messages() == ["first", "second"]


async def test_new_file_and_rotation_seen_before_the_next_scan(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(logs / "*.log")], **SLOW), sink)):
        await wait_until(lambda: agent.watcher is not None and not agent._first_scan, what="the first scan")
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
        assert agent.watcher is None
        with open(log, "a") as f:
            f.write("second\n")
        await wait_until(lambda: len(sink.records) == 2, what="the polled line")
