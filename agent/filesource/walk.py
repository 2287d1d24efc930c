"""Expanding include patterns without `glob`: directory listings kept between scans, loops cut.

`glob.glob(pattern, recursive=True)` lists every directory again at every scan and follows
directory symlinks without remembering where it has been: two links `a -> .` and `b -> .` under a
`**` pattern make the number of paths grow without end, on the event loop. Here:

* a directory is listed again only when its (device, inode, mtime) changed since the last scan
  (`Listings`), or when its mtime is recent: two changes within one tick of the file system's
  clock leave the same mtime, so a listing taken between them is not trusted (git's "racy"
  rule);
* a `**` walk enters each directory once, by (device, inode), so a loop of links ends where it
  starts and a directory reached through two links is walked once (the first path in sorted
  order names its files);
* a directory symlink is followed only when its target lies inside the allowed roots (`inside`),
  so a link to `/` in a tenant's log directory does not walk the host's file system.

Matching follows glob's rules: `*`, `?` and `[...]` within a name, `**` any depth of directories
(zero included), names starting with `.` matched by a wildcard only when the pattern's name
starts with `.` too. Running out of descriptors while listing raises `OSError(EMFILE)`: the
caller retries the scan rather than take an unlistable directory for an empty one.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = re.compile(r"[*?\[]")
RACY_SECS = 2.0  # a listing of a directory changed this recently is taken again at the next scan
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


@dataclass(frozen=True, slots=True)
class Listing:
    dev: int
    ino: int
    mtime_ns: int
    trusted: bool               # False: changed too recently to be reused
    names: tuple[str, ...]      # sorted
    dirs: frozenset[str]        # names of subdirectories (not symlinks)
    links: frozenset[str]       # names of symlinks (directories or not: decided when used)


class Listings:
    """The listing of each directory the last scans looked at, by (device, inode): `list(path)`
    stats the directory and lists it again only if it changed (a directory reached through
    several paths is listed once). `next_scan()` forgets the directories not looked at since
    the scan before."""

    def __init__(self) -> None:
        self._prev: dict[tuple[int, int], Listing] = {}
        self._cur: dict[tuple[int, int], Listing] = {}
        self.listed = 0  # directories read (not reused) since start: for tests and the benchmark

    def next_scan(self) -> None:
        self._prev, self._cur = self._cur, {}

    def list(self, path: str) -> Listing | None:
        """The listing of directory `path`; None if it is not a listable directory. OSError
        (EMFILE, ENFILE) when out of descriptors."""
        try:
            st = os.stat(path or ".")
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino)
        cur, prev = self._cur.get(key), self._prev.get(key)
        if cur is not None and cur.mtime_ns == st.st_mtime_ns:
            return cur  # listed in this scan already
        if prev is not None and prev.trusted and prev.mtime_ns == st.st_mtime_ns:
            self._cur[key] = prev
            return prev
        listing = self._read(path, st)
        if listing is not None:
            self._cur[key] = listing
        return listing

    def _read(self, path: str, st: os.stat_result) -> Listing | None:
        names, dirs, links = [], set(), set()
        try:
            with os.scandir(path or ".") as it:
                for entry in it:
                    names.append(entry.name)
                    if entry.is_symlink():
                        links.add(entry.name)
                    elif entry.is_dir(follow_symlinks=False):
                        dirs.add(entry.name)
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                raise
            return None  # gone, not a directory, or not readable
        self.listed += 1
        trusted = time.time() - st.st_mtime > RACY_SECS
        return Listing(st.st_dev, st.st_ino, st.st_mtime_ns, trusted, tuple(sorted(names)),
                       frozenset(dirs), frozenset(links))


def expand(pattern: str, listings: Listings, inside: Callable[[str], bool]) -> list[str]:
    """The paths `pattern` matches (files, directories or anything else: the caller stats them),
    in sorted order per directory; `inside(path)`: whether the directory symlink at `path` may
    be followed (its target lies within the allowed roots)."""
    absolute = pattern.startswith("/")
    parts = [p for p in pattern.split("/") if p]
    paths = ["/" if absolute else ""]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt: list[str] = []
        if part == "**":
            for p in paths:
                nxt.extend(_tree(p, listings, inside, files=last))
        elif not MAGIC.search(part):
            nxt = [os.path.join(p, part) for p in paths]  # existence: checked when listed or stat'ed
        else:
            for p in paths:
                nxt.extend(_matching(p, part, listings, inside, dirs_only=not last))
        paths = nxt
        if not paths:
            break
    return paths


def _matching(parent: str, part: str, listings: Listings, inside: Callable[[str], bool],
              dirs_only: bool) -> list[str]:
    listing = listings.list(parent)
    if listing is None:
        return []
    names = listing.names if part.startswith(".") else [n for n in listing.names if n[0] != "."]
    out = []
    for name in fnmatch.filter(names, part):
        path = os.path.join(parent, name)
        if dirs_only and not (name in listing.dirs or (name in listing.links and _followable(path, inside))):
            continue
        out.append(path)
    return out


def _followable(path: str, inside: Callable[[str], bool]) -> bool:
    return os.path.isdir(path) and inside(path)


def _tree(top: str, listings: Listings, inside: Callable[[str], bool], files: bool) -> list[str]:
    """`top` and every directory below it (and, with `files`, every other name below it too),
    each directory entered once by (device, inode); hidden names left out, like glob's `**`."""
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    stack = [top]  # depth first, in sorted order; a stack, not recursion: depth is a tenant's choice
    while stack:
        d = stack.pop()
        listing = listings.list(d)
        if listing is None or (listing.dev, listing.ino) in seen:
            continue
        seen.add((listing.dev, listing.ino))
        out.append(d)
        below = []
        for name in listing.names:
            if name[0] == ".":
                continue
            path = os.path.join(d, name)
            if name in listing.dirs or (name in listing.links and _followable(path, inside)):
                below.append(path)
            elif files:
                out.append(path)
        stack.extend(reversed(below))
    return [p for p in out if p] if files else out
