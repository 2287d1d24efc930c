"""`FileSource`: finds the files to read, tails each one, follows rotations, and hands what it
reads to `emit` as `Segment`s.

A scan (`discover`) lists the files the include patterns reach (`discovery.scan`); each one of
this worker's (`discovery.owner`) not open yet is opened, identified (`identity`: device, inode,
fingerprint of its first line) and tailed by a `FileTailer` from its checkpoint (or its head, or
its end with `read_from = "tail"` at the first scan). A file without a first line yet is held
open until it has one. Files a rotation took where no pattern leads are found by `recovery`.
Scans run every `scan_interval_secs`, and at once when a tailer sees its file rotated away or
inotify (`inotify.DirWatcher`) reports a name created, moved or deleted; inotify also wakes a
tailer when its file is written to. Where inotify covers every directory a scan depends on (the
include patterns have wildcards in their last name only, no watch failed, no event was lost), a
periodic scan with no event since the last one would find what that one found and is skipped,
up to `FULL_SCAN_SECS`. A scan runs in a thread, off the event loop: a slow file system (or a
hostile tree) never stalls the tailers or `/healthz`.

Only files whose real path lies under the allowed roots are read (`confine`); a path refused is
counted (`tailship_files_refused_total{reason}`) and logged once. Descriptors are counted
(`descriptors.Slots`, `source.max_open_files`): a file found while none is free waits for the
next scan, and tailers idle at the end of their file let go of theirs meanwhile. Rotated or
deleted files still being read (held during a sink outage) are bounded by
`source.max_held_rotated_bytes` (`_release_held`).

The source records in the `CheckpointStore` where each file it opens lives (`opened`) and drops
entries of files long gone (`forget_stale`); moving checkpoints on acknowledgements, loading and
writing the store is the agent's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from agent.filesource import descriptors
from agent.filesource.checkpoints import CheckpointStore
from agent.filesource.confine import Confinement, base_dir, default_roots
from agent.filesource.discovery import Found, Scanner, owner
from agent.filesource.identity import FileId, identify
from agent.filesource.inotify import NAMES_CHANGED, DirWatcher
from agent.filesource.recovery import Inode, Seen, renamed_while_stopped, rotated_unseen
from agent.filesource.tailer import FileTailer
from agent.metrics import Metrics
from agent.settings import SourceSettings
from pipelines.chain import FileProcessor
from pipelines.records import Segment

log = logging.getLogger("tailship.agent")  # the name these lines had before the source moved here

RESCAN_COALESCE_SECS = 0.02  # an asked-for scan waits this long, so a burst of events makes one
FULL_SCAN_SECS = 30.0  # with inotify and no event, a scan still runs this often (a safety net)
HELD_WARN_BYTES = 64 << 20  # held rotated bytes are warned about at this and each doubling
# Parked tailers (see `tailer`) are looked at this often (`FileTailer.due`), as a safety net: a
# write inotify does not report (through a shared mmap, say) is read within this long.
SWEEP_SECS = 60.0
# A scan that finds many new files lets the loop run after starting this many: the ones started
# read their data (and park) before more are opened, so 10,000 files found at once are never
# 10,000 chains at a time (their memory, freed at once, would stay fragmented), and the tailers
# already reading are not stalled for the whole batch.
START_SLICE = 64


@dataclass(slots=True, eq=False)
class Tailing:
    key: str        # the file's key when it was opened (its key in `FileSource.tailing`)
    tailer: FileTailer
    task: asyncio.Task[None] | None  # None while the tailer is parked
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
    holding of files without a first line). `absorbing()`: whether what is read now goes to a
    disk buffer with room (held rotated files are read into it instead of released)."""

    def __init__(self, settings: SourceSettings, checkpoints: CheckpointStore, *,
                 shard: tuple[int, int] = (0, 1), once: bool = False,
                 emit: Callable[[Segment], Awaitable[None]],
                 new_processor: Callable[[FileId, str, str], FileProcessor], metrics: Metrics,
                 on_opened: Callable[[], None] = lambda: None,
                 absorbing: Callable[[], bool] = lambda: False) -> None:
        self.s = settings
        self.checkpoints = checkpoints
        self.shard = shard
        self.once = once
        self.emit = emit
        self.new_processor = new_processor
        self.metrics = metrics
        self.on_opened = on_opened
        self.absorbing = absorbing
        self.tailing: dict[str, Tailing] = {}  # file key -> its tailer
        self.watcher: DirWatcher | None = None
        self.files_seen: set[Inode] = set()  # every file tailed since the start
        self.seen = Seen()  # fingerprints, siblings examined, ... (see `recovery.rotated_unseen`)
        self.since = time.time()  # wall time the agent started: rotations since then are recovered
        # (dir, name) -> the file(s) to wake: one Tailing, or a set when several (rarely)
        self._by_name: dict[tuple[str, str], Tailing | set[Tailing]] = {}
        self._held_names: set[tuple[str, str]] = set()  # (dir, name) of files in _unidentified
        self._old_names: set[tuple[str, str]] = set()  # (dir, name) of ours skipped as too old
        self.confinement = Confinement(settings.allowed_roots or default_roots(settings.include))
        self.scanner = Scanner(settings.include, settings.exclude, self.confinement)
        self._reals = self.scanner.reals
        self.limits = descriptors.raise_limit()
        self._ask_scan = self._rescan_set  # one bound method shared by every tailer
        self.slots = descriptors.Slots(settings.max_open_files
                                       or descriptors.default_max_open_files(self.limits[0]),
                                       on_free=self._ask_scan)
        self._swept = time.monotonic()  # when parked tailers were last looked at (`_sweep`)
        self._targets: dict[str, str] = {}  # real path -> path, of the files the last scan found
        self._warned: set[str] = set()
        # (dev, ino) -> (fd, path) of files opened before they had a first line
        self._unidentified: dict[Inode, tuple[int, str]] = {}
        self._first_scan = True
        self._last_scan = 0.0  # monotonic time of the last scan
        self._unreached: dict[Inode, float] = {}  # files read that no scan reaches -> since when
        self._watchable = all("/" not in p[len(base_dir(p)) + 1:] for p in settings.include)
        self._held_warned = HELD_WARN_BYTES
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
            self.watcher.watch(base_dir(pattern))

    def report(self) -> None:
        """Log and export the descriptor limits (once, at start)."""
        soft, hard = self.limits
        self.metrics.fd_limit.labels("soft").set(soft)
        self.metrics.fd_limit.labels("hard").set(hard)
        self.metrics.max_open_files.set(self.slots.capacity)
        log.info("open files limit %d (hard %d); up to %d files held open; allowed roots: %s",
                 soft, hard, self.slots.capacity, ", ".join(self.confinement.roots))

    async def run(self) -> None:
        """Scan, and again every `scan_interval_secs` or when asked to (`wake`); until cancelled."""
        while True:
            await self.discover()
            self._sweep()
            # a tailer that sees its path name another file (rotation), or inotify reporting a
            # name created or moved, asks for a scan at once, so the new file is opened before
            # it can be rotated away unread
            while True:
                try:
                    await asyncio.wait_for(self._rescan.wait(), self.s.scan_interval_secs)
                except TimeoutError:
                    self._release_held()
                    self._sweep()
                    if not self._quiet():
                        break
                    continue
                await asyncio.sleep(RESCAN_COALESCE_SECS)  # one scan for a burst of events
                break
            self._rescan.clear()

    def _quiet(self) -> bool:
        """Whether a periodic scan can be skipped: inotify would have reported anything it could
        find (see the module's docstring)."""
        w = self.watcher
        return (w is not None and w.fd >= 0 and not w.missed and self._watchable
                and not self._unidentified and not self.slots.wanted
                and time.monotonic() - self._last_scan < FULL_SCAN_SECS)

    def _rescan_set(self) -> None:
        self._rescan.set()

    def wake(self) -> None:
        """Ask `run` for a scan now."""
        self._rescan.set()

    async def discover(self) -> None:
        """One scan: start the files found and not open yet, then recover rotations. Out of
        descriptors, the scan is counted, logged and tried again at the next one."""
        self._last_scan = time.monotonic()
        self.slots.served()
        try:
            await self._discover()
        except OSError as exc:
            if not descriptors.is_out_of_descriptors(exc):
                raise
            descriptors.exhausted(self.metrics, exc.filename or "a directory")
            asyncio.get_running_loop().call_later(self.s.poll_interval_ms / 1000, self._rescan.set)

    async def _discover(self) -> None:
        src = self.s
        now = time.time()
        self._identify_held()
        open_inodes = {t.inode for t in self.tailing.values()} | set(self._unidentified)
        if self.once:
            open_inodes |= self.files_seen  # read once already (--once keeps no checkpoints)
        index, workers = self.shard
        found = await asyncio.to_thread(self.scanner.scan)
        self._note_refused()
        scanned = {(st.st_dev, st.st_ino) for _, st in found}  # every worker's, not only ours
        mono = time.monotonic()
        self._unreached = {t.inode: self._unreached.get(t.inode, mono)
                           for t in self.tailing.values() if t.inode not in scanned}
        old: set[tuple[str, str]] = set()
        started = 0
        for path, st in found:
            if (st.st_dev, st.st_ino) in open_inodes or owner(st.st_dev, st.st_ino, workers) != index:
                continue
            if src.ignore_older_secs and now - st.st_mtime > src.ignore_older_secs:
                old.update(self._watch_names(path, self._reals(path, st)))
                continue
            started += 1
            if started % START_SLICE == 0:
                await asyncio.sleep(0)
                if self._stop_reading.is_set():
                    return
            self._start_file(path, st)
        self._old_names = old
        self._follow_targets(found)
        if self._first_scan:
            self._recover_renamed(scanned)
        else:
            await self._recover_rotated_unseen(found, scanned)
        self._first_scan = False
        active = set(self.tailing)
        self.checkpoints.forget_stale(active)
        self._release_held()

    def _note_refused(self) -> None:
        """Count and log each path refused for the first time (`confine`)."""
        for path, real, reason in self.scanner.newly_refused:
            self.metrics.files_refused.labels(reason).inc()
            self.metrics.event(f"file_refused_{reason}")
            log.warning("%s: not read (%s): it leads to %s; allowed roots: %s", path,
                        reason.replace("_", " "), real, ", ".join(self.confinement.roots))

    def _watch_names(self, path: str, real: str) -> Iterator[tuple[str, str]]:
        """(directory, name) of `path` and its real path, their directories watched in full: a
        write there asks for a scan (a file skipped as too old that is written to again)."""
        for pair in {os.path.split(path), os.path.split(real)}:
            if self.watcher is not None:
                self.watcher.watch(pair[0])
            yield pair

    async def tailers_done(self) -> None:
        """Every file found read to its end (with `once`): files that waited for a descriptor
        are opened as others finish, by another scan."""
        while True:
            tasks = [t.task for t in list(self.tailing.values()) if t.task is not None]
            if not tasks and not self.slots.wanted:
                return
            if tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            else:  # out of descriptors with none of ours open: wait for others to let go
                await asyncio.sleep(self.s.poll_interval_ms / 1000)
            if self.slots.wanted:
                await self.discover()

    async def stop(self) -> None:
        """Stop every tailer (unread data stays on disk: its checkpoint did not move)."""
        self._stop_reading.set()
        tasks = []
        for entry in list(self.tailing.values()):
            if entry.task is None:
                self._end_parked(entry)
            else:
                entry.tailer.wake()
                entry.task.cancel()
                tasks.append(entry.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """`stop`, and let go of the held files and the inotify instance."""
        await self.stop()
        for fd, _ in self._unidentified.values():
            self._close(fd)
        self._unidentified.clear()
        if self.watcher is not None:
            self.watcher.close(asyncio.get_running_loop())
            self.watcher = None

    def open_files(self) -> list[tuple[int, int]]:
        """(descriptor, read position) of each file being read and open, for /metrics."""
        return [(t.tailer.fd, t.tailer.pos) for t in self.tailing.values()
                if not t.tailer.done and t.tailer.fd >= 0]

    def parked(self) -> int:
        """Files followed without a task or chain now (idle, inotify covers them)."""
        return sum(1 for t in self.tailing.values() if t.task is None)

    def held_rotated(self) -> list[tuple[Tailing, int]]:
        """Files being read that no scan reaches any more (rotated away or deleted), with their
        size (disk space they hold), oldest first."""
        held = []
        for t in self.tailing.values():
            since = self._unreached.get(t.inode)
            if since is None or t.tailer.fd < 0 or t.tailer.done:
                continue
            try:
                held.append((since, t, os.fstat(t.tailer.fd).st_size))
            except OSError:
                continue
        return [(t, size) for _, t, size in sorted(held, key=lambda h: h[0])]

    def _release_held(self) -> None:
        """Warn as held rotated bytes grow; past `max_held_rotated_bytes`, let go of the oldest
        held files, their unread bytes counted as lost — unless a disk buffer takes what is read
        now (`absorbing`): then they are read into it to their end, and closed, losing nothing.
        A full buffer (or one that acknowledges only on delivery) takes nothing in: the bound
        applies as without one."""
        held = self.held_rotated()
        total = sum(size for _, size in held)
        if total >= self._held_warned:
            log.warning("%d rotated or deleted files held open, %d bytes on disk (sink slow or "
                        "down?); source.max_held_rotated_bytes bounds them", len(held), total)
            while self._held_warned <= total:
                self._held_warned *= 2
        bound = self.s.max_held_rotated_bytes
        if not bound or total <= bound or self.absorbing():
            return
        for t, size in held:
            if total <= bound:
                break
            total -= size
            lost = max(0, size - t.tailer.offset)
            self.metrics.lost_bytes.labels("held_rotated_bound").inc(lost)
            self.metrics.event("held_rotated_released")
            log.error("%s: rotated away or deleted, and held unread past "
                      "source.max_held_rotated_bytes (%d): released; %d bytes never read are LOST",
                      t.label, bound, lost)
            if t.task is None:
                self._end_parked(t)
            else:
                t.task.cancel()

    # -- inotify ----------------------------------------------------------------------------------

    def _on_fs_event(self, directory: str, name: str, mask: int) -> None:
        pair = (directory, name)
        if mask & NAMES_CHANGED or pair in self._held_names or pair in self._old_names:
            # a name appeared or went, or a file held until its first line (or skipped as too
            # old) is written to
            self._rescan.set()
        found = self._by_name.get(pair)
        if isinstance(found, Tailing):
            self._wake(found)
        elif found is not None:
            for t in list(found):
                self._wake(t)

    def _on_fs_overflow(self) -> None:
        self.metrics.event("inotify_overflow")
        self._rescan.set()
        for t in list(self.tailing.values()):
            self._wake(t)

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

    async def _recover_rotated_unseen(self, found: Found, scanned: set[Inode]) -> None:
        """Read files created, filled and rotated away between two scans
        (`recovery.rotated_unseen`, in a thread: it reads the file system)."""
        open_inodes = {t.inode for t in self.tailing.values()} | set(self._unidentified)
        tailed = [(t.real, t.label) for t in self.tailing.values()]
        unseen = await asyncio.to_thread(
            rotated_unseen, found, scanned, dict(self._targets), tailed, open_inodes, self.seen,
            settings=self.s, shard=self.shard, since=self.since, now=time.time(),
            listings=self.scanner.listings)
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
                    self._close(fd)
                else:
                    self._tail_fd(fd, fid, path)
            elif os.fstat(fd).st_nlink == 0:  # deleted before it had a line: nothing to read
                del self._unidentified[ident]
                self._close(fd)
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
        if not self.slots.take():
            return  # no descriptor free: found again by a scan once a tailer let go of one
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError as exc:
            self.slots.give()
            if path not in self._warned:
                self._warned.add(path)
                self.metrics.event("permission_denied")
                log.error("%s: cannot open: %s; other files keep flowing", path, exc.strerror)
            return
        except OSError as exc:
            self.slots.give()
            if descriptors.is_out_of_descriptors(exc):  # not vanished: opened at a later scan
                descriptors.exhausted(self.metrics, path)
                self.slots.want()
            return  # vanished between the scan and the open
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            self._close(fd)  # the path leads elsewhere since the scan judged it: judged again
            self._rescan.set()
            return
        fid = identify(fd, self.s.fingerprint_bytes, allow_short=self.once)
        if fid is None and expect is None and not self.once:
            # no complete first line yet: hold the file open and look again soon, so that a file
            # rotated away within a scan interval of its creation is still read (by descriptor)
            ident = (fst.st_dev, fst.st_ino)
            if ident in self._unidentified:
                self._close(fd)
            else:
                self._unidentified[ident] = (fd, path)
                self._note_held()
                asyncio.get_running_loop().call_later(self.s.poll_interval_ms / 1000,
                                                      self._rescan.set)
            return
        if fid is None or fid.key in self.tailing or (expect is not None and fid.key != expect):
            self._close(fd)
            return
        self._tail_fd(fd, fid, path, label, real)

    def _covers(self, folders: Iterable[str]) -> bool:
        """Whether inotify reports writes in all of these directories now."""
        w = self.watcher
        return w is not None and w.fd >= 0 and all(w.full(f) for f in folders)

    def _close(self, fd: int) -> None:
        os.close(fd)
        self.slots.give()

    def _tail_fd(self, fd: int, fid: FileId, path: str, label: str | None = None,
                 real: str | None = None) -> None:
        offset = self._start_offset(fid, path, os.fstat(fd).st_size)
        real_path = real or os.path.realpath(path)
        report = label or path
        key = fid.key
        if not self.once and self.checkpoints.opened(key, offset, report, real_path):
            self.on_opened()  # written soon, not only after an acknowledgement
        tailer = FileTailer(path=path, fd=fd, fid=fid, offset=offset, new_processor=self.new_processor,
                            emit=self.emit, metrics=self.metrics, settings=self.s,
                            once=self.once, stop=self._stop_reading, on_gone=self._ask_scan,
                            real=real_path, label=report, slots=self.slots, covers=self._covers)
        tailing = Tailing(key, tailer, None, (fid.dev, fid.ino), report, real_path)
        self.tailing[key] = tailing
        self._resume(tailing)
        if self.watcher is not None:
            for pair in tailing.names():
                self.watcher.watch(pair[0])
                self._name_add(pair, tailing)
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

    def _resume(self, t: Tailing) -> None:
        """Start (again) the task of a new or parked tailer."""
        t.task = asyncio.create_task(self._tail(t), name=f"tail:{t.tailer.path}")

    def _wake(self, t: Tailing) -> None:
        """Inotify reported a write (or may have missed one): a parked tailer starts again."""
        if t.task is not None:
            t.tailer.wake()
        elif not self._stop_reading.is_set():
            self._resume(t)

    def _sweep(self) -> None:
        """Every `SWEEP_SECS` (at each call while files wait for a descriptor), start again the
        parked tailers that must look at their file though inotify said nothing (`due`)."""
        mono = time.monotonic()
        if mono - self._swept < SWEEP_SECS and not self.slots.wanted:
            return
        self._swept = mono
        now = asyncio.get_running_loop().time()
        for t in list(self.tailing.values()):
            if t.task is None and t.tailer.due(now):
                self._resume(t)

    async def _tail(self, t: Tailing) -> None:
        tailer, parked = t.tailer, False
        try:
            await tailer.run()
            parked = tailer.parked
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an I/O error on one file must not stop the others
            self.metrics.event("tailer_failed")
            self.metrics.internal_error("tailer")  # restarted from its checkpoint by the next scan
            log.exception("%s: tailer failed: %s", tailer.path, exc)
        finally:
            if parked:
                t.task = None  # started again by `_wake` or `_sweep`
            else:
                self._forget(t)

    def _end_parked(self, t: Tailing) -> None:
        """A parked tailer ends outside a task (the agent stops, or it is released)."""
        t.tailer.parked = False
        t.tailer._let_go()
        self._forget(t)

    def _forget(self, t: Tailing) -> None:
        """A tailer ended: no longer followed, nor woken."""
        if self.tailing.get(t.key) is t:
            del self.tailing[t.key]
            for pair in t.names():
                self._name_drop(pair, t)
        self.metrics.files_open.dec()

    def _name_add(self, pair: tuple[str, str], t: Tailing) -> None:
        found = self._by_name.get(pair)
        if found is None:
            self._by_name[pair] = t
        elif isinstance(found, Tailing):
            if found is not t:
                self._by_name[pair] = {found, t}
        else:
            found.add(t)

    def _name_drop(self, pair: tuple[str, str], t: Tailing) -> None:
        found = self._by_name.get(pair)
        if found is t:
            del self._by_name[pair]
        elif isinstance(found, set):
            found.discard(t)
            if len(found) == 1:
                self._by_name[pair] = next(iter(found))
            elif not found:
                del self._by_name[pair]
