"""File sink retention: the oldest whole files go once the writer's files exceed retention_bytes
or are older than retention_secs, never the file being written nor another writer's; counted,
logged, validated, and served as metrics by the agent."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from agent.config import settings_from_dict
from agent.runtime import Agent
from pipelines.errors import ConfigError
from pipelines.sinks.file import FileSink, read_dir, read_ndjson_zst
from tests.conftest import fast_settings, running, wait_until
from tests.pipelines.sinks.test_sinks import make_batch, numbers, out_files

pytestmark = pytest.mark.timeout(20)


async def test_the_oldest_files_go_once_the_bytes_exceed_retention(tmp_path: Path, caplog) -> None:
    """60 batches, a file per two: what stays is the newest files, under the bound, their
    records the last ones in order; what went is counted to the byte."""
    sink = FileSink(str(tmp_path), compression_level=1, rotate_bytes=4000, retention_bytes=3000)
    await sink.start()
    sizes: dict[str, int] = {}
    with caplog.at_level(logging.INFO, "tailship.sinks.file"):
        for seq in range(60):
            await sink.send(make_batch(seq, 20, start=seq * 20))
            sizes.update({p.name: p.stat().st_size for p in out_files(tmp_path)})
    await sink.close(1)
    kept = out_files(tmp_path)
    assert sum(p.stat().st_size for p in kept) <= 3000
    assert 0 < len(kept) < 30
    got = numbers(read_dir(tmp_path))
    assert got == list(range(1200 - len(got), 1200))  # the newest records, none missing among them
    assert sink.pruned_files == 30 - len(kept)
    assert sink.pruned_bytes == sum(n for name, n in sizes.items() if name not in {p.name for p in kept})
    assert "deleted the 1 oldest file(s)" in caplog.text
    print(f"retention_bytes 3000: {len(kept)} of 30 files kept, {sink.pruned_bytes} bytes pruned")


async def test_files_older_than_retention_secs_go_at_start_not_other_writers(tmp_path: Path) -> None:
    old = FileSink(str(tmp_path), rotate_bytes=1024)
    await old.start()
    for seq in range(4):
        await old.send(make_batch(seq, 20, start=seq * 20))
    await old.close(1)
    other = FileSink(str(tmp_path), worker=1)  # another writer's file, just as old
    await other.start()
    await other.send(make_batch(9, 4))
    await other.close(1)
    day_ago = time.time() - 86400
    for p in out_files(tmp_path):
        os.utime(p, (day_ago, day_ago))
    before = out_files(tmp_path)
    sink = FileSink(str(tmp_path), retention_secs=3600)
    await sink.start()
    await sink.send(make_batch(10, 2, start=1000))
    await sink.close(1)
    after = out_files(tmp_path)
    assert [p.name for p in after if "-w1-" in p.name] == [p.name for p in before if "-w1-" in p.name]
    mine = [p for p in after if "-w1-" not in p.name]
    assert len(mine) == 1 and numbers(read_ndjson_zst(mine[0])) == [1000, 1001]
    assert sink.pruned_files == len(before) - 1


def test_retention_options_are_validated() -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"sink": {"type": "file", "retention_bytes": -1, "retention_secs": "a day"}},
                           env={})
    text = "\n".join(e.value.problems)
    assert "sink.retention_bytes" in text and "sink.retention_secs" in text
    s = settings_from_dict({}, env={})
    assert s.sink.retention_bytes == 1 << 30 and s.sink.retention_secs == 0  # bounded by default


async def test_the_agent_builds_the_file_sink_with_retention_and_counts_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i} {os.urandom(16).hex()}\n" for i in range(3000)))
    s = fast_settings(tmp_path, [str(log)])
    s.sink.path = str(tmp_path / "out")
    s.sink.rotate_bytes = 1024
    s.sink.retention_bytes = 8192
    async with running(Agent(s)) as agent:
        await wait_until(lambda: agent.summary().records_sent == 3000, what="every line written")
        pruned = agent.metrics.registry.get_sample_value("tailship_file_sink_pruned_files_total",
                                                        {"sink": "file"})
    assert pruned and pruned > 0
    assert sum(p.stat().st_size for p in out_files(tmp_path / "out")) <= 8192
