"""File identity: device + inode + a fingerprint of the file's first bytes.

The fingerprint is a hash of the first line, or of the first `fingerprint_bytes` bytes when the
first line is longer; a file with neither yet has no identity and waits. It stays the same while
the file grows, and tells a new file that reuses a deleted file's inode from the old one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

KEY = re.compile(r"(\d+):(\d+):([0-9a-f]+)")  # device:inode:fingerprint


@dataclass(frozen=True, slots=True)
class FileId:
    dev: int
    ino: int
    fp: str
    # The string the file is known by in checkpoints and batches: `device:inode:fingerprint`;
    # made once, so that every place that keeps it (10,000 files) shares one string.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.dev}:{self.ino}:{self.fp}")

    @classmethod
    def parse(cls, key: str) -> FileId:
        """The identity `key` (as made by `FileId.key`) stands for; ValueError if it is not one."""
        m = KEY.fullmatch(key)
        if m is None:
            raise ValueError(f"not a file key (device:inode:fingerprint): {key!r}")
        return cls(int(m[1]), int(m[2]), m[3])


def fingerprint(fd: int, nbytes: int, allow_short: bool = False) -> str | None:
    """`allow_short`: a file without a complete first line is fingerprinted as it is (for --once,
    which reads each file once and never needs to recognise it again)."""
    head = os.pread(fd, nbytes, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < nbytes and not (allow_short and head):
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def identify(fd: int, nbytes: int, allow_short: bool = False) -> FileId | None:
    st = os.fstat(fd)
    fp = fingerprint(fd, nbytes, allow_short)
    return None if fp is None else FileId(st.st_dev, st.st_ino, fp)


def identify_path(path: str, nbytes: int) -> FileId | None:
    """The identity of the file at `path`; None while it has no complete first line. OSError if
    it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return identify(fd, nbytes)
    finally:
        os.close(fd)
