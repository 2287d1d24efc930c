"""Tailing real files: growth, partial lines, rotation, truncation, deletion, symlinks, inode reuse."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def lines(prefix: str, a: int, b: int) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(a, b))


def expected(prefix: str, a: int, b: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(a, b)]


async def test_reads_existing_and_appended_lines(tmp_path):
    """Lines present at start and appended later each arrive once, in order, with offsets."""
    log = tmp_path / "app.log"
    log.write_text(lines("line", 0, 50))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(tmp_path / "*.log")]), sink)):
        await wait_until(lambda: len(sink.records) == 50, what="initial lines")
        append(log, lines("line", 50, 80))
        await wait_until(lambda: len(sink.records) == 80, what="appended lines")
    assert sink.messages() == expected("line", 0, 80)
    assert sink.records[1]["log"]["offset"] == len("line 0\n")
    assert sink.records[0]["log"]["file"]["path"] == str(log)
    assert sink.records[0]["host"] == {"name": "testhost"}


async def test_partial_line_held_until_newline(tmp_path):
    """A last line without newline waits for its newline and is emitted whole."""
    log = tmp_path / "app.log"
    log.write_text("first\nsec")
    sink = CollectSink()
    s = fast_settings(tmp_path, [str(log)], partial_line_timeout_secs=30)
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 1, what="first line")
        append(log, "ond\n")
        await wait_until(lambda: len(sink.records) == 2, what="completed line")
    assert sink.messages() == ["first", "second"]


async def test_partial_line_emitted_after_timeout(tmp_path):
    """A last line whose newline never comes is emitted after partial_line_timeout_secs."""
    log = tmp_path / "app.log"
    log.write_text("done\nno newline ever")
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)], partial_line_timeout_secs=0.2), sink)) as a:
        await wait_until(lambda: len(sink.records) == 2, what="timed-out partial line")
    assert sink.messages() == ["done", "no newline ever"]
    assert a.metrics.events["partial_line_emitted"] == 1


async def test_rotation_by_rename_reads_old_file_to_end(tmp_path):
    """After rename+create, lines written to the old file before the switch are not lost."""
    log = tmp_path / "app.log"
    log.write_text(lines("old", 0, 10))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)):
        await wait_until(lambda: len(sink.records) == 10, what="first lines")
        with open(log, "a") as old:
            os.rename(log, tmp_path / "app.log.1")
            log.write_text(lines("new", 0, 5))
            old.write(lines("old", 10, 20))  # late writes to the renamed file
        await wait_until(lambda: len(sink.records) == 25, what="both files")
    msgs = sink.messages()
    assert sorted(msgs) == sorted(expected("old", 0, 20) + expected("new", 0, 5))
    assert [m for m in msgs if m.startswith("old")] == expected("old", 0, 20)


async def test_copytruncate_restarts_from_zero(tmp_path):
    """A file truncated in place (copytruncate) is read again from offset 0, counted."""
    log = tmp_path / "app.log"
    log.write_text(lines("before", 0, 20))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as a:
        await wait_until(lambda: len(sink.records) == 20, what="first lines")
        with open(log, "r+") as f:
            f.truncate(0)
        await wait_until(lambda: a.metrics.events["file_truncated"] == 1, what="truncation seen")
        append(log, lines("after", 0, 3))
        await wait_until(lambda: len(sink.records) == 23, what="lines after truncation")
    assert sink.messages()[20:] == expected("after", 0, 3)
    assert sink.records[20]["log"]["offset"] == 0


async def test_truncate_and_refill_past_offset_detected_by_fingerprint(tmp_path):
    """Truncation followed by more writes than before is still detected (first bytes changed)."""
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 3))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)):
        await wait_until(lambda: len(sink.records) == 3, what="first lines")
        with open(log, "r+") as f:
            f.truncate(0)
            f.write(lines("bbbbbbbb", 0, 10))
        await wait_until(lambda: len(sink.records) == 13, what="rewritten file")
    assert sink.messages()[3:] == expected("bbbbbbbb", 0, 10)


async def test_deleted_file_is_drained_and_closed(tmp_path):
    """A deleted file's remaining lines are read, then its descriptor is closed."""
    log = tmp_path / "app.log"
    log.write_text(lines("x", 0, 5))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as a:
        await wait_until(lambda: len(sink.records) == 5, what="first lines")
        with open(log, "a") as f:
            os.unlink(log)
            f.write(lines("x", 5, 8))
        await wait_until(lambda: len(sink.records) == 8, what="lines written after unlink")
        await wait_until(lambda: not a.source.tailing, what="tailer closed")
        assert not any(os.readlink(f"/proc/self/fd/{fd}").endswith("app.log (deleted)")
                       for fd in os.listdir("/proc/self/fd") if os.path.islink(f"/proc/self/fd/{fd}"))
    assert sink.messages() == expected("x", 0, 8)


async def test_new_files_discovered_while_running(tmp_path):
    """A file created after start is found by the rescan and read from its head."""
    sink = CollectSink()
    s = fast_settings(tmp_path, [str(tmp_path / "*.log")], read_from="tail")
    (tmp_path / "old.log").write_text(lines("skipped", 0, 3))
    async with running(Agent(s, sink)) as a:
        await wait_until(lambda: len(a.source.tailing) == 1, what="first scan")
        (tmp_path / "new.log").write_text(lines("fresh", 0, 4))
        await wait_until(lambda: len(sink.records) == 4, what="new file")
    assert sink.messages() == expected("fresh", 0, 4)  # read_from=tail skipped the old file


async def test_kubelet_symlink_layout_enriched(tmp_path):
    """Files behind /var/log/containers symlinks are read once and carry kubernetes metadata."""
    cid = "c" * 64
    pod_dir = tmp_path / "pods" / "shop_checkout-7d9f8b6c5-x2x9q_0f1e2d3c-1111-2222-3333-444455556666" / "app"
    pod_dir.mkdir(parents=True)
    real = pod_dir / "0.log"
    real.write_text('2026-11-24T10:00:00.000000001Z stdout F {"msg":"hi","trace_id":"'
                    + "ab" * 16 + '"}\n')
    (tmp_path / "containers").mkdir()
    link = tmp_path / "containers" / f"checkout-7d9f8b6c5-x2x9q_shop_app-{cid}.log"
    link.symlink_to(real)
    sink = CollectSink()
    include = [str(tmp_path / "containers" / "*.log"), str(tmp_path / "pods" / "*" / "*" / "*.log")]
    async with running(Agent(fast_settings(tmp_path, include), sink)):
        await wait_until(lambda: len(sink.records) == 1, what="record")
        await wait_until(lambda: True)
    rec = sink.records[0]
    assert rec["kubernetes"] == {"namespace": "shop", "pod": "checkout-7d9f8b6c5-x2x9q",
                                 "pod_uid": "0f1e2d3c-1111-2222-3333-444455556666",
                                 "container": "app", "container_id": cid}
    assert rec["msg"] == "hi" and rec["stream"] == "stdout"
    assert rec["@timestamp"] == "2026-11-24T10:00:00.000000001Z"
    assert rec["trace_id"] == "ab" * 16
    assert len(sink.records) == 1  # the pods path reaches the same file: not read twice


async def test_inode_reuse_is_a_new_file(tmp_path):
    """A new file that got a deleted file's inode is read from its head, not the old offset."""
    log = tmp_path / "app.log"
    log.write_text(lines("first-generation", 0, 10))
    sink = CollectSink()
    s = fast_settings(tmp_path, [str(log)])
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 10, what="first file")
    ino = os.stat(log).st_ino
    # rewrite in place keeps the inode (the strongest form of reuse) with different first bytes
    with open(log, "r+") as f:
        f.truncate(0)
        f.write(lines("second", 0, 3))
    assert os.stat(log).st_ino == ino
    sink2 = CollectSink()
    async with running(Agent(s, sink2)):
        await wait_until(lambda: len(sink2.records) == 3, what="second file")
    assert sink2.messages() == expected("second", 0, 3)


async def test_resume_from_checkpoint_after_restart(tmp_path):
    """A restarted agent continues after the last acknowledged line: no loss, no duplicates."""
    log = tmp_path / "app.log"
    log.write_text(lines("l", 0, 30))
    s = fast_settings(tmp_path, [str(log)])
    sink = CollectSink()
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 30, what="first run")
    append(log, lines("l", 30, 40))
    sink2 = CollectSink()
    async with running(Agent(s, sink2)):
        await wait_until(lambda: len(sink2.records) == 10, what="second run")
    assert sink2.messages() == expected("l", 30, 40)


async def test_unreadable_file_logged_once_others_flow(tmp_path, monkeypatch, caplog):
    """Permission denied on one file is logged once and counted; other files keep flowing."""
    bad, good = tmp_path / "bad.log", tmp_path / "good.log"
    bad.write_text("secret\n")
    good.write_text("ok\n")
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if str(path) == str(bad):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(tmp_path / "*.log")]), sink)) as a:
        await wait_until(lambda: len(sink.records) == 1, what="good file")
        await wait_until(lambda: a.metrics.events["permission_denied"] == 1)
        append(good, "ok2\n")
        await wait_until(lambda: len(sink.records) == 2, what="more from good file")
    assert sink.messages() == ["ok", "ok2"]
    assert sum("bad.log: cannot open" in r.getMessage() for r in caplog.records) == 1
    assert a.metrics.events["permission_denied"] == 1


async def test_sink_outage_backpressure_no_loss(tmp_path):
    """While the sink is down, reading stops at the memory bound and nothing is lost after recovery."""
    log = tmp_path / "app.log"
    log.write_text(lines("p" * 200, 0, 3000))  # ~600 KB
    s = fast_settings(tmp_path, [str(log)], read_chunk_bytes=16384, read_budget_bytes=16384)
    s.batch.max_bytes = 16384
    s.batch.memory_limit_bytes = 64 * 1024  # below the validated minimum on purpose: a tight bound
    sink = CollectSink()
    sink.down = True
    async with running(Agent(s, sink)) as a:
        await wait_until(lambda: sink.attempts >= 3, what="failing deliveries")
        read_while_down = a.metrics.bytes_read._value.get()
        assert a.fanout.budget.used <= 64 * 1024 + 16384 * 2
        assert read_while_down < 600_000 / 2
        sink.down = False
        await wait_until(lambda: len(sink.records) == 3000, what="all lines after recovery")
    assert sink.messages() == expected("p" * 200, 0, 3000)


async def test_ten_megabyte_line_truncated_and_next_line_intact(tmp_path):
    """A 10 MB line is emitted truncated and flagged; the lines around it are intact."""
    log = tmp_path / "app.log"
    with open(log, "wb") as f:
        f.write(b"before\n" + b"z" * (10 << 20) + b"\nafter\n")
    s = fast_settings(tmp_path, [str(log)], max_line_bytes=64 * 1024, read_chunk_bytes=1 << 20)
    sink = CollectSink()
    async with running(Agent(s, sink)) as a:
        await wait_until(lambda: len(sink.records) == 3, what="three records")
    msgs = sink.messages()
    assert msgs[0] == "before" and msgs[2] == "after"
    assert msgs[1] == "z" * (64 * 1024)
    assert sink.records[1]["log"]["flags"] == ["truncated"]
    assert a.metrics.events["line_too_long"] == 1


async def test_nul_bytes_and_invalid_utf8_pass(tmp_path):
    """NUL bytes and invalid UTF-8 pass through (replaced, flagged) without stopping the file."""
    log = tmp_path / "app.log"
    log.write_bytes(b"nul\x00inside\nbad \xff\xfe bytes\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\nlast\n")
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as a:
        await wait_until(lambda: sink.messages()[-1:] == ["last"], what="last line")
    msgs = sink.messages()
    assert msgs[0] == "nul\x00inside"
    assert msgs[1] == "bad \ufffd\ufffd bytes" and sink.records[1]["log"]["flags"] == ["invalid_utf8"]
    assert a.metrics.events["invalid_utf8"] >= 2


async def test_ignore_older_secs_skips_stale_files(tmp_path):
    """Files not modified within ignore_older_secs are not read."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text("stale\n")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    new.write_text("fresh\n")
    sink = CollectSink()
    s = fast_settings(tmp_path, [str(tmp_path / "*.log")], ignore_older_secs=3600)
    async with running(Agent(s, sink)) as a:
        await wait_until(lambda: len(sink.records) == 1, what="fresh file")
        await wait_until(lambda: len(a.source.tailing) == 1, what="one file tailed")
    assert sink.messages() == ["fresh"]


async def test_corrupt_checkpoint_restarts_from_head(tmp_path):
    """A corrupt checkpoint file is set aside and every file is read again from its head."""
    log = tmp_path / "app.log"
    log.write_text(lines("c", 0, 5))
    s = fast_settings(tmp_path, [str(log)], read_from="tail")
    os.makedirs(s.data_dir)
    with open(os.path.join(s.data_dir, "checkpoints.json"), "wb") as f:
        f.write(b"\x00garbage{")
    sink = CollectSink()
    async with running(Agent(s, sink)) as a:
        await wait_until(lambda: len(sink.records) == 5, what="whole file")
    assert sink.messages() == expected("c", 0, 5)
    assert a.metrics.events["checkpoint_corrupt"] == 1
    assert any(n.startswith("checkpoints.json.corrupt-") for n in os.listdir(s.data_dir))


async def test_noisy_file_does_not_starve_others(tmp_path):
    """With a huge file being read, a small file's lines still arrive before the huge one is done."""
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    big.write_text(lines("b" * 300, 0, 40000))  # ~12 MB
    small.write_text("small line\n")
    s = fast_settings(tmp_path, [str(big), str(small)], read_chunk_bytes=65536, read_budget_bytes=65536)
    sink = CollectSink()
    async with running(Agent(s, sink)):
        await wait_until(lambda: "small line" in sink.messages(), what="small file")
        position = sink.messages().index("small line")
        await wait_until(lambda: len(sink.records) == 40001, timeout=30, what="everything")
    assert position < 20000


def kubelet_file(tmp_path: Path) -> tuple[Path, Path]:
    """pods/<ns>_<pod>_<uid>/app/0.log and its containers/ symlink (relative, as the kubelet's)."""
    pod_dir = tmp_path / "pods" / "shop_cart-5d9c7b-q8w2e_0f1e2d3c-1111-2222-3333-444455556666" / "app"
    pod_dir.mkdir(parents=True)
    real = pod_dir / "0.log"
    real.touch()
    (tmp_path / "containers").mkdir()
    link = tmp_path / "containers" / f"cart-5d9c7b-q8w2e_shop_app-{'d' * 64}.log"
    link.symlink_to(os.path.relpath(real, link.parent))
    return real, link


def on_disk_reals(tmp_path: Path) -> set[str]:
    """Real paths of the files in the agent's checkpoint file as it is on disk now."""
    try:
        entries = orjson.loads((tmp_path / "data" / "checkpoints.json").read_bytes())["files"]
    except (OSError, orjson.JSONDecodeError):
        return set()
    return {e.get("real") for e in entries.values()}


def rotate_while_stopped(real: Path) -> Path:
    """The kubelet's rotation, done while no agent runs: rename, then a new file at the path."""
    rotated = real.with_name("0.log.20261124-100001")
    real.rename(rotated)
    real.write_text(lines("new", 0, 20))
    return rotated


async def test_file_renamed_while_the_agent_was_down_is_read_to_its_end(tmp_path):
    """Lines written after the last run and then rotated away (to a name the include pattern
    does not match) are read from the checkpoint, reported under the symlink's path."""
    real, link = kubelet_file(tmp_path)
    append(real, lines("old", 0, 40))
    s = fast_settings(tmp_path, [str(tmp_path / "containers" / "*.log")])
    sink = CollectSink()
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 40, what="first run")
    append(real, lines("old", 40, 70))
    rotated = rotate_while_stopped(real)
    sink2 = CollectSink()
    async with running(agent := Agent(s, sink2)):
        await wait_until(lambda: len(sink2.records) == 50, what="the rest of the old file and the new one")
        await wait_until(lambda: agent.checkpoints.age() == 0, what="checkpoints written")
    assert sorted(sink2.messages()) == sorted(expected("old", 40, 70) + expected("new", 0, 20))
    old = [r for r in sink2.records if r["message"].startswith("old")]
    assert {r["log"]["file"]["path"] for r in old} == {str(link)}
    assert old[0]["kubernetes"]["container_id"] == "d" * 64
    assert agent.metrics.events["file_renamed_while_stopped"] == 1
    # a third start finds the rotated file read to its end: it opens only the live one and
    # sends nothing again
    sink3 = CollectSink()
    async with running(agent3 := Agent(s, sink3)):
        await wait_until(lambda: [t.tailer.pos for t in agent3.source.tailing.values()]
                         == [real.stat().st_size] and agent3.unacked == 0, what="the live file at its end")
        assert [t.tailer.path for t in agent3.source.tailing.values()] == [str(link)]
    assert sink3.records == []
    assert rotated.exists()


async def test_file_opened_but_never_acknowledged_is_resumed_after_a_rename(tmp_path):
    """The sink was down for the whole first run: nothing was acknowledged, yet the file is
    known from the moment it was opened, so a rename while stopped loses none of it."""
    real, _ = kubelet_file(tmp_path)
    append(real, lines("old", 0, 30))
    s = fast_settings(tmp_path, [str(tmp_path / "containers" / "*.log")])
    s.shutdown_timeout_secs = 1
    sink = CollectSink()
    sink.down = True
    async with running(agent := Agent(s, sink)):
        await wait_until(lambda: sink.attempts >= 2, what="delivery attempts")
        assert len(agent.source.tailing) == 1
        # on disk while it runs, not only at a clean stop: a kill -9 now would keep it too
        await wait_until(lambda: str(real) in on_disk_reals(tmp_path), what="the file in checkpoints.json")
    assert sink.records == []
    rotate_while_stopped(real)
    sink2 = CollectSink()
    async with running(Agent(s, sink2)):
        await wait_until(lambda: len(sink2.records) == 50, what="old and new files")
    assert sorted(sink2.messages()) == sorted(expected("old", 0, 30) + expected("new", 0, 20))


async def test_recovered_rotation_interrupted_again_is_recovered_again(tmp_path):
    """The agent stops while reading a recovered rotation (the sink down): the next start finds
    the rotated file again and reads it then."""
    real, _ = kubelet_file(tmp_path)
    append(real, lines("old", 0, 40))
    s = fast_settings(tmp_path, [str(tmp_path / "containers" / "*.log")])
    s.shutdown_timeout_secs = 1
    sink = CollectSink()
    async with running(Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 40, what="first run")
    append(real, lines("old", 40, 70))
    rotate_while_stopped(real)
    down = CollectSink()
    down.down = True
    async with running(agent := Agent(s, down)):
        await wait_until(lambda: len(agent.source.tailing) == 2 and down.attempts >= 2,
                         what="both files, failing")
    sink3 = CollectSink()
    async with running(Agent(s, sink3)):
        await wait_until(lambda: len(sink3.records) == 50, what="the rest of the old file and the new one")
    assert sorted(sink3.messages()) == sorted(expected("old", 40, 70) + expected("new", 0, 20))


async def test_file_rotated_away_before_its_first_line_was_scanned_is_read(tmp_path):
    """A file that is still empty when discovery sees it is held open, not dropped: if it gets
    its lines and is renamed out of the include pattern before the next scan (a busy container
    under kubelet rotation), its lines are still read, through the open descriptor."""
    log = tmp_path / "app.log"
    log.touch()
    s = fast_settings(tmp_path, [str(tmp_path / "*.log")], scan_interval_secs=60.0)
    sink = CollectSink()
    async with running(agent := Agent(s, sink)):
        await wait_until(lambda: bool(agent.source._unidentified), what="the empty file held open")
        append(log, lines("early", 0, 10))
        log.rename(tmp_path / "app.log.1")  # rotated away: the pattern no longer matches it
        await wait_until(lambda: len(sink.records) == 10, what="the rotated file's lines")
    assert sink.messages() == expected("early", 0, 10)
    assert agent.source._unidentified == {}


async def test_file_created_and_rotated_away_between_two_scans_is_read(tmp_path):
    """Fast rotation: a whole file lives at the watched path between two scans (the periodic
    scan is a minute away and the tailer of the file before it has not reached its end). It is
    found beside the rotated files and read from its head; nothing is read twice."""
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 10))
    s = fast_settings(tmp_path, [str(log)], scan_interval_secs=60.0)
    sink = CollectSink()
    async with running(agent := Agent(s, sink)):
        await wait_until(lambda: len(sink.records) == 10, what="first file")
        # no await in between: the agent sees none of the intermediate states
        append(log, lines("a", 10, 20))
        os.rename(log, tmp_path / "app.log.1")
        log.write_text(lines("b", 0, 30))
        os.rename(log, tmp_path / "app.log.2")
        log.write_text(lines("c", 0, 5))
        await wait_until(lambda: len(sink.records) == 55, what="all three files")
        assert agent.metrics.events["file_rotated_unseen"] == 1
    want = expected("a", 0, 20) + expected("b", 0, 30) + expected("c", 0, 5)
    assert sorted(sink.messages()) == sorted(want)
    b = [r for r in sink.records if r["message"].startswith("b")]
    assert {r["log"]["file"]["path"] for r in b} == {str(log)}
    assert [r["message"] for r in b] == expected("b", 0, 30)


async def test_copytruncate_copy_beside_the_file_is_not_read_again(tmp_path):
    """A copy made by copytruncate starts with the first line of a file already read: the
    rotated-sibling check examines it and leaves it alone."""
    log = tmp_path / "app.log"
    log.write_text(lines("before", 0, 20))
    sink = CollectSink()
    async with running(a := Agent(fast_settings(tmp_path, [str(log)]), sink)):
        await wait_until(lambda: len(sink.records) == 20, what="first lines")
        (tmp_path / "app.log.1").write_bytes(log.read_bytes())
        with open(log, "r+") as f:
            f.truncate(0)
        await wait_until(lambda: a.metrics.events["file_truncated"] == 1, what="truncation seen")
        append(log, lines("after", 0, 3))
        await wait_until(lambda: len(sink.records) == 23, what="lines after truncation")
        copy = os.stat(tmp_path / "app.log.1")
        await wait_until(lambda: (copy.st_dev, copy.st_ino, copy.st_ctime_ns) in a.source.seen.checked,
                         what="the copy examined")
    assert sink.messages() == expected("before", 0, 20) + expected("after", 0, 3)
    assert a.metrics.events["file_rotated_unseen"] == 0


def test_a_retargeted_link_is_resolved_again(tmp_path):
    """Real paths are remembered per (path, device, inode) between scans: a link pointed at
    another file is resolved again, so `exclude` (matched against the target too) and the
    rotation recovery see where it leads now."""
    from agent.filesource.confine import Confinement
    from agent.filesource.discovery import Scanner

    for d in ("a", "b", "links"):
        (tmp_path / d).mkdir()
    (tmp_path / "a" / "0.log").write_text("x\n")
    (tmp_path / "b" / "0.log").write_text("y\n")
    link = tmp_path / "links" / "c.log"
    link.symlink_to(tmp_path / "a" / "0.log")
    include, exclude = [str(tmp_path / "links" / "*.log")], [str(tmp_path / "b" / "*")]
    scanner = Scanner(include, exclude, Confinement([str(tmp_path)]))
    [(path, st)] = scanner.scan()
    assert scanner.reals(path, st) == str(tmp_path / "a" / "0.log")
    assert [p for p, _ in scanner.scan()] == [path]
    link.unlink()
    link.symlink_to(tmp_path / "b" / "0.log")
    assert scanner.scan() == []
    scanner.exclude = []
    [(path, st)] = scanner.scan()
    assert scanner.reals(path, st) == str(tmp_path / "b" / "0.log")


async def test_compressions_in_progress_beside_a_file_are_not_read(tmp_path):
    """The kubelet compresses a rotation into `<name>.tmp` and renames it to `.gz`: neither is
    read as a rotation nobody saw, nor is a compressed stream under a plain name."""
    import gzip

    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 10))
    sink = CollectSink()
    async with running(agent := Agent(fast_settings(tmp_path, [str(log)]), sink)):
        await wait_until(lambda: len(sink.records) == 10, what="the first lines")
        (tmp_path / "app.log.20261124-100001.tmp").write_bytes(gzip.compress(os.urandom(4000)))
        zipped = tmp_path / "app.log.20261124-100002"
        zipped.write_bytes(gzip.compress(os.urandom(4000)))
        st = zipped.stat()
        await wait_until(lambda: (st.st_dev, st.st_ino, st.st_ctime_ns) in agent.source.seen.checked,
                         what="the siblings examined")
        append(log, lines("a", 10, 12))
        await wait_until(lambda: len(sink.records) >= 12, what="lines after")
    assert sink.messages() == expected("a", 0, 12)
    assert agent.metrics.events["file_rotated_unseen"] == 0
