"""File identity: device + inode + a fingerprint of the file's first bytes.

The fingerprint is a hash of the first line, or of the first `fingerprint_bytes` bytes when the
first line is longer; a file with neither yet has no identity and waits. It stays the same while
the file grows, and tells a new file that reuses a deleted file's inode from the old one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileId:
    dev: int
    ino: int
    fp: str

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}:{self.fp}"


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
