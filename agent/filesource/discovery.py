"""Finding files: include/exclude globs, symlinks followed, one entry per underlying file."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from fnmatch import fnmatch


class RealPaths:
    """The real path of each path a scan finds, resolved again only when the path leads to
    another file (device, inode) than at the scan before: `os.path.realpath` lstat()s every
    component of the path, which was the larger part of a scan on a node with hundreds of
    containers. Call it as `reals(path, st)`; `next_scan()` forgets the paths not found since."""

    def __init__(self) -> None:
        self._prev: dict[tuple[str, int, int], str] = {}
        self._cur: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: str, st: os.stat_result) -> str:
        key = (path, st.st_dev, st.st_ino)
        real = self._cur.get(key)
        if real is None:
            real = self._cur[key] = self._prev.get(key) or os.path.realpath(path)
        return real

    def next_scan(self) -> None:
        self._prev, self._cur = self._cur, {}


def scan(include: list[str], exclude: list[str], reals: RealPaths | None = None
         ) -> list[tuple[str, os.stat_result]]:
    """Paths matching `include` and no `exclude` pattern (matched against the path and its target),
    each regular file once (the first path that reaches it wins: list symlink patterns first)."""
    reals = reals or RealPaths()
    reals.next_scan()
    seen: set[tuple[int, int]] = set()
    found: list[tuple[str, os.stat_result]] = []
    for pattern in include:
        for path in sorted(glob.glob(pattern, recursive=True)):
            try:
                st = os.stat(path)
            except OSError:
                continue  # dangling symlink, or gone since the glob
            if exclude and excluded(exclude, path, reals(path, st)):
                continue
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


def owner(dev: int, ino: int, workers: int) -> int:
    """The worker (0 .. workers-1) that reads the file with device `dev` and inode `ino`: a
    stable hash of the file's identity, the same in every process and every run. A file keeps
    its inode through renames, so a rotated file stays with its worker whatever its new name
    (and whichever of several paths finds it), and a restarted worker finds its checkpoints."""
    if workers <= 1:
        return 0
    digest = hashlib.blake2b(f"{dev}:{ino}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


# the first bytes of gzip, zstd, bzip2 and xz streams
COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00")


def compressed(path: str) -> bool:
    """Whether the file at `path` starts like a compressed stream (a rotation being compressed
    under a name the suffix check does not know)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return False
    return head.startswith(COMPRESSED_MAGIC)


def rotated_siblings(real: str) -> list[tuple[str, os.stat_result]]:
    """`<name>.*` beside the file at `real` (its rotations: `0.log.20261124-101500`), with their
    stat; compressed ones (`.gz`) and the kubelet's compression in progress (`.tmp`, renamed to
    `.gz` when done) are left out: they are never read."""
    folder, prefix = os.path.dirname(real), os.path.basename(real) + "."
    try:
        names = [n for n in os.listdir(folder)
                 if n.startswith(prefix) and not n.endswith((".gz", ".tmp"))]
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            out.append((path, os.stat(path)))
        except OSError:
            continue  # gone since the listing
    return out
