"""Rotation recovery: files a rotation left where no include pattern leads, found from what
discovery knows (the checkpoints, a scan, what it remembers between scans).

The kubelet rotates by renaming `N.log` to `N.log.<time>`, which the include patterns do not
match. Two cases leave a file there with data nobody read:

* `renamed_while_stopped` (at the first scan): a checkpointed file renamed while the agent was
  down; read its rest from its checkpoint.
* `rotated_unseen` (at every later scan): a file created, filled and rotated away between two
  scans, or a file whose link went away before any scan followed it; read it from its head.

Both are functions: they read the file system (stat, first lines) but change nothing and start
nothing. They return the files to start (`Start`) and, for `rotated_unseen`, what to remember
from this scan; `FileSource` applies both.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from agent.filesource.checkpoints import Entry
from agent.filesource.discovery import Found, compressed, excluded, owner, rotated_siblings
from agent.filesource.identity import FileId, identify_path
from agent.filesource.walk import Listings
from agent.settings import SourceSettings

Inode = tuple[int, int]              # (device, inode)


@dataclass(frozen=True, slots=True)
class Start:
    """A file to open and tail, if it still has identity `fid` when it is opened."""

    path: str              # where it is now
    st: os.stat_result
    fid: FileId            # its identity when it was found
    label: str             # the path its records are reported under
    real: str              # the real path it is remembered under (its old one, for a rotation)
    offset: int | None = None  # its checkpoint (renamed while stopped); None: from its head

    @property
    def key(self) -> str:
        return self.fid.key


@dataclass(slots=True)
class Seen:
    """What discovery remembers between scans for `rotated_unseen`."""

    # fingerprints of the first lines of every file tailed or scanned
    fingerprints: set[str] = field(default_factory=set)
    # (dev, ino, ctime_ns) of the rotated files examined
    checked: set[tuple[int, int, int]] = field(default_factory=set)
    # size of each scanned file when it was last fingerprinted
    sizes: dict[Inode, int] = field(default_factory=dict)
    # real paths of files no scanned path leads to any more -> the path they were found under
    left_behind: dict[str, str] = field(default_factory=dict)

    def update(self, found: Unseen) -> None:
        """Take in what a `rotated_unseen` call learnt."""
        self.fingerprints |= found.fingerprints
        self.checked |= found.checked
        self.sizes = found.sizes
        self.left_behind = found.left_behind


@dataclass(slots=True)
class Unseen:
    """What `rotated_unseen` found: the files to start and what to remember (see `Seen.update`)."""

    starts: list[Start]
    fingerprints: set[str]                # of scanned files, new or shrunk since: to add
    checked: set[tuple[int, int, int]]    # siblings examined now: to add
    sizes: dict[Inode, int]               # replaces `Seen.sizes`
    left_behind: dict[str, str]           # replaces `Seen.left_behind`


def beside(real: str, unreached: bool, listings: Listings | None = None) -> Found:
    """The rotations beside `real`, and, when no path the scan found leads to `real` any more
    (`unreached`), the file at `real` itself: the new `0.log` a rotation made, whose link went
    away at a container restart before any scan followed it there."""
    siblings = rotated_siblings(real, listings)
    if unreached:
        with contextlib.suppress(OSError):
            st = os.lstat(real)  # not a link: one put there since could lead anywhere
            if stat.S_ISREG(st.st_mode):
                siblings.append((real, st))
    return siblings


def renamed_while_stopped(entries: Mapping[str, Entry], tailing: AbstractSet[str],
                          scanned: AbstractSet[Inode], exclude: list[str]) -> list[Start]:
    """Checkpointed files renamed while the agent was down, to read their rest.

    Every checkpointed file that is not being read (`tailing`: keys) and that no pattern found
    (`scanned`) is looked for at its last real path and beside it, as `<name>.*`, with the same
    device and inode; one with data past its checkpoint is returned, to be read from there
    (reported under its old path) until it is deleted. (At its real path: a file read through a
    link that is gone, such as the `0.log` of a container that restarted, recovered by
    `rotated_unseen`.) Compressed rotations (`.gz`) and files now matching `exclude` are not
    read; `ignore_older_secs` does not apply (the rest of a file already being read is not
    "old"). Entries without a real path (written before it was kept) and keys that are not
    `device:inode:fingerprint` are passed over."""
    starts = []
    for key, e in entries.items():
        real = e.real
        if key in tailing or real is None:
            continue
        try:
            fid = FileId.parse(key)
        except ValueError:
            continue  # not a key this agent writes: no file of ours
        label = e.path or real
        if excluded(exclude, label, real) or (fid.dev, fid.ino) in scanned:
            continue  # excluded since it was read, or found by the scan under a new name
        for cand, st in beside(real, True):
            if (st.st_dev, st.st_ino) == (fid.dev, fid.ino) and st.st_size > e.offset:
                starts.append(Start(cand, st, fid, label, real, e.offset))
                break
    return starts


def rotated_unseen(found: Found, scanned: AbstractSet[Inode], targets: Mapping[str, str],
                   tailed: Iterable[tuple[str, str]], open_inodes: AbstractSet[Inode], seen: Seen,
                   *, settings: SourceSettings, shard: tuple[int, int], since: float,
                   now: float, listings: Listings | None = None) -> Unseen:
    """Files that were created, filled and rotated away between two scans.

    Under fast rotation (a container writing megabytes a second, rotated at `10 MiB`) a file's
    whole life at the watched path can fit between two scans (inotify makes that rare; it is not
    always there). Beside the real path of every file the scan found (`targets`: real path ->
    path, every worker's) and of every file being read (`tailed`: (real path, label) pairs),
    `<name>.*` files of this worker (`shard`: (index, workers), see `owner`), renamed since the
    agent started (`since`: ctime at or after it), not found by the scan (`scanned`), not open
    (`open_inodes`) and with a first line never seen are such files: returned to be read from
    their head, reported under the path of the file beside which they were found. The
    fingerprint check keeps copytruncate's copies out (a copy starts with the first line of the
    file it copies: the fingerprints of every scanned file, this worker's or not, are
    remembered, and taken again when one shrinks); `.gz` and excluded names are not read.

    A real path that the scan no longer reaches (`seen.left_behind`) is looked at too, itself as
    well as its rotations: the kubelet rotates `0.log` and, before a scan has followed the link
    to the new `0.log`, the container restarts and its link is replaced by one to `1.log`. It is
    looked at until its file has a first line or is gone.

    Two of the files returned may have the same first line (one a copy of the other): the
    caller starts a file only while its first line is not among those of the files it tails.
    """
    index, workers = shard
    nbytes = settings.fingerprint_bytes
    sizes = {ident: size for ident, size in seen.sizes.items() if ident in scanned}
    fingerprints: set[str] = set()
    for path, st in found:  # fingerprints of scanned files: once per file, again after it shrank
        ident = (st.st_dev, st.st_ino)
        size = sizes.get(ident)
        sizes[ident] = st.st_size
        if size is not None and st.st_size >= size:
            continue
        try:
            fid = identify_path(path, nbytes)
        except OSError:
            fid = None
        if fid is None:
            del sizes[ident]  # no first line yet: again at the next scan
        else:
            fingerprints.add(fid.fp)
    families = dict(targets)
    for real, label in tailed:
        families.setdefault(real, label)
    families.update((real, label) for real, label in seen.left_behind.items() if real not in families)
    starts: list[Start] = []
    checked: set[tuple[int, int, int]] = set()
    waiting: set[str] = set()  # left-behind paths whose file has no first line yet
    for real, label in families.items():
        for cand, st in beside(real, real not in targets, listings):
            ident = (st.st_dev, st.st_ino)
            examined = (st.st_dev, st.st_ino, st.st_ctime_ns)
            # ctime: the kernel's coarse clock may lag time.time() by a tick
            if (ident in open_inodes or ident in scanned or examined in seen.checked
                    or examined in checked or owner(st.st_dev, st.st_ino, workers) != index
                    or st.st_ctime < since - 1.0 or not stat.S_ISREG(st.st_mode)
                    or (settings.ignore_older_secs and now - st.st_mtime > settings.ignore_older_secs)
                    or excluded(settings.exclude, label, cand)):
                continue
            try:
                fid = identify_path(cand, nbytes)
            except OSError:
                continue  # gone since, or unreadable
            if fid is None:
                waiting.add(real)
                continue  # no complete first line yet: looked at again at the next scan
            checked.add(examined)
            if fid.fp in seen.fingerprints or fid.fp in fingerprints or compressed(cand):
                # tailed before (the file this one rotated from), a copy of one, or a
                # compression in progress (the kubelet writes `<name>.tmp`, then `.gz`)
                continue
            starts.append(Start(cand, st, fid, label, real))
    left_behind = {real: label for real, label in seen.left_behind.items() if real in waiting}
    return Unseen(starts, fingerprints, checked, sizes, left_behind)
