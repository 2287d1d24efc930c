"""Finding files: include/exclude patterns, symlinks followed within the allowed roots, one entry
per underlying file."""

from __future__ import annotations

import hashlib
import os
import stat
from fnmatch import fnmatch

from agent.filesource.confine import Confinement
from agent.filesource.walk import Listings, expand

Found = list[tuple[str, os.stat_result]]  # (path, stat) of each file a scan found


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


class Scanner:
    """The scans of one process: include patterns expanded over directory listings kept between
    scans (`walk`), each file's real path judged against the allowed roots (`confine`).

    `scan()` returns the files found; the paths refused by the last scan are in `refused` (path
    -> reason), those refused for the first time in `newly_refused` (to count and log once)."""

    def __init__(self, include: list[str], exclude: list[str], confinement: Confinement) -> None:
        self.include = include
        self.exclude = exclude
        self.confinement = confinement
        self.listings = Listings()
        self.reals = RealPaths()
        self.refused: dict[str, str] = {}
        self.newly_refused: list[tuple[str, str, str]] = []  # (path, real path, reason)

    def scan(self) -> Found:
        """Paths matching `include` and no `exclude` pattern (matched against the path and its
        target), each allowed regular file once (the first path that reaches it wins: list
        symlink patterns first). OSError(EMFILE) when out of descriptors (try again later)."""
        self.reals.next_scan()
        self.listings.next_scan()
        seen: set[tuple[int, int]] = set()
        found: Found = []
        refused: dict[str, str] = {}
        self.newly_refused = []
        for pattern in self.include:
            for path in sorted(expand(pattern, self.listings, self.confinement.inside)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # dangling symlink, or gone since the listing
                if stat.S_ISDIR(st.st_mode):
                    continue  # a directory a pattern matches is no file to read, nor refused
                real = self.reals(path, st)
                if self.exclude and excluded(self.exclude, path, real):
                    continue
                reason = self.confinement.refused(real, st)
                if reason is not None:
                    refused[path] = reason
                    if self.refused.get(path) != reason:
                        self.newly_refused.append((path, real, reason))
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    continue
                seen.add(ident)
                found.append((path, st))
        self.refused = refused
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


def rotated_siblings(real: str, listings: Listings | None = None) -> Found:
    """`<name>.*` beside the file at `real` (its rotations: `0.log.20261124-101500`), with their
    stat; compressed ones (`.gz`) and the kubelet's compression in progress (`.tmp`, renamed to
    `.gz` when done) are left out: they are never read. Only regular files: a rotation is a
    renamed file, never a symlink (which a tenant could point anywhere). `listings`: the
    directory is listed again only when it changed (see `walk.Listings`)."""
    folder, prefix = os.path.dirname(real), os.path.basename(real) + "."
    if listings is not None:
        listing = listings.list(folder)
        all_names: tuple[str, ...] | list[str] = listing.names if listing is not None else ()
    else:
        try:
            all_names = os.listdir(folder)
        except OSError:
            return []
    out = []
    for name in all_names:
        if not name.startswith(prefix) or name.endswith((".gz", ".tmp")):
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue  # gone since the listing
        if stat.S_ISREG(st.st_mode):
            out.append((path, st))
    return out
