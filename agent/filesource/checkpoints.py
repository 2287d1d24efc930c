"""Persistent read positions, keyed by file identity.

Written atomically: a temp file in the same directory, fsynced, renamed over the old one, and the
directory fsynced, so a crash leaves either the old or the new version. A checkpoint only holds
offsets the sink has acknowledged (see `pipelines.batch.AckTracker`). A file that cannot be read or
parsed is set aside (renamed with a `.corrupt-<time>` suffix), and reading restarts from the head
of every file: duplicates, never loss.

On disk: `{"version": 1, "files": {"<device>:<inode>:<fingerprint>": {"offset": N, "path": P,
"real": R, "updated": T}}}`; in memory each entry is an `Entry`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.filesource.identity import KEY, FileId
from pipelines import layout
from pipelines.durable import fsync_dir, write_all

log = logging.getLogger("tailship.checkpoints")

FILE_NAME = layout.CHECKPOINTS
VERSION = 1


@dataclass(slots=True)
class Entry:
    """One file's checkpoint. Fields other than `offset` may be missing from a stored entry
    (None here, and left out again when written)."""

    offset: int                 # the first byte not yet acknowledged
    path: str | None = None     # the path its records are reported under
    real: str | None = None     # the real path it was opened at (see `CheckpointStore.opened`)
    updated: float | None = None  # wall-clock seconds (an int) of the last change, for `forget_stale`

    @classmethod
    def from_json(cls, e: dict[str, Any]) -> Entry:
        """An entry as `load` validated it (an int `offset` >= 0); a field of another type than
        this one writes is taken as missing."""
        path, real, updated = e.get("path"), e.get("real"), e.get("updated")
        return cls(e["offset"], path if isinstance(path, str) else None,
                   real if isinstance(real, str) else None,
                   updated if type(updated) in (int, float) else None)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"offset": self.offset}
        if self.path is not None:
            d["path"] = self.path
        if self.real is not None:
            d["real"] = self.real
        if self.updated is not None:
            d["updated"] = self.updated
        return d


class CheckpointStore:
    def __init__(self, data_dir: str | os.PathLike[str], count: Callable[[str, int], None],
                 retention_secs: float = 7 * 86400) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / FILE_NAME
        self.count = count
        self.retention_secs = retention_secs
        self.entries: dict[str, Entry] = {}
        self.recovered_from_corruption = False
        self._dirty = False
        self.written_at = time.monotonic()  # last write (or creation)

    def load(self, check_keys: bool = False) -> bool:
        """Read the store. A corrupt one is set aside (warned about and counted) and its files
        are read again from their head: False then. `check_keys`: every key must also be
        `device:inode:fingerprint` (`repartition` takes the owner from it)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return True
        try:
            data = orjson.loads(raw)
            entries = data["files"]
            if data.get("version") != VERSION or not isinstance(entries, dict) or not all(
                isinstance(e, dict) and type(e.get("offset")) is int and e["offset"] >= 0
                and (not check_keys or KEY.fullmatch(k))
                for k, e in entries.items()
            ):
                raise ValueError("unexpected structure")
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            self.count("checkpoint_corrupt", 1)
            self.recovered_from_corruption = True
            log.warning("checkpoint file %s is corrupt (%s); set aside as %s, files are read "
                        "again from their head", self.path, exc, aside.name)
            return False
        self.entries = {k: Entry.from_json(e) for k, e in entries.items()}
        return True

    def get(self, key: str) -> int | None:
        e = self.entries.get(key)
        return None if e is None else e.offset

    def put(self, key: str, offset: int, path: str) -> None:
        old = self.entries.get(key)
        real = old.real if old is not None and old.real else None
        self.entries[key] = Entry(offset, path, real, int(time.time()))
        self._dirty = True

    def opened(self, key: str, offset: int, path: str, real: str) -> bool:
        """A file is read from `offset`: remember it (and where it really lives) from now on,
        before any of it is acknowledged, so that a rename while the agent is down can be
        followed (see `recovery.renamed_while_stopped`). True when the store changed."""
        e = self.entries.get(key)
        if e is not None and e.real == real:
            return False
        if e is None:
            self.entries[key] = Entry(offset, path, real, int(time.time()))
        else:
            e.real, e.updated = real, int(time.time())
        self._dirty = True
        return True

    def forget_stale(self, active: set[str]) -> None:
        """Drop entries of files not seen for `retention_secs`."""
        cutoff = time.time() - self.retention_secs
        stale = [k for k, e in self.entries.items() if k not in active and (e.updated or 0) < cutoff]
        for k in stale:
            del self.entries[k]
        self._dirty |= bool(stale)

    def persist(self) -> bool:
        """Write the store if it changed; returns whether it wrote."""
        if not self._dirty:
            return False
        data = orjson.dumps({"version": VERSION,
                             "files": {k: e.to_json() for k, e in self.entries.items()}})
        tmp = self.path.with_name(f".{FILE_NAME}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, data)  # a nearly full disk may take only part of it at a time
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            # complete or not at all: the store written last stays in place (its files are read
            # again from older offsets: duplicates, never loss); `_dirty` stays, the caller retries
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.replace(tmp, self.path)
        fsync_dir(self.dir)
        self._dirty = False
        self.written_at = time.monotonic()
        return True

    def age(self) -> float:
        """Seconds the newest acknowledgements have waited to be written (0 when all are)."""
        return time.monotonic() - self.written_at if self._dirty else 0.0


def repartition(data_dir: str, workers: int, owner: Callable[[int, int, int], int]) -> int:
    """Move checkpoints to the store of the worker that now owns their file.

    Stores live in `<data_dir>` (one process) and `<data_dir>/worker-<i>`; after a change of
    `workers` an entry may sit in a store its file's owner never reads. Every entry is written
    to its owner's store (the highest offset wins if a file is in two), then stores that should
    hold nothing are emptied. Returns how many entries moved. Run before any worker starts."""
    sources = [data_dir, *(str(p) for _k, p in layout.worker_dirs(data_dir))]
    sources = [d for d in sources if os.path.exists(os.path.join(d, FILE_NAME))]
    if not sources or (workers <= 1 and sources == [data_dir]):
        return 0  # nothing stored, or one process's store where one process reads it
    stores: dict[str, CheckpointStore] = {}
    for d in sources:
        st = CheckpointStore(d, lambda _k, _n: None)
        try:
            if not st.load(check_keys=True):
                continue  # corrupt: set aside; its files are read again from their head
        except OSError as exc:
            log.warning("checkpoint file %s cannot be read (%s); its files are read again from "
                        "their head", st.path, exc.strerror or exc)
            continue
        stores[d] = st
    targets: dict[str, dict[str, Entry]] = {}
    moved = 0
    for d, st in stores.items():
        for key, e in st.entries.items():
            fid = FileId.parse(key)  # load(check_keys=True) let only keys pass
            dest = layout.worker_dir(data_dir, owner(fid.dev, fid.ino, workers), workers)
            moved += dest != d
            have = targets.setdefault(dest, {}).get(key)
            if have is None or e.offset > have.offset:
                targets[dest][key] = e
    if not moved:
        return 0
    for dest, entries in targets.items():
        os.makedirs(dest, exist_ok=True)
        st = stores.get(dest) or CheckpointStore(dest, lambda _k, _n: None)
        st.entries = entries
        st._dirty = True
        st.persist()
    for d, st in stores.items():
        if d not in targets:
            st.entries = {}
            st._dirty = True
            st.persist()
    log.info("checkpoints of %d file(s) moved to the store of the worker that now reads them", moved)
    return moved
