"""`FileSource`: finds the files to read, tails each one, follows rotations, and hands what it
reads to `emit` as `Segment`s.

A scan (`discover`) lists the files the include patterns reach (`discovery.scan`); each one of
this worker's (`discovery.owner`) not open yet is opened, identified (`identity`: device, inode,
fingerprint of its first line) and tailed by a `FileTailer` from its checkpoint (or its head, or
its end with `read_from = "tail"` at the first scan). A file without a first line yet is held
open until it has one. Files a rotation took where no pattern leads are found by `recovery`.
Scans run every `scan_interval_secs`, and at once when a tailer sees its file rotated away or
inotify (`inotify.DirWatcher`) reports a name created, moved or deleted; inotify also wakes a
tailer when its file is written to.

The source records in the `CheckpointStore` where each file it opens lives (`opened`) and drops
entries of files long gone (`forget_stale`); moving checkpoints on acknowledgements, loading and
writing the store is the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.filesource.checkpoints import CheckpointStore
from agent.filesource.discovery import RealPaths, owner, scan
from agent.filesource.identity import FileId, identify
from agent.filesource.inotify import NAMES_CHANGED, DirWatcher
from agent.filesource.recovery import Found, Inode, Seen, renamed_while_stopped, rotated_unseen
from agent.filesource.tailer import FileTailer
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import FileProcessor
from pipelines.records import Segment

log = logging.getLogger("tailship.agent")  # the name these lines had before the source moved here

RESCAN_COALESCE_SECS = 0.02  # an asked-for scan waits this long, so a burst of events makes one


@dataclass
class Tailing:
    tailer: FileTailer
    task: asyncio.Task[None]
    inode: Inode
    label: str      # the path its records are reported under
    real: str       # the real path it was opened at

    def names(self) -> set[tuple[str, str]]:
        """(directory, name) pairs under which inotify reports changes to this file."""
        return {os.path.split(self.tailer.path), os.path.split(self.real)}


class FileSource:
    """The files of one agent process (`shard`: (index, workers)).

    `emit(segment)` takes what a tailer read (it may wait: backpressure);
    `new_processor(fid, path, real_path)` makes the chain a file's lines go through;
    `on_opened()` is called when opening a file changed the checkpoint store (write it soon).
    `once`: read each file found by one `discover` to its end, then stop (no inotify, no
    holding of files without a first line)."""

    def __init__(self, settings: SourceSettings, checkpoints: CheckpointStore, *,
                 shard: tuple[int, int] = (0, 1), once: bool = False,
                 emit: Callable[[Segment], Awaitable[None]],
                 new_processor: Callable[[FileId, str, str], FileProcessor], metrics: Metrics,
                 on_opened: Callable[[], None] = lambda: None) -> None:
        self.s = settings
        self.checkpoints = checkpoints
        self.shard = shard
        self.once = once
        self.emit = emit
        self.new_processor = new_processor
        self.metrics = metrics
        self.on_opened = on_opened
        self.tailing: dict[str, Tailing] = {}  # file key -> its tailer
        self.watcher: DirWatcher | None = None
        self.files_seen: set[Inode] = set()  # every file tailed since the start
        self.seen = Seen()  # fingerprints, siblings examined, ... (see `recovery.rotated_unseen`)
        self.since = time.time()  # wall time the agent started: rotations since then are recovered
        self._by_name: dict[tuple[str, str], set[FileTailer]] = {}  # (dir, name) -> tailers to wake
        self._held_names: set[tuple[str, str]] = set()  # (dir, name) of files in _unidentified
        self._reals = RealPaths()
        self._targets: dict[str, str] = {}  # real path -> path, of the files the last scan found
        self._warned: set[str] = set()
        # (dev, ino) -> (fd, path) of files opened before they had a first line
        self._unidentified: dict[Inode, tuple[int, str]] = {}
        self._first_scan = True
        self._stop_reading = asyncio.Event()
        self._rescan = asyncio.Event()

    # -- the interface the agent uses -------------------------------------------------------------

    def start(self, since: float | None = None) -> None:
        """Start watching with inotify (unless `once` or switched off). `since`: the wall time the
        agent started (default now); files rotated after it may be read by `rotated_unseen`."""
        if since is not None:
            self.since = since
        if self.once or not self.s.inotify:
            return
        self.watcher = DirWatcher(self._on_fs_event, self._on_fs_overflow)
        if not self.watcher.start(asyncio.get_running_loop()):
            self.watcher = None
            return
        for pattern in self.s.include:  # new files: the fixed directory of each pattern
            self.watcher.watch(os.path.dirname(re.split(r"[*?\[]", pattern, maxsplit=1)[0]))

    async def run(self) -> None:
        """Scan, and again every `scan_interval_secs` or when asked to (`wake`); until cancelled."""
        while True:
            await self.discover()
            # a tailer that sees its path name another file (rotation), or inotify reporting a
            # name created or moved, asks for a scan at once, so the new file is opened before
            # it can be rotated away unread
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan.wait(), self.s.scan_interval_secs)
                await asyncio.sleep(RESCAN_COALESCE_SECS)  # one scan for a burst of events
            self._rescan.clear()

    def wake(self) -> None:
        """Ask `run` for a scan now."""
        self._rescan.set()

    async def discover(self) -> None:
        """One scan: start the files found and not open yet, then recover rotations."""
        src = self.s
        now = time.time()
        self._identify_held()
        open_inodes = {t.inode for t in self.tailing.values()} | set(self._unidentified)
        index, workers = self.shard
        found = scan(src.include, src.exclude, self._reals)
        scanned = {(st.st_dev, st.st_ino) for _, st in found}  # every worker's, not only ours
        for path, st in found:
            if (st.st_dev, st.st_ino) in open_inodes or owner(st.st_dev, st.st_ino, workers) != index:
                continue
            if src.ignore_older_secs and now - st.st_mtime > src.ignore_older_secs:
                continue
            self._start_file(path, st)
        self._follow_targets(found)
        if self._first_scan:
            self._recover_renamed(scanned)
        else:
            self._recover_rotated_unseen(found, scanned)
        self._first_scan = False
        active = set(self.tailing)
        self.checkpoints.forget_stale(active)

    def tailers_done(self) -> asyncio.Future[list[None]]:
        """Done when every file being tailed now is read to its end (with `once`)."""
        return asyncio.gather(*(t.task for t in list(self.tailing.values())))

    async def stop(self) -> None:
        """Stop every tailer (unread data stays on disk: its checkpoint did not move)."""
        self._stop_reading.set()
        for entry in self.tailing.values():
            entry.tailer.wake.set()
        tasks = [t.task for t in self.tailing.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """`stop`, and let go of the held files and the inotify instance."""
        await self.stop()
        for fd, _ in self._unidentified.values():
            os.close(fd)
        self._unidentified.clear()
        if self.watcher is not None:
            self.watcher.close(asyncio.get_running_loop())
            self.watcher = None

    def open_files(self) -> list[tuple[int, int]]:
        """(descriptor, read position) of each file being read, for /metrics."""
        return [(t.tailer.fd, t.tailer.pos) for t in self.tailing.values() if not t.tailer.done]

    # -- inotify ----------------------------------------------------------------------------------

    def _on_fs_event(self, directory: str, name: str, mask: int) -> None:
        if mask & NAMES_CHANGED or (directory, name) in self._held_names:
            # a name appeared or went, or a file held until its first line is written to
            self._rescan.set()
        for tailer in self._by_name.get((directory, name), ()):
            tailer.wake.set()

    def _on_fs_overflow(self) -> None:
        self.metrics.event("inotify_overflow")
        self._rescan.set()
        for t in self.tailing.values():
            t.tailer.wake.set()

    # -- discovery --------------------------------------------------------------------------------

    def _follow_targets(self, found: Found) -> None:
        """Remember the real path of every file the scan found (every worker's); one that no
        found path leads to any more (a container's link removed at its restart) is kept in
        `Seen.left_behind`, for `_recover_rotated_unseen`."""
        targets: dict[str, str] = {}
        for path, st in found:
            targets.setdefault(self._reals(path, st), path)
        for real in self._targets.keys() - targets.keys():
            self.seen.left_behind.setdefault(real, self._targets[real])
        if self.watcher is not None:
            # names created in the directory of any found file wake this worker's discovery,
            # also where another worker reads: the kubelet rotates a file of worker 0 in its pod
            # directory, and the new `0.log` may be worker 1's (found at once, not at the next
            # periodic scan)
            for real in targets.keys() - self._targets.keys():
                self.watcher.watch(os.path.dirname(real), names_only=True)
        self._targets = targets

    def _recover_renamed(self, scanned: set[Inode]) -> None:
        """Read the rest of files renamed while the agent was down (`recovery.renamed_while_stopped`)."""
        for f in renamed_while_stopped(self.checkpoints.entries, self.tailing.keys(), scanned,
                                       self.s.exclude):
            log.info("%s: found at %s, where no include pattern leads (renamed while the agent "
                     "was stopped, or its link replaced); reading its rest from offset %d",
                     f.label, f.path, f.offset)
            self.metrics.event("file_renamed_while_stopped")
            self._start_file(f.path, f.st, expect=f.key, label=f.label, real=f.real)

    def _recover_rotated_unseen(self, found: Found, scanned: set[Inode]) -> None:
        """Read files created, filled and rotated away between two scans
        (`recovery.rotated_unseen`)."""
        open_inodes = {t.inode for t in self.tailing.values()} | set(self._unidentified)
        tailed = [(t.real, t.label) for t in self.tailing.values()]
        unseen = rotated_unseen(found, scanned, self._targets, tailed, open_inodes, self.seen,
                                settings=self.s, shard=self.shard, since=self.since, now=time.time())
        self.seen.update(unseen)
        for f in unseen.starts:
            if f.fid.fp in self.seen.fingerprints:
                continue  # a copy of a file started before it in this list
            log.info("%s: %s was never seen at this path (rotated away, or the link to it "
                     "replaced); reading it from its head", f.label, f.path)
            self.metrics.event("file_rotated_unseen")
            self._start_file(f.path, f.st, expect=f.key, label=f.label, real=f.real)

    def _identify_held(self) -> None:
        """Files opened before they had a first line to fingerprint are held open (see
        `_start_file`); those that have one now are tailed, whatever their name is by now."""
        for ident, (fd, path) in list(self._unidentified.items()):
            fid = identify(fd, self.s.fingerprint_bytes)
            if fid is not None:
                del self._unidentified[ident]
                if fid.key in self.tailing:
                    os.close(fd)
                else:
                    self._tail_fd(fd, fid, path)
            elif os.fstat(fd).st_nlink == 0:  # deleted before it had a line: nothing to read
                del self._unidentified[ident]
                os.close(fd)
        self._note_held()

    def _note_held(self) -> None:
        """(directory, name) of the files held in `_unidentified`, for inotify: a write to one
        asks for a scan."""
        self._held_names = {pair for _fd, path in self._unidentified.values()
                            for pair in (os.path.split(path), os.path.split(os.path.realpath(path)))}

    # -- tailing ----------------------------------------------------------------------------------

    def _start_file(self, path: str, st: os.stat_result, expect: str | None = None,
                    label: str | None = None, real: str | None = None) -> None:
        """Open and tail `path`; `expect`: only if its identity is this key; `label`: the path
        its records are reported under (default `path`); `real`: the path it is remembered
        under (default its real path; a recovered rotation keeps its old one, so that it is
        found the same way again if the agent stops before it is read)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError as exc:
            if path not in self._warned:
                self._warned.add(path)
                self.metrics.event("permission_denied")
                log.error("%s: cannot open: %s; other files keep flowing", path, exc.strerror)
            return
        except OSError:
            return  # vanished between the scan and the open
        fid = identify(fd, self.s.fingerprint_bytes, allow_short=self.once)
        if fid is None and expect is None and not self.once:
            # no complete first line yet: hold the file open and look again soon, so that a file
            # rotated away within a scan interval of its creation is still read (by descriptor)
            fst = os.fstat(fd)
            ident = (fst.st_dev, fst.st_ino)
            if ident in self._unidentified:
                os.close(fd)
            else:
                self._unidentified[ident] = (fd, path)
                self._note_held()
                asyncio.get_running_loop().call_later(self.s.poll_interval_ms / 1000,
                                                      self._rescan.set)
            return
        if fid is None or fid.key in self.tailing or (expect is not None and fid.key != expect):
            os.close(fd)
            return
        self._tail_fd(fd, fid, path, label, real)

    def _tail_fd(self, fd: int, fid: FileId, path: str, label: str | None = None,
                 real: str | None = None) -> None:
        offset = self._start_offset(fid, path, os.fstat(fd).st_size)
        real_path = real or os.path.realpath(path)
        report = label or path
        if not self.once and self.checkpoints.opened(fid.key, offset, report, real_path):
            self.on_opened()  # written soon, not only after an acknowledgement

        def new_processor(ident: FileId) -> FileProcessor:  # again with a new one, after a truncation
            return self.new_processor(ident, report, real_path)

        tailer = FileTailer(path=path, fd=fd, fid=fid, offset=offset, new_processor=new_processor,
                            emit=self.emit, metrics=self.metrics, settings=self.s,
                            once=self.once, stop=self._stop_reading, on_gone=self._rescan.set)
        task = asyncio.create_task(self._tail(tailer), name=f"tail:{path}")
        tailing = Tailing(tailer, task, (fid.dev, fid.ino), report, real_path)
        self.tailing[fid.key] = tailing
        if self.watcher is not None:
            for folder, name in tailing.names():
                self.watcher.watch(folder)
                self._by_name.setdefault((folder, name), set()).add(tailer)
        self.files_seen.add((fid.dev, fid.ino))
        self.seen.fingerprints.add(fid.fp)
        self.metrics.files_open.inc()
        self.metrics.files.labels("discovered").inc()
        log.debug("%s: tailing from offset %d (%s)", path, offset, fid.key)

    def _start_offset(self, fid: FileId, path: str, size: int) -> int:
        saved = self.checkpoints.get(fid.key)
        if saved is not None:
            if saved > size:
                self.metrics.event("file_truncated")
                log.info("%s: shorter than its checkpoint (%d > %d); reading from offset 0",
                         path, saved, size)
                return 0
            return saved
        tail = (self._first_scan and self.s.read_from == "tail"
                and not self.checkpoints.recovered_from_corruption and not self.once)
        return size if tail else 0

    async def _tail(self, tailer: FileTailer) -> None:
        try:
            await tailer.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an I/O error on one file must not stop the others
            self.metrics.event("tailer_failed")
            self.metrics.internal_error("tailer")  # restarted from its checkpoint by the next scan
            log.exception("%s: tailer failed: %s", tailer.path, exc)
        finally:
            for key, t in list(self.tailing.items()):
                if t.tailer is tailer:
                    del self.tailing[key]
                    for name in t.names():
                        waiting = self._by_name.get(name)
                        if waiting is not None:
                            waiting.discard(tailer)
                            if not waiting:
                                del self._by_name[name]
            self.metrics.files_open.dec()
