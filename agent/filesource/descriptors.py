"""File descriptors: the process limit, and the share of it the file source may hold open.

Containers often start with a soft `RLIMIT_NOFILE` of 1024 under a hard limit of a million; the
agent raises its soft limit to the hard one at start (`raise_limit`) and reports both. Files
are then held open up to `source.max_open_files` (default: the soft limit less a reserve for
sockets, the checkpoint writes, inotify and the sinks, `default_max_open_files`). Past it a
file waits for a turn: tailers at the end of their file let go of their descriptor while files
wait (`Slots.wanted`), and files idle for `close_inactive_secs` let go of it anyway; either is
reopened by identity when it grows.

Running out of descriptors all the same (another part of the process, a lower limit set from
outside) is an error that is logged, counted and retried (`is_out_of_descriptors`), never a file
that vanished.
"""

from __future__ import annotations

import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("tailship.agent")

RESERVE_MIN = 32        # descriptors kept for everything but files: sockets, inotify, checkpoints
RESERVE_SHARE = 0.1     # ... or this share of the limit, whichever is more
UNLIMITED = 1 << 20     # a hard limit of RLIM_INFINITY is raised to this (the kernel's nr_open default)
LOG_EVERY_SECS = 60.0   # "too many open files" is logged at most this often (always counted)


class _Counts(Protocol):
    def event(self, name: str, n: int = 1) -> None: ...


def raise_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (where it is lower); (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # a hard limit above the kernel's nr_open
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft, hard
    return target, hard


def default_max_open_files(soft: int) -> int:
    """Files held open at most when `source.max_open_files` is 0: the soft limit less a reserve
    (at least 8 files)."""
    if soft == resource.RLIM_INFINITY:
        soft = UNLIMITED
    return max(8, soft - max(RESERVE_MIN, int(soft * RESERVE_SHARE)))


def is_out_of_descriptors(exc: OSError) -> bool:
    """EMFILE (this process) or ENFILE (the whole system)."""
    return exc.errno in (errno.EMFILE, errno.ENFILE)


_last_logged = -LOG_EVERY_SECS


def exhausted(metrics: _Counts, path: str) -> None:
    """Out of descriptors opening `path`: counted (`too_many_open_files`), logged at most once a
    minute; the caller tries again later."""
    global _last_logged
    metrics.event("too_many_open_files")
    now = time.monotonic()
    if now - _last_logged >= LOG_EVERY_SECS:
        _last_logged = now
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error("%s: cannot open: too many open files (limit %d, hard %d); it waits and is "
                  "opened again later; lower source.max_open_files or raise the limit", path, soft, hard)


class Slots:
    """Counts the files held open against `capacity`. `take()` is False when none is free (the
    caller waits for its turn and says so with `want()`); `wanted` tells tailers at the end of
    their file to let go of theirs."""

    def __init__(self, capacity: int, on_free: Callable[[], None] = lambda: None) -> None:
        self.capacity = capacity
        self.used = 0
        self.waiting = 0  # files that found no free slot since the last `served()`
        self.on_free = on_free  # called when a slot comes back while files wait

    def take(self) -> bool:
        if self.used >= self.capacity:
            self.want()
            return False
        self.used += 1
        return True

    def want(self) -> None:
        """A file waits for a descriptor (none free here, or the process ran out)."""
        self.waiting += 1

    def give(self) -> None:
        self.used -= 1
        if self.waiting:
            self.on_free()

    def served(self) -> None:
        """Called at each scan: who still waits says so again."""
        self.waiting = 0

    @property
    def wanted(self) -> bool:
        return self.waiting > 0
