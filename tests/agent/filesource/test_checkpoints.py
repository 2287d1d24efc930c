"""Checkpoint store and file identity."""

from __future__ import annotations

import os

import orjson
import pytest

from agent.filesource.checkpoints import FILE_NAME, CheckpointStore, Entry
from agent.filesource.identity import FileId, fingerprint, identify


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
    for key in ("gone", "here"):
        updated = s.entries[key].updated
        assert updated is not None
        s.entries[key].updated = updated - 10
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


def test_a_store_in_the_stored_format_loads_and_is_written_back_the_same(tmp_path):
    """Entries as earlier versions wrote them (with and without `real`; an old one without
    `path` or `updated`) load as typed entries and are written back unchanged."""
    files = {
        "64769:1001:0a1b2c3d4e5f6071": {"offset": 120, "path": "/c/a.log", "updated": 1700000000},
        "64769:1002:8899aabbccddeeff": {"offset": 7, "path": "/c/b.log", "updated": 1700000001,
                                        "real": "/p/b/0.log"},
        "64769:1003:00": {"offset": 0},
    }
    (tmp_path / FILE_NAME).write_bytes(orjson.dumps({"version": 1, "files": files}))
    s = CheckpointStore(tmp_path, tally()[1])
    assert s.load() is True
    assert s.entries["64769:1002:8899aabbccddeeff"] == Entry(7, "/c/b.log", "/p/b/0.log", 1700000001)
    assert s.entries["64769:1003:00"] == Entry(0)
    assert s.get("64769:1001:0a1b2c3d4e5f6071") == 120
    s.put("64769:1002:8899aabbccddeeff", 9, "/c/b.log")  # an acknowledgement keeps `real`
    assert s.persist() is True
    stored = orjson.loads((tmp_path / FILE_NAME).read_bytes())
    assert stored["version"] == 1
    assert stored["files"]["64769:1001:0a1b2c3d4e5f6071"] == files["64769:1001:0a1b2c3d4e5f6071"]
    assert stored["files"]["64769:1003:00"] == {"offset": 0}
    moved = stored["files"]["64769:1002:8899aabbccddeeff"]
    assert {k: moved[k] for k in ("offset", "path", "real")} == {"offset": 9, "path": "/c/b.log",
                                                                 "real": "/p/b/0.log"}


def test_opened_remembers_the_real_path_once(tmp_path):
    """`opened` adds a file read from an offset, or gives a known one its real path; a second
    call with the same real path changes nothing."""
    s = CheckpointStore(tmp_path, tally()[1])
    assert s.opened("1:2:ab", 10, "/c/x.log", "/p/x/0.log") is True
    assert s.opened("1:2:ab", 99, "/c/x.log", "/p/x/0.log") is False
    e = s.entries["1:2:ab"]
    assert (e.offset, e.path, e.real) == (10, "/c/x.log", "/p/x/0.log")
    s.put("3:4:cd", 5, "/c/y.log")
    assert s.opened("3:4:cd", 0, "/c/y.log", "/p/y/0.log") is True
    assert (s.entries["3:4:cd"].offset, s.entries["3:4:cd"].real) == (5, "/p/y/0.log")


def test_file_key_parses_back_to_its_identity():
    fid = FileId(64769, 123456, "0a1b2c3d4e5f6071")
    assert FileId.parse(fid.key) == fid
    for bad in ("gone", "1:2", "1:2:", "a:2:ff", "1:2:ff:3", "1:2:FF"):
        with pytest.raises(ValueError):
            FileId.parse(bad)
