"""Linux inotify, through libc with ctypes: file changes wake the tailers and new files wake
discovery at once, instead of at the next poll (`poll_interval_ms`) or scan
(`scan_interval_secs`), which stay as the fallback (inotify misses changes on some network and
FUSE filesystems, and its queue can overflow).

Directories are watched, not files: the directory of a file tells about writes to it
(IN_MODIFY), and about its rotation and its successor (IN_MOVED_FROM, IN_CREATE) even before the
new file is known. A watch ends by itself when its directory is deleted (IN_IGNORED). With
several workers, each also watches the directories of the other workers' files for names only
(no event per write), so that a rotation there wakes its discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger("tailship.inotify")

IN_MODIFY = 0x2
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_MASK_ADD = 0x20000000
IN_ONLYDIR = 0x1000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_ONLYDIR
NAMES_CHANGED = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
NAMES_MASK = NAMES_CHANGED | IN_DELETE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
# file systems where writes by other machines (or a FUSE daemon) produce no inotify event: files
# there are polled even when their directory is watched
REMOTE_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
             "afs", "ncpfs", "virtiofs", "fuse")


def mounts(path: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    """(mount point, file system type) of each mount, the longest mount points first."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    out = [(r[1].replace("\\040", " "), r[2]) for r in rows if len(r) >= 3]
    return sorted(out, key=lambda m: len(m[0]), reverse=True)


def remote(directory: str, table: list[tuple[str, str]]) -> bool:
    """Whether `directory` lies on a file system of `REMOTE_FS` (or any FUSE one)."""
    real = os.path.realpath(directory)
    for point, fstype in table:
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return fstype in REMOTE_FS or fstype.startswith("fuse")
    return False


class DirWatcher:
    """Watches directories; calls `on_event(directory, name, mask)` for each event (name "" for
    the directory itself) and `on_overflow()` when the kernel dropped events."""

    def __init__(self, on_event: Callable[[str, str, int], None], on_overflow: Callable[[], None]) -> None:
        self.on_event = on_event
        self.on_overflow = on_overflow
        self.fd = -1
        self.dirs: dict[int, list[str]] = {}  # watch descriptor -> the paths it was asked for by
        self.watched: dict[str, int] = {}   # directory -> watch descriptor
        self._libc: ctypes.CDLL | None = None
        self._full_warned = False
        self.missed = False  # a watch could not be added for lack of room: events may be missed
        self._mounts: list[tuple[str, str]] = []
        self._remote: set[str] = set()  # watched directories on a remote or FUSE file system
        self._names_only: set[str] = set()  # directories watched for names only

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Open the inotify instance; False (and polling only) where inotify is not available."""
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            init = libc.inotify_init1
        except (OSError, AttributeError, TypeError):
            return False
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable (%s); files are polled", os.strerror(ctypes.get_errno()))
            return False
        self.fd, self._libc = fd, libc
        self._mounts = mounts()
        loop.add_reader(fd, self._readable)
        return True

    def watch(self, directory: str, names_only: bool = False) -> None:
        """Watch `directory`: its names changing and writes to its files, or (`names_only`) only
        names created, moved or deleted in it. The kernel keeps one watch per directory inode,
        whatever path reached it: a names-only request adds to its mask (never narrows a full
        watch asked for under another path), a full one widens it."""
        if self._libc is None:
            return
        if directory in self.watched and (names_only or directory not in self._names_only):
            return
        mask = NAMES_MASK | IN_MASK_ADD if names_only else MASK
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), mask)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                self.missed = True
            if err == errno.ENOSPC and not self._full_warned:
                self._full_warned = True
                log.warning("inotify watch limit reached (fs.inotify.max_user_watches); %s and "
                            "later directories are polled", directory)
            return  # gone, not a directory, or no room: polling covers it
        paths = self.dirs.setdefault(wd, [])
        if directory not in paths:
            paths.append(directory)
        self.watched[directory] = wd
        if remote(directory, self._mounts):
            self._remote.add(directory)
        if names_only:
            self._names_only.add(directory)
        else:
            self._names_only.discard(directory)

    def full(self, directory: str) -> bool:
        """Whether writes to the files in `directory` are reported (watched in full, on a local
        file system)."""
        return (directory in self.watched and directory not in self._names_only
                and directory not in self._remote)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        self._libc = None
        self.dirs.clear()
        self.watched.clear()
        self._names_only.clear()

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("inotify read failed (%s); files are polled", exc.strerror)
            with contextlib.suppress(RuntimeError):
                self.close(asyncio.get_running_loop())
            self.on_overflow()  # everyone looks again, and polls from now on
            return
        for wd, mask, name in parse(data):
            if mask & IN_Q_OVERFLOW:
                self.on_overflow()
                continue
            paths = self.dirs.get(wd)
            if paths is None:
                continue
            if mask & IN_IGNORED:  # the directory is gone (or unmounted): the watch ended
                del self.dirs[wd]
                for directory in paths:
                    self.watched.pop(directory, None)
                    self._names_only.discard(directory)
                continue
            for directory in paths:
                self.on_event(directory, name, mask)


def parse(data: bytes) -> list[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each `struct inotify_event` in `data`."""
    out = []
    pos, size = 0, _HEADER.size
    while pos + size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
        raw = data[pos + size: pos + size + length]
        out.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
        pos += size + length
    return out
