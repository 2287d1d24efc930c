"""The agent: the process lifecycle and delivery, around the file source.

Flow: the `FileSource` (`agent.filesource`: discovery, a `FileTailer` per file, rotation
recovery) emits segments → they take room from the `ByteBudget` and go into the `Batcher` →
closed batches are registered with the `AckTracker` and queued → sender tasks deliver them
(retrying retriable errors with exponential backoff and jitter) → acknowledgements move
checkpoints and give the budget back. The agent owns the `CheckpointStore` (loads it, moves it
on acknowledgements, writes it); the source records the files it opens in it.

Stop (signal or `request_stop`): discovery and tailers stop (unread data stays on disk, unsent
lines are re-read next time: their checkpoints never moved), the open batch is closed, in-flight
batches get until `shutdown_timeout_secs` to be acknowledged, checkpoints are persisted.

(Over 400 lines for now: the delivery part, `_emit` to `_acknowledged`, is being moved to
`pipelines/`, issue 13.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.filesource.checkpoints import CheckpointStore, repartition
from agent.filesource.discovery import owner
from agent.filesource.identity import FileId
from agent.filesource.source import FileSource
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
        self._stopped = asyncio.Event()
        self._acked = asyncio.Event()
        self.source = FileSource(settings.source, self.checkpoints, shard=shard, once=once,
                                 emit=self._emit, new_processor=self._processor,
                                 metrics=self.metrics, on_opened=self._acked.set)
        self._fatal: BaseException | None = None
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
        self.source.start(since=self._started_wall)
        try:
            if self.once:
                await self.source.discover()
                waits: list[asyncio.Future[Any]] = [
                    self.source.tailers_done(),
                    stop := asyncio.create_task(self._stopped.wait()),
                ]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
            else:
                disc = asyncio.create_task(self.source.run(), name="discovery")
                await self._stopped.wait()
                disc.cancel()
            await self._drain()
        finally:
            for t in bg:
                t.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            await self.source.close()
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
        await self.source.stop()
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

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopped.set()

    def _processor(self, fid: FileId, path: str, real_path: str) -> FileProcessor:
        return FileProcessor(self.spec, fid.key, path, file_meta(path, real_path), self.metrics.event)

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
            "files": self.source.open_files(),
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
            batches_sent=int(m.batches_sent._value.get()), files=len(self.source.files_seen),
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
