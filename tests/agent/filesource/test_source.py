"""`FileSource` on its own: no agent, no sink; segments go to a list, scans are called one at a
time (`discover`), so what each scan starts can be looked at right after it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import pytest

from agent.filesource.checkpoints import CheckpointStore
from agent.filesource.identity import FileId, identify_path
from agent.filesource.source import FileSource
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.records import Segment
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(30)


class Harness:
    def __init__(self, tmp_path: Path, include: list[str], *, once: bool = False, **source) -> None:
        settings = dataclasses.replace(SourceSettings(), include=include, poll_interval_ms=10,
                                       inotify=False, **source)
        self.segments: list[Segment] = []
        self.metrics = Metrics()
        (tmp_path / "data").mkdir(exist_ok=True)
        self.checkpoints = CheckpointStore(tmp_path / "data", self.metrics.event)
        self.opened = 0
        spec = ChainSpec(format="text", parse_json=False, trace=False, host_name="h")

        def new_processor(fid: FileId, path: str, real: str) -> FileProcessor:
            return FileProcessor(spec, fid.key, path, {}, self.metrics.event)

        def on_opened() -> None:
            self.opened += 1

        self.source = FileSource(settings, self.checkpoints, once=once, emit=self.emit,
                                 new_processor=new_processor, metrics=self.metrics,
                                 on_opened=on_opened)

    async def emit(self, seg: Segment) -> None:
        self.segments.append(seg)

    def messages(self, path: str | None = None) -> list[str]:
        return [orjson.loads(r)["message"] for s in self.segments if path in (None, s.path)
                for r in s.records]

    def tailed(self) -> dict[tuple[int, int], tuple[str, str]]:
        """(device, inode) -> (path it was opened at, label) of every file being tailed."""
        return {t.inode: (t.tailer.path, t.label) for t in self.source.tailing.values()}


def inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def lines(prefix: str, n: int) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(n))


async def test_once_reads_every_file_found_to_its_end(tmp_path):
    (tmp_path / "a.log").write_text(lines("a", 3))
    (tmp_path / "b.log").write_text(lines("b", 2) + "no newline")
    h = Harness(tmp_path, [str(tmp_path / "*.log")], once=True)
    h.source.start()
    await h.source.discover()
    assert set(h.tailed()) == {inode(tmp_path / "a.log"), inode(tmp_path / "b.log")}
    await h.source.tailers_done()
    await h.source.close()
    assert h.messages(str(tmp_path / "a.log")) == ["a 0", "a 1", "a 2"]
    assert h.messages(str(tmp_path / "b.log")) == ["b 0", "b 1", "no newline"]
    assert len(h.source.files_seen) == 2 and h.source.tailing == {}
    assert h.checkpoints.entries == {} and h.opened == 0  # --once remembers nothing


async def test_a_scan_starts_the_files_rotated_away_since_the_last_one(tmp_path):
    """Between two scans `app.log` was rotated twice: the file that lived there in between is
    started, under the label `app.log`; a copy with the same first line is not started too."""
    log = tmp_path / "app.log"
    log.write_text(lines("a", 5))
    h = Harness(tmp_path, [str(log)])
    h.source.start()
    await h.source.discover()
    assert h.tailed() == {inode(log): (str(log), str(log))}
    assert h.opened == 1  # opened: in the store before anything is acknowledged
    await wait_until(lambda: len(h.messages()) == 5, what="the first file")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text(lines("b", 4))
    os.rename(log, tmp_path / "app.log.2")
    (tmp_path / "app.log.3").write_bytes((tmp_path / "app.log.2").read_bytes())  # a copy
    log.write_text(lines("c", 2))
    await h.source.discover()
    tailed = h.tailed()
    tailed.pop(inode(tmp_path / "app.log.1"), None)  # the first file, until its tailer sees it gone
    b = [inode(tmp_path / "app.log.2"), inode(tmp_path / "app.log.3")]
    assert tailed.pop(inode(log)) == (str(log), str(log))
    [(ident, (path, label))] = tailed.items()
    assert ident in b and path == str(tmp_path / f"app.log.{2 + b.index(ident)}") and label == str(log)
    assert h.metrics.events["file_rotated_unseen"] == 1
    await wait_until(lambda: len(h.messages()) == 11, what="all three files")
    await h.source.close()
    want = [f"a {i}" for i in range(5)] + [f"b {i}" for i in range(4)] + [f"c {i}" for i in range(2)]
    assert sorted(h.messages()) == sorted(want)


async def test_the_first_scan_resumes_a_file_renamed_while_stopped(tmp_path):
    (tmp_path / "pod").mkdir()
    real = tmp_path / "pod" / "0.log"
    real.write_text(lines("old", 4))
    link = tmp_path / "app.log"
    link.symlink_to(real)
    fid = identify_path(str(real), 256)
    assert fid is not None
    h = Harness(tmp_path, [str(tmp_path / "*.log")])
    h.checkpoints.put(fid.key, len(lines("old", 2)), str(link))
    h.checkpoints.opened(fid.key, 0, str(link), str(real))
    os.rename(real, tmp_path / "pod" / "0.log.20261124-100000")
    real.write_text(lines("new", 1))
    h.source.start()
    await h.source.discover()
    rotated = tmp_path / "pod" / "0.log.20261124-100000"
    assert h.tailed() == {inode(real): (str(link), str(link)), inode(rotated): (str(rotated), str(link))}
    assert h.metrics.events["file_renamed_while_stopped"] == 1
    await wait_until(lambda: len(h.messages()) == 3, what="the rest and the new file")
    await h.source.close()
    assert sorted(h.messages()) == ["new 0", "old 2", "old 3"]


async def test_close_lets_go_of_files_held_for_their_first_line(tmp_path):
    (tmp_path / "empty.log").touch()
    h = Harness(tmp_path, [str(tmp_path / "*.log")], scan_interval_secs=60.0)
    h.source.start()
    await h.source.discover()
    assert h.source.tailing == {} and len(h.source._unidentified) == 1
    [(fd, _)] = h.source._unidentified.values()
    held = f"/proc/self/fd/{fd}"
    assert os.readlink(held) == str(tmp_path / "empty.log")
    await h.source.close()
    assert h.source._unidentified == {}
    assert not os.path.lexists(held) or os.readlink(held) != str(tmp_path / "empty.log")
