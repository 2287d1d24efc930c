"""Finding files: include/exclude globs, symlinks followed, one entry per underlying file."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from fnmatch import fnmatch


def scan(include: list[str], exclude: list[str]) -> list[tuple[str, os.stat_result]]:
    """Paths matching `include` and no `exclude` pattern (matched against the path and its target),
    each regular file once (the first path that reaches it wins: list symlink patterns first)."""
    seen: set[tuple[int, int]] = set()
    found: list[tuple[str, os.stat_result]] = []
    for pattern in include:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if exclude and excluded(exclude, path, os.path.realpath(path)):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # dangling symlink, or gone since the glob
            if not stat.S_ISREG(st.st_mode):
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            found.append((path, st))
    return found


def excluded(exclude: list[str], *paths: str) -> bool:
    """Whether any of `paths` (a path and its target, say) matches an `exclude` pattern."""
    return any(fnmatch(path, p) for path in paths for p in exclude)


def owner(path: str, workers: int) -> int:
    """The worker (0 .. workers-1) that reads the file found under `path`: a stable hash of the
    path, the same in every process and every run, so that a container's log and its rotations
    stay with one worker and a worker finds its own checkpoints after a restart."""
    if workers <= 1:
        return 0
    # not crc32: it is linear, so names differing in one digit can all land on one worker
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers
