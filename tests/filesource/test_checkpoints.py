"""Checkpoint store and file identity."""

from __future__ import annotations

import os

import orjson

from agent.filesource.checkpoints import FILE_NAME, CheckpointStore
from agent.filesource.identity import fingerprint, identify


def tally():
    counts: dict[str, int] = {}

    def count(name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n

    return counts, count


def test_roundtrip_and_atomic_write(tmp_path):
    """Offsets persist across instances; no temp file is left behind."""
    _, count = tally()
    s = CheckpointStore(tmp_path, count)
    s.load()
    s.put("1:2:ab", 123, "/x.log")
    assert s.persist() is True
    assert s.persist() is False  # nothing changed
    s2 = CheckpointStore(tmp_path, count)
    s2.load()
    assert s2.get("1:2:ab") == 123 and s2.get("other") is None
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]


def test_corrupt_file_set_aside(tmp_path):
    """A corrupt checkpoint file is renamed aside, counted, and reading restarts from scratch."""
    (tmp_path / FILE_NAME).write_bytes(b'{"version": 1, "files": {"k": {"offset": "x"')
    counts, count = tally()
    s = CheckpointStore(tmp_path, count)
    s.load()
    assert s.entries == {} and s.recovered_from_corruption
    assert counts == {"checkpoint_corrupt": 1}
    assert any(n.startswith(f"{FILE_NAME}.corrupt-") for n in os.listdir(tmp_path))


def test_wrong_structure_is_corrupt(tmp_path):
    """Valid JSON with a negative offset is treated as corrupt too."""
    (tmp_path / FILE_NAME).write_bytes(orjson.dumps({"version": 1, "files": {"k": {"offset": -5}}}))
    counts, count = tally()
    CheckpointStore(tmp_path, count).load()
    assert counts == {"checkpoint_corrupt": 1}


def test_forget_stale(tmp_path):
    """Entries of files not seen for the retention time are dropped; active ones stay."""
    _, count = tally()
    s = CheckpointStore(tmp_path, count, retention_secs=0)
    s.put("gone", 1, "/a")
    s.put("here", 2, "/b")
    s.entries["gone"]["updated"] -= 10
    s.entries["here"]["updated"] -= 10
    s.forget_stale({"here"})
    assert set(s.entries) == {"here"}


def test_fingerprint_waits_for_first_line_and_is_stable(tmp_path):
    """No identity before a first newline; afterwards growth does not change it."""
    p = tmp_path / "f.log"
    p.write_bytes(b"partial")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert fingerprint(fd, 256) is None
        with open(p, "ab") as f:
            f.write(b" line\n")
        fp1 = fingerprint(fd, 256)
        with open(p, "ab") as f:
            f.write(b"more lines\n" * 100)
        assert fingerprint(fd, 256) == fp1 is not None
    finally:
        os.close(fd)


def test_identity_distinguishes_inode_reuse(tmp_path):
    """Same device and inode with another first line is another identity."""
    p = tmp_path / "f.log"
    p.write_bytes(b"first content\n")
    fd = os.open(p, os.O_RDONLY)
    a = identify(fd, 256)
    os.close(fd)
    with open(p, "r+b") as f:  # same inode, new content
        f.write(b"other content\n")
    fd = os.open(p, os.O_RDONLY)
    b = identify(fd, 256)
    os.close(fd)
    assert a is not None and b is not None
    assert (a.dev, a.ino) == (b.dev, b.ino) and a.key != b.key
