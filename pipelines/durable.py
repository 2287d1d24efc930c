"""Durable writes shared by the files the agent keeps (disk buffer, file sink): a write that
continues short writes, an append that is on disk when it returns, and a directory fsync that
makes a new name survive a crash. Errors (`OSError`: a full or read-only disk) are raised for the
caller, which knows what to keep and what to retry."""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may write less than asked: a nearly full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_synced(path: Path, data: bytes) -> None:
    """Append `data` to the existing file `path` and fsync it; no descriptor stays open."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the names created in `directory` survive a crash."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
