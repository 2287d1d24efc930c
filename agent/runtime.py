"""The agent: wires discovery, tailers, the batcher, the sender and checkpoints, and runs them.

Flow: discovery starts a `FileTailer` per file → segments take room from the `ByteBudget` and go
into the `Batcher` → closed batches are registered with the `AckTracker` and queued → sender tasks
deliver them (retrying retriable errors with exponential backoff and jitter) → acknowledgements
move checkpoints and give the budget back.

Stop (signal or `request_stop`): discovery and tailers stop (unread data stays on disk, unsent
lines are re-read next time: their checkpoints never moved), the open batch is closed, in-flight
batches get until `shutdown_timeout_secs` to be acknowledged, checkpoints are persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.filesource.checkpoints import CheckpointStore, repartition
from agent.filesource.discovery import RealPaths, owner, scan
from agent.filesource.identity import FileId, identify
from agent.filesource.inotify import NAMES_CHANGED, DirWatcher
from agent.filesource.recovery import Seen, renamed_while_stopped, rotated_unseen
from agent.filesource.tailer import FileTailer
from agent.metrics import Metrics
from agent.server import MetricsServer
from agent.settings import Settings
from pipelines.backoff import Backoff
from pipelines.batch import AckTracker, Batcher, ByteBudget
from pipelines.buffer import BufferedSink
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.enrich import default_host_name, file_meta
from pipelines.errors import FatalSinkError, RetriableSinkError, TailshipError
from pipelines.logmetrics import LogMetrics, MetricShipper
from pipelines.records import Batch, Segment
from pipelines.sinks.base import Sink

log = logging.getLogger("tailship.agent")

RESCAN_COALESCE_SECS = 0.02  # an asked-for scan waits this long, so a burst of events makes one

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_RUNTIME = 3


class StartupError(TailshipError):
    """The agent cannot start (data directory unusable, sink unreachable)."""


def chain_spec(s: Settings, observe: Callable[[dict[str, Any], str | None], None] | None = None
               ) -> ChainSpec:
    return ChainSpec(
        format=s.source.format, max_line_bytes=s.source.max_line_bytes,
        parse_json=s.parse.json, target=s.parse.target, trace=s.trace.enabled,
        inherit_window_secs=s.trace.inherit_window_ms / 1000, multiline=s.multiline.preset,
        multiline_max_lines=s.multiline.max_lines, multiline_max_bytes=s.multiline.max_bytes,
        multiline_timeout_secs=s.multiline.timeout_ms / 1000,
        host_name=default_host_name(s.host_name), observe=observe,
    )


def prepare_data_dir(path: str) -> None:
    """Create the data directory and prove it is writable, or fail with a clear cause."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(f"data directory {path!r} is not usable: {exc.strerror or exc}") from exc


def check_buffers(s: Settings, workers: int) -> None:
    """A disk buffer written with another `workers` would never be read again (each worker reads
    its own): refuse to start, naming it, rather than leave its records behind."""
    if s.buffer.type != "disk":
        return
    # one process: <buffer.path> or <data_dir>/buffer; worker k: <buffer.path>/worker-k or
    # <data_dir>/worker-k/buffer (see worker_settings)
    candidates = [(s.buffer.path or os.path.join(s.data_dir, "buffer"), 1)]
    for wd in sorted(Path(s.buffer.path or s.data_dir).glob("worker-*")):
        k = wd.name.removeprefix("worker-")
        if k.isdigit():
            candidates.append((str(wd if s.buffer.path else wd / "buffer"), int(k) + 1))
    for d, written_by in candidates:
        expected = written_by == 1 if workers <= 1 else (written_by > 1 and written_by <= workers)
        if expected:
            continue
        held = sum(p.stat().st_size for p in Path(d).glob("seg-*.tsb")) if os.path.isdir(d) else 0
        if held:
            raise StartupError(
                f"the disk buffer {d} holds {held} bytes written with "
                f"{'workers = 1' if written_by == 1 else f'at least {written_by} workers'}, which "
                f"workers = {workers} would never deliver: start once more with the earlier "
                f"`workers` until it is empty, or remove it (its records are lost then)")


def prepare_state(s: Settings, workers: int) -> None:
    """Before any reading starts: the data directory usable, no disk buffer of another worker
    count left behind, checkpoints in the store of the process that now reads their file."""
    prepare_data_dir(s.data_dir)
    check_buffers(s, workers)
    repartition(s.data_dir, workers, owner)


@dataclass
class _Tailing:
    tailer: FileTailer
    task: asyncio.Task[None]
    inode: tuple[int, int]
    label: str      # the path its records are reported under
    real: str       # the real path it was opened at

    def names(self) -> set[tuple[str, str]]:
        """(directory, name) pairs under which inotify reports changes to this file."""
        return {os.path.split(self.tailer.path), os.path.split(self.real)}


@dataclass
class Summary:
    lines_read: int = 0
    bytes_read: int = 0
    records_sent: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    files: int = 0
    elapsed_secs: float = 0.0
    cpu_secs: float = 0.0
    unacked_records: int = 0
    events: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, settings: Settings, sink: Sink, *, once: bool = False,
                 metrics: Metrics | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        self.s = settings
        self.once = once
        self.shard = shard  # (index, workers): this process reads the files `owner` gives it
        self.metrics = metrics or Metrics()
        if settings.buffer.type == "disk":
            b = settings.buffer
            sink = BufferedSink(sink, b.path or os.path.join(settings.data_dir, "buffer"),
                                max_bytes=b.max_size_bytes, ack=b.ack, when_full=settings.batch.when_full,
                                retry_initial_secs=settings.sink.retry_initial_ms / 1000,
                                retry_max_secs=settings.sink.retry_max_ms / 1000, count=self.metrics.event)
        self.sink = sink
        self.log_metrics: LogMetrics | None = None
        if settings.log_metrics.enabled:
            self.log_metrics = LogMetrics(settings.log_metrics, default_host_name(settings.host_name))
            self.metrics.registry.register(self.log_metrics)
        self.spec = chain_spec(settings, self.log_metrics.observe if self.log_metrics else None)
        self.checkpoints = CheckpointStore(settings.data_dir, self.metrics.event)
        self.budget = ByteBudget(settings.batch.memory_limit_bytes)
        self.tracker = AckTracker()
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.batcher = Batcher(settings.batch.max_records, settings.batch.max_bytes,
                               settings.batch.linger_ms / 1000, self._ship)
        self.tailing: dict[str, _Tailing] = {}
        self.watcher: DirWatcher | None = None
        self._by_name: dict[tuple[str, str], set[FileTailer]] = {}  # (dir, name) -> tailers to wake
        self._held_names: set[tuple[str, str]] = set()  # (dir, name) of files in _unidentified
        self.files_seen: set[tuple[int, int]] = set()
        self._seen = Seen()  # fingerprints, siblings examined, ... (see `recovery.rotated_unseen`)
        self._reals = RealPaths()
        self._targets: dict[str, str] = {}       # real path -> path, of the files the last scan found
        self._warned: set[str] = set()
        # (dev, ino) -> (fd, path) of files opened before they had a first line
        self._unidentified: dict[tuple[int, int], tuple[int, str]] = {}
        self._stop_reading = asyncio.Event()
        self._stopped = asyncio.Event()
        self._rescan = asyncio.Event()
        self._acked = asyncio.Event()
        self._fatal: BaseException | None = None
        self._first_scan = True
        self._started = 0.0
        self._started_wall = time.time()
        self._cpu0 = 0.0
        self.unacked = 0
        self.queued_bytes = 0                      # closed batches waiting for a sender
        self._waiting = 0                          # tailers waiting for budget room
        self._paused_since = 0.0
        self._paused_secs = 0.0                    # wall time with at least one tailer waiting
        self.failing_since: float | None = None    # monotonic time of the first failure in a row
        self.ready = False
        self.server: MetricsServer | None = None
        self.metrics.live(self._live_values)

    # -- lifecycle ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopped.set()

    async def run(self) -> int:
        self._started, self._cpu0 = time.monotonic(), time.process_time()
        self._started_wall = time.time()
        if self.shard[1] == 1:  # one process: state left by worker processes of an earlier run
            prepare_state(self.s, 1)
        else:  # a worker: the supervisor has prepared the state of all of them
            prepare_data_dir(self.s.data_dir)
        self.checkpoints.load()
        await self.sink.start()
        if self.s.metrics.listen:
            self.server = MetricsServer(self.s.metrics.listen, self.metrics.registry, self.readiness)
            try:
                await self.server.start()
            except OSError as exc:
                await self.sink.close(1.0)
                raise StartupError(str(exc.strerror or exc)) from exc
        self.ready = True
        shipper = await self._metric_shipper()
        bg = [asyncio.create_task(self._sender(), name=f"sender-{i}")
              for i in range(self.s.sink.max_in_flight)]
        if shipper is not None:
            bg.append(asyncio.create_task(shipper.run(), name="log-metrics"))
        bg.append(asyncio.create_task(self.batcher.linger(), name="linger"))
        bg.append(asyncio.create_task(self._persist_loop(), name="checkpoints"))
        self._start_watching()
        try:
            if self.once:
                await self._discover()
                waits: list[asyncio.Future[Any]] = [
                    asyncio.gather(*(t.task for t in list(self.tailing.values()))),
                    stop := asyncio.create_task(self._stopped.wait()),
                ]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
            else:
                disc = asyncio.create_task(self._discovery_loop(), name="discovery")
                await self._stopped.wait()
                disc.cancel()
            await self._drain()
        finally:
            for t in bg:
                t.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            await self._stop_tailers()
            for fd, _ in self._unidentified.values():
                os.close(fd)
            self._unidentified.clear()
            if self.watcher is not None:
                self.watcher.close(asyncio.get_running_loop())
                self.watcher = None
            self.checkpoints.persist()
            if shipper is not None:  # a last snapshot with the final totals
                await shipper.ship()
                await shipper.sink.close(max(1.0, self.s.shutdown_timeout_secs / 4))
            await self.sink.close(max(1.0, self.s.shutdown_timeout_secs / 4))
            self.ready = False
            if self.server is not None:
                await self.server.stop()
        if self._fatal is not None:
            raise self._fatal
        return EXIT_OK

    async def _metric_shipper(self) -> MetricShipper | None:
        lm = self.s.log_metrics
        if self.log_metrics is None or not lm.ship_to:
            return None
        from agent.config import settings_from_dict
        from pipelines.sinks.registry import build_sink, parse_sink_url

        conf = settings_from_dict({"sink": parse_sink_url(lm.ship_to)}, source="log_metrics.ship_to",
                                  interpolate=False)
        sink = build_sink(conf.sink, os.path.join(self.s.data_dir, "log_metrics"))
        await sink.start()
        return MetricShipper(self.log_metrics, sink, lm.ship_interval_secs,
                             default_host_name(self.s.host_name),
                             worker=self.shard[0] if self.shard[1] > 1 else None)

    async def _drain(self) -> None:
        """Stop reading, close the open batch, wait for acknowledgements within the timeout."""
        await self._stop_tailers()
        await self.batcher.flush()
        timeout = None if self.once and not self._stopped.is_set() else self.s.shutdown_timeout_secs
        if self._fatal is None:
            try:
                await asyncio.wait_for(self._acked_all(), timeout)
            except TimeoutError:
                log.warning("shutdown timeout (%.1fs): %d records not acknowledged; they will be "
                            "read again on the next start", self.s.shutdown_timeout_secs, self.unacked)

    async def _acked_all(self) -> None:
        join = asyncio.create_task(self.queue.join())
        stop = asyncio.create_task(self._stopped.wait()) if self.once else None
        waits = [join] + ([stop] if stop else [])
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if stop is not None and not join.done():
            stop.cancel()
            # a signal during --once: from now on the shutdown timeout applies
            await asyncio.wait_for(join, self.s.shutdown_timeout_secs)
        if stop is not None:
            stop.cancel()

    async def _stop_tailers(self) -> None:
        self._stop_reading.set()
        for entry in self.tailing.values():
            entry.tailer.wake.set()
        tasks = [t.task for t in self.tailing.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopped.set()

    # -- discovery ------------------------------------------------------------------------------

    async def _discovery_loop(self) -> None:
        while True:
            await self._discover()
            # a tailer that sees its path name another file (rotation), or inotify reporting a
            # name created or moved, asks for a scan at once, so the new file is opened before
            # it can be rotated away unread
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan.wait(), self.s.source.scan_interval_secs)
                await asyncio.sleep(RESCAN_COALESCE_SECS)  # one scan for a burst of events
            self._rescan.clear()

    # -- inotify --------------------------------------------------------------------------------

    def _start_watching(self) -> None:
        if self.once or not self.s.source.inotify:
            return
        self.watcher = DirWatcher(self._on_fs_event, self._on_fs_overflow)
        if not self.watcher.start(asyncio.get_running_loop()):
            self.watcher = None
            return
        for pattern in self.s.source.include:  # new files: the fixed directory of each pattern
            self.watcher.watch(os.path.dirname(re.split(r"[*?\[]", pattern, maxsplit=1)[0]))

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

    async def _discover(self) -> None:
        src = self.s.source
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

    def _follow_targets(self, found: list[tuple[str, os.stat_result]]) -> None:
        """Remember the real path of every file the scan found (every worker's); one that no
        found path leads to any more (a container's link removed at its restart) is kept in
        `Seen.left_behind`, for `_recover_rotated_unseen`."""
        targets: dict[str, str] = {}
        for path, st in found:
            targets.setdefault(self._reals(path, st), path)
        for real in self._targets.keys() - targets.keys():
            self._seen.left_behind.setdefault(real, self._targets[real])
        if self.watcher is not None:
            # names created in the directory of any found file wake this worker's discovery,
            # also where another worker reads: the kubelet rotates a file of worker 0 in its pod
            # directory, and the new `0.log` may be worker 1's (found at once, not at the next
            # periodic scan)
            for real in targets.keys() - self._targets.keys():
                self.watcher.watch(os.path.dirname(real), names_only=True)
        self._targets = targets

    def _recover_renamed(self, scanned: set[tuple[int, int]]) -> None:
        """Read the rest of files renamed while the agent was down (`recovery.renamed_while_stopped`)."""
        for f in renamed_while_stopped(self.checkpoints.entries, self.tailing.keys(), scanned,
                                       self.s.source.exclude):
            log.info("%s: found at %s, where no include pattern leads (renamed while the agent "
                     "was stopped, or its link replaced); reading its rest from offset %d",
                     f.label, f.path, f.offset)
            self.metrics.event("file_renamed_while_stopped")
            self._start_file(f.path, f.st, expect=f.key, label=f.label, real=f.real)

    def _recover_rotated_unseen(self, found: list[tuple[str, os.stat_result]],
                                scanned: set[tuple[int, int]]) -> None:
        """Read files created, filled and rotated away between two scans
        (`recovery.rotated_unseen`)."""
        open_inodes = {t.inode for t in self.tailing.values()} | set(self._unidentified)
        tailed = [(t.real, t.label) for t in self.tailing.values()]
        unseen = rotated_unseen(found, scanned, self._targets, tailed, open_inodes, self._seen,
                                settings=self.s.source, shard=self.shard,
                                since=self._started_wall, now=time.time())
        self._seen.update(unseen)
        for f in unseen.starts:
            if f.fid.fp in self._seen.fingerprints:
                continue  # a copy of a file started before it in this list
            log.info("%s: %s was never seen at this path (rotated away, or the link to it "
                     "replaced); reading it from its head", f.label, f.path)
            self.metrics.event("file_rotated_unseen")
            self._start_file(f.path, f.st, expect=f.key, label=f.label, real=f.real)

    def _identify_held(self) -> None:
        """Files opened before they had a first line to fingerprint are held open (see
        `_start_file`); those that have one now are tailed, whatever their name is by now."""
        for ident, (fd, path) in list(self._unidentified.items()):
            fid = identify(fd, self.s.source.fingerprint_bytes)
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
        fid = identify(fd, self.s.source.fingerprint_bytes, allow_short=self.once)
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
                asyncio.get_running_loop().call_later(self.s.source.poll_interval_ms / 1000,
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
        if not self.once and self.checkpoints.opened(fid.key, offset, label or path, real_path):
            self._acked.set()  # written soon, not only after an acknowledgement
        new_processor = functools.partial(self._processor, path=label or path, real_path=real_path)
        tailer = FileTailer(path=path, fd=fd, fid=fid, offset=offset, new_processor=new_processor,
                            emit=self._emit, metrics=self.metrics, settings=self.s.source,
                            once=self.once, stop=self._stop_reading, on_gone=self._rescan.set)
        task = asyncio.create_task(self._tail(tailer), name=f"tail:{path}")
        tailing = _Tailing(tailer, task, (fid.dev, fid.ino), label or path, real_path)
        self.tailing[fid.key] = tailing
        if self.watcher is not None:
            for folder, name in tailing.names():
                self.watcher.watch(folder)
                self._by_name.setdefault((folder, name), set()).add(tailer)
        self.files_seen.add((fid.dev, fid.ino))
        self._seen.fingerprints.add(fid.fp)
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
        tail = (self._first_scan and self.s.source.read_from == "tail"
                and not self.checkpoints.recovered_from_corruption and not self.once)
        return size if tail else 0

    def _processor(self, fid: FileId, path: str, real_path: str) -> FileProcessor:
        return FileProcessor(self.spec, fid.key, path, file_meta(path, real_path), self.metrics.event)

    async def _tail(self, tailer: FileTailer) -> None:
        try:
            await tailer.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an I/O error on one file must not stop the others
            self.metrics.event("tailer_failed")
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

    # -- data path ------------------------------------------------------------------------------

    async def _emit(self, seg: Segment) -> None:
        budget = self.budget
        if budget.used and budget.used + seg.nbytes > budget.limit:  # will wait: backpressure
            if self.s.batch.when_full == "drop_newest":
                # the user prefers fresh logs to complete ones: count and drop; later batches of the
                # file move its checkpoint past these lines
                if seg.records:
                    self.metrics.dropped.labels("buffer_full").inc(len(seg.records))
                    self.metrics.event("dropped_buffer_full", len(seg.records))
                return
            if self._waiting == 0:
                self._paused_since = time.monotonic()
            self._waiting += 1
            try:
                await budget.acquire(seg.nbytes)
            finally:
                self._waiting -= 1
                if self._waiting == 0:
                    self._paused_secs += time.monotonic() - self._paused_since
        else:
            await budget.acquire(seg.nbytes)
        self.metrics.inflight_bytes.set(self.budget.used)
        await self.batcher.add(seg)

    async def _ship(self, batch: Batch) -> None:
        # no await in here: a cancelled tailer must not leave a batch half-registered
        self.tracker.register(batch)
        self.unacked += batch.nrecords
        self.queued_bytes += batch.nbytes
        self.queue.put_nowait(batch)

    async def _sender(self) -> None:
        while True:
            batch = await self.queue.get()
            self.queued_bytes -= batch.nbytes
            try:
                await self._deliver(batch)
            finally:
                self.queue.task_done()

    async def _deliver(self, batch: Batch) -> None:
        backoff = Backoff(self.s.sink.retry_initial_ms / 1000, self.s.sink.retry_max_ms / 1000)
        attempt = 0
        m, name = self.metrics, self.sink.name
        while True:
            t0 = time.monotonic()
            try:
                await self.sink.send(batch)
                m.send_seconds.labels(name).observe(time.monotonic() - t0)
                m.batches.labels(name, "ok").inc()
                self.failing_since = None
                break
            except RetriableSinkError as exc:
                attempt += 1
                self.metrics.event("sink_retry")
                m.batches.labels(name, "retry").inc()
                m.retries.labels(name).inc()
                if self.failing_since is None:
                    self.failing_since = t0
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("%s (attempt %d; retrying, files wait on disk)", exc, attempt)
                await asyncio.sleep(backoff.next())
            except FatalSinkError as exc:
                m.batches.labels(name, "fatal").inc()
                log.error("%s", exc)
                self._fail(exc)
                return
        self._acknowledged(batch)

    def _acknowledged(self, batch: Batch) -> None:
        paths = {seg.file_key: seg.path for seg in batch.segments}
        for key, offset in self.tracker.ack(batch).items():
            self.checkpoints.put(key, offset, paths[key])
        self._acked.set()
        self.unacked -= batch.nrecords
        self.budget.release(batch.nbytes)
        m = self.metrics
        m.inflight_bytes.set(self.budget.used)
        m.records_sent.inc(batch.nrecords)
        m.bytes_sent.inc(batch.nbytes)
        m.batches_sent.inc()
        m.sink_records.labels(self.sink.name).inc(batch.nrecords)
        m.sink_bytes.labels(self.sink.name).inc(batch.nbytes)

    async def _persist_loop(self) -> None:
        # right after acknowledgements, at most once per interval: duplicates after a crash are
        # bounded by what was in flight plus one interval of acknowledgements
        while True:
            await self._acked.wait()
            self._acked.clear()
            try:
                self.checkpoints.persist()
            except OSError as exc:
                self.metrics.event("checkpoint_write_failed")
                log.error("cannot write checkpoints in %s: %s", self.s.data_dir, exc)
            await asyncio.sleep(self.s.checkpoint_interval_secs)

    # -- reporting ------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: (ready, why)."""
        if self._fatal is not None:
            return False, f"stopped: {self._fatal}"
        if not self.ready:
            return False, "starting or stopping"
        if self.failing_since is not None:
            failing = time.monotonic() - self.failing_since
            if failing >= self.s.metrics.ready_failing_secs:
                return False, f"sink {self.sink.name} failing for {failing:.0f}s"
        return True, "ready"

    def _live_values(self) -> dict[str, Any]:
        dead = getattr(self.sink, "dead", None)
        open_batch = self.batcher.open_bytes
        return {
            "files": [(t.tailer.fd, t.tailer.pos) for t in self.tailing.values() if not t.tailer.done],
            "queues": {"inflight": self.budget.used, "open_batch": open_batch,
                       "send_queue": self.queued_bytes,
                       "sending": max(0, self.budget.used - open_batch - self.queued_bytes)},
            "checkpoint_age": self.checkpoints.age(),
            "dead_letters": {self.sink.name: dead.count} if dead is not None else {},
            "buffer_bytes": self.sink.bytes if isinstance(self.sink, BufferedSink) else 0,
            "paused_secs": self.paused_secs(),
        }

    def paused_secs(self) -> float:
        ongoing = time.monotonic() - self._paused_since if self._waiting else 0.0
        return self._paused_secs + ongoing

    def summary(self) -> Summary:
        m = self.metrics
        return Summary(
            lines_read=int(m.lines_read._value.get()), bytes_read=int(m.bytes_read._value.get()),
            records_sent=int(m.records_sent._value.get()), bytes_sent=int(m.bytes_sent._value.get()),
            batches_sent=int(m.batches_sent._value.get()), files=len(self.files_seen),
            elapsed_secs=time.monotonic() - self._started,
            cpu_secs=time.process_time() - self._cpu0, unacked_records=self.unacked,
            events=dict(m.events),
        )


def run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main` on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def install_signal_handlers(stop: Callable[[], None], force: Callable[[], None] | None = None,
                            what: str = "stopping") -> None:
    """First SIGTERM/SIGINT calls `stop` (drain); a second one calls `force` and exits at once."""
    import signal

    loop = asyncio.get_running_loop()
    hits = 0

    def handler(signame: str) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            log.info("%s: %s (send again to force)", signame, what)
            stop()
        else:
            log.warning("%s again: exiting without draining", signame)
            if force is not None:
                force()
            os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler, sig.name)
