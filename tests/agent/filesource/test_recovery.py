"""Rotation recovery as functions: a directory tree in tmp_path, files rotated the kubelet's way,
one call, what it returns. No agent runs."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from agent.filesource.checkpoints import Entry
from agent.filesource.discovery import owner
from agent.filesource.identity import FileId, identify_path
from agent.filesource.recovery import Seen, renamed_while_stopped, rotated_unseen
from agent.settings import SourceSettings


def fid_of(path: Path) -> FileId:
    fid = identify_path(str(path), 256)
    assert fid is not None
    return fid


def inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def examined(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def found(*paths: Path) -> list[tuple[str, os.stat_result]]:
    return [(str(p), os.stat(p)) for p in paths]


# -- renamed while stopped -------------------------------------------------------------------------


def pod_file(tmp_path: Path, text: str) -> tuple[Path, Path]:
    """A kubelet file `pods/p/0.log` and its link `containers/p.log`."""
    (tmp_path / "pods" / "p").mkdir(parents=True)
    (tmp_path / "containers").mkdir()
    real = tmp_path / "pods" / "p" / "0.log"
    real.write_text(text)
    link = tmp_path / "containers" / "p.log"
    link.symlink_to(real)
    return real, link


def test_a_file_renamed_while_stopped_is_found_beside_its_real_path(tmp_path):
    real, link = pod_file(tmp_path, "old 0\nold 1\n")
    fid = fid_of(real)
    entries = {fid.key: Entry(len("old 0\n"), str(link), str(real), 1)}
    rotated = real.with_name("0.log.20261124-100000")
    os.rename(real, rotated)
    real.write_text("new 0\n")  # the new 0.log: the scan finds it through the link
    scanned = {inode(real)}
    [start] = renamed_while_stopped(entries, set(), scanned, [])
    assert (start.path, start.fid, start.label, start.real, start.offset) == (
        str(rotated), fid, str(link), str(real), len("old 0\n"))
    assert (start.st.st_dev, start.st.st_ino) == inode(rotated) and start.key == fid.key


def test_a_renamed_file_is_left_alone_when_there_is_nothing_to_do(tmp_path):
    """Read to its checkpoint, being read, found by the scan, excluded since, compressed, or
    another file under the rotated name: nothing is returned."""
    real, link = pod_file(tmp_path, "old 0\n")
    fid = fid_of(real)
    rotated = real.with_name("0.log.20261124-100000")
    os.rename(real, rotated)
    size = rotated.stat().st_size
    behind = {fid.key: Entry(size - 1, str(link), str(real), 1)}
    assert renamed_while_stopped(behind, set(), set(), []) != []  # the case the others vary
    assert renamed_while_stopped({fid.key: Entry(size, str(link), str(real), 1)}, set(), set(), []) == []
    assert renamed_while_stopped(behind, {fid.key}, set(), []) == []
    assert renamed_while_stopped(behind, set(), {inode(rotated)}, []) == []
    assert renamed_while_stopped(behind, set(), set(), [str(tmp_path / "containers" / "*")]) == []
    assert renamed_while_stopped({fid.key: Entry(size - 1, str(link), None, 1)}, set(), set(), []) == []
    assert renamed_while_stopped({"not-a-key": Entry(0, str(link), str(real), 1)}, set(), set(), []) == []
    other = FileId(fid.dev, fid.ino + 1, fid.fp).key  # another inode under the same real path
    assert renamed_while_stopped({other: Entry(0, str(link), str(real), 1)}, set(), set(), []) == []
    with open(rotated, "rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
        dst.write(src.read())
    os.unlink(rotated)
    assert renamed_while_stopped(behind, set(), set(), []) == []


def test_a_file_whose_link_went_away_is_found_at_its_real_path(tmp_path):
    """The container restarted while the agent was down: its link now leads to `1.log`, and
    `0.log` is still where it was, with lines past its checkpoint."""
    real, link = pod_file(tmp_path, "a 0\n")
    fid = fid_of(real)
    entries = {fid.key: Entry(len("a 0\n"), str(link), str(real), 1)}
    with open(real, "a") as f:
        f.write("a 1\n")
    link.unlink()
    (real.parent / "1.log").write_text("b 0\n")
    link.symlink_to(real.parent / "1.log")
    [start] = renamed_while_stopped(entries, set(), {inode(real.parent / "1.log")}, [])
    assert (start.path, start.label, start.offset) == (str(real), str(link), len("a 0\n"))


# -- rotated away between two scans ----------------------------------------------------------------

SETTINGS = SourceSettings()


def unseen(scan: list[tuple[str, os.stat_result]], seen: Seen, *, tailed=(), open_inodes=frozenset(),
           shard=(0, 1), since: float | None = None, settings: SourceSettings = SETTINGS):
    targets = {os.path.realpath(p): p for p, _ in scan}
    scanned = {(st.st_dev, st.st_ino) for _, st in scan}
    return rotated_unseen(scan, scanned, targets, list(tailed), set(open_inodes), seen,
                          settings=settings, shard=shard,
                          since=time.time() - 60 if since is None else since, now=time.time())


def test_a_file_rotated_away_between_two_scans_is_returned(tmp_path):
    """`app.log` was read as `a`; since the last scan it was rotated to `.1`, a new file `b`
    lived at `app.log` and was rotated to `.2`, and `c` is at `app.log` now."""
    log = tmp_path / "app.log"
    log.write_text("a 0\n")
    a = fid_of(log)
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("b 0\nb 1\n")
    os.rename(log, tmp_path / "app.log.2")
    log.write_text("c 0\n")
    seen = Seen(fingerprints={a.fp})
    got = unseen(found(log), seen, tailed=[(str(tmp_path / "app.log.1"), str(log))],
                 open_inodes={inode(tmp_path / "app.log.1")})
    [start] = got.starts
    b = tmp_path / "app.log.2"
    assert (start.path, start.label, start.real, start.offset) == (
        str(b), str(log), os.path.realpath(log), None)
    assert start.fid == fid_of(b)
    assert got.checked == {examined(b)}  # `.1` is open: not examined
    assert got.fingerprints == {fid_of(log).fp} and got.sizes == {inode(log): log.stat().st_size}
    seen.update(got)
    assert unseen(found(log), seen).starts == []  # examined once


def test_copies_compressions_and_other_workers_files_are_not_returned(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first line\nmore\n")
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())  # copytruncate's copy
    (tmp_path / "app.log.2").write_bytes(gzip.compress(os.urandom(4000)))  # compressed, plain name
    (tmp_path / "app.log.3.gz").write_bytes(gzip.compress(b"y 0\n"))
    (tmp_path / "app.log.4.tmp").write_bytes(b"z 0\n")
    got = unseen(found(log), Seen())
    assert got.starts == []
    assert got.checked == {examined(tmp_path / "app.log.1"), examined(tmp_path / "app.log.2")}
    (tmp_path / "app.log.5").write_text("w 0\n")
    mine = owner(*inode(tmp_path / "app.log.5"), 2)
    assert [s.path for s in unseen(found(log), Seen(), shard=(mine, 2)).starts] == [
        str(tmp_path / "app.log.5")]
    assert unseen(found(log), Seen(), shard=(1 - mine, 2)).starts == []


def test_files_rotated_before_the_start_old_or_excluded_are_not_examined(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("a 0\n")
    rotated = tmp_path / "app.log.1"
    rotated.write_text("b 0\n")
    assert len(unseen(found(log), Seen()).starts) == 1
    before = unseen(found(log), Seen(), since=time.time() + 60)  # changed before the agent started
    assert (before.starts, before.checked) == ([], set())
    os.utime(rotated, (time.time() - 3600, time.time() - 3600))
    old = SourceSettings(ignore_older_secs=60)
    assert unseen(found(log), Seen(), settings=old).starts == []
    excl = SourceSettings(exclude=[str(tmp_path / "*.1")])
    assert unseen(found(log), Seen(), settings=excl).starts == []


def test_a_sibling_beside_two_families_is_returned_once(tmp_path):
    """`app.log.1.x` is beside `app.log` (found) and beside `app.log.1` (being read)."""
    log = tmp_path / "app.log"
    log.write_text("a 0\n")
    one = tmp_path / "app.log.1"
    one.write_text("b 0\n")
    two = tmp_path / "app.log.1.x"
    two.write_text("c 0\n")
    got = unseen(found(log), Seen(fingerprints={fid_of(one).fp}), tailed=[(str(one), str(log))],
                 open_inodes={inode(one)})
    assert [s.path for s in got.starts] == [str(two)]


def test_files_with_the_same_first_line_are_all_returned_for_the_caller_to_choose(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("a 0\n")
    (tmp_path / "app.log.1").write_text("same\nx\n")
    (tmp_path / "app.log.2").write_text("same\ny\n")
    got = unseen(found(log), Seen())
    assert sorted(s.path for s in got.starts) == [str(tmp_path / "app.log.1"), str(tmp_path / "app.log.2")]
    assert len({s.fid.fp for s in got.starts}) == 1


def test_a_left_behind_file_is_looked_at_until_it_has_a_first_line(tmp_path):
    """The kubelet rotated `0.log` and the container restarted before a scan followed the link
    to the new `0.log`: no scanned path leads there any more."""
    pod = tmp_path / "pod"
    pod.mkdir()
    zero = pod / "0.log"
    zero.write_text("")  # created by the rotation, not written to yet
    one = pod / "1.log"
    one.write_text("b 0\n")
    seen = Seen(left_behind={str(zero): "/c/link.log"})
    got = unseen(found(one), seen)
    assert (got.starts, got.left_behind, got.checked) == ([], {str(zero): "/c/link.log"}, set())
    seen.update(got)
    zero.write_text("a 0\n")
    got = unseen(found(one), seen)
    [start] = got.starts
    assert (start.path, start.label, start.real) == (str(zero), "/c/link.log", str(zero))
    assert got.left_behind == {}
    zero.unlink()
    assert unseen(found(one), Seen(left_behind={str(zero): "/c/link.log"})).left_behind == {}


def test_scanned_files_are_fingerprinted_once_and_again_after_they_shrank(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("a 0\n")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    seen = Seen(sizes={(0, 1): 5})  # a file no scan finds any more
    got = unseen(found(log, empty), seen)
    assert got.fingerprints == {fid_of(log).fp}
    assert got.sizes == {inode(log): 4}  # the empty one: again at the next scan
    seen.update(got)
    with open(log, "a") as f:
        f.write("a 1\n")
    got = unseen(found(log), seen)
    assert got.fingerprints == set() and got.sizes == {inode(log): 8}
    seen.update(got)
    log.write_text("b\n")  # truncated and rewritten (copytruncate)
    assert unseen(found(log), seen).fingerprints == {fid_of(log).fp}
