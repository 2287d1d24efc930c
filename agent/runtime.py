"""The agent: the process lifecycle and delivery, around the file source.

Flow: the `FileSource` (`agent.filesource`: discovery, a `FileTailer` per file, rotation
recovery) emits segments, tagged by their file's chain with the sinks their routes choose → the
`Fanout` takes room from the shared budget and hands each sink its part → each sink's `Delivery`
batches and sends (retrying retriable errors with backoff) → once every sink a line went to
acknowledged it, its file's checkpoint moves past it and the budget comes back. The agent owns
the `CheckpointStore` (loads it, moves it on acknowledgements, writes it); the source records the
files it opens in it.

A sink refused for good (credentials, rights, nothing reachable at start: FatalSinkError) stops
the agent when it runs once (`tail --once`, exit 3 with one message); the daemon keeps running,
tries the sink again with a long backoff and reports it on /readyz (pipelines.delivery), so one
sink's trouble never stops the others. The daemon exits on its own only for a broken
configuration or an unusable data directory at start.

Every long-lived task (senders, linger timers, the disk buffer's drain, the checkpoint
persister, discovery, the log-metrics shipper, the health ticker) runs under one
`TaskSupervisor`: an unexpected exception is logged, counted in
`tailship_internal_errors_total{task}` and the task restarted with backoff. `readiness` is the
watchdog /readyz answers with: not ready while a sink is refused, while a sink has had records
pending and nothing acknowledged for `metrics.ready_failing_secs`, or while the data directory
cannot be written (the last checkpoint write, or the disk buffer's last append, failed).

Stop (signal or `request_stop`): discovery and tailers stop (unread data stays on disk, unsent
lines are re-read next time: their checkpoints never moved), the open batch is closed, in-flight
batches get until `shutdown_timeout_secs` to be acknowledged, checkpoints are persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.filesource.checkpoints import CheckpointStore
from agent.filesource.identity import FileId
from agent.filesource.source import FileSource
from agent.metrics import Metrics, MetricsReport
from agent.metricsources.source import MetricSources
from agent.server import MetricsServer
from agent.settings import Settings
from agent.state import StartupError, prepare_data_dir, prepare_state
from pipelines import layout
from pipelines.buffer import BufferedSink
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.deadletter import DeadLetter
from pipelines.delivery import Delivery, DeliverySettings
from pipelines.enrich import default_host_name, file_fields, file_meta
from pipelines.errors import SinkError
from pipelines.fanout import Fanout
from pipelines.logmetrics import LogMetrics, MetricShipper
from pipelines.routes import Router
from pipelines.sinks.base import Sink
from pipelines.sinks.file import FileSink
from pipelines.sinks.registry import build_sink, parse_sink_url
from pipelines.supervise import WARN_EVERY_SECS, Every, TaskSupervisor

if TYPE_CHECKING:
    from agent.kubernetes.service import KubernetesMetadata

log = logging.getLogger("tailship.agent")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_RUNTIME = 3


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
    def __init__(self, settings: Settings, sink: Sink | Mapping[str, Sink] | None = None, *,
                 once: bool = False, metrics: Metrics | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        """`sink`: None builds the sinks the settings declare; one sink or sinks by name are
        used as given (tests), with the delivery options of their table (else of `[sink]`)."""
        self.s = settings
        self.once = once
        self.shard = shard  # (index, workers): this process reads the files `owner` gives it
        self.metrics = metrics or Metrics()
        report = MetricsReport(self.metrics)
        self.task_supervisor = TaskSupervisor(self.metrics.internal_error)
        self.dead_letters: dict[str, DeadLetter] = {}  # by sink name, for the size gauge
        sinks = self._sinks(sink, report)
        self.router = Router(settings.routing, list(sinks))
        self.log_metrics: LogMetrics | None = None
        if settings.log_metrics.enabled:
            self.log_metrics = LogMetrics(settings.log_metrics, default_host_name(settings.host_name))
            self.metrics.registry.register(self.log_metrics)
        self.spec = chain_spec(settings, self.log_metrics.observe if self.log_metrics else None)
        self.checkpoints = CheckpointStore(settings.data_dir, self.metrics.event)
        self.deliveries = [Delivery(s, _delivery_settings(settings, name, len(sinks)), report, self._fail,
                                    retry_refused=not once, task_supervisor=self.task_supervisor)
                           for name, s in sinks.items()]
        self.fanout = Fanout(self.deliveries, settings.batch.memory_limit_bytes, settings.batch.when_full,
                             self._commit, report)
        self._stopped = asyncio.Event()
        self._acked = asyncio.Event()
        self.source = FileSource(settings.source, self.checkpoints, shard=shard, once=once,
                                 emit=self.fanout.emit, new_processor=self._processor,
                                 metrics=self.metrics, on_opened=self._acked.set,
                                 absorbing=self._absorbing)
        self.metric_sources = self._metric_sources()
        self.kube: KubernetesMetadata | None = None  # pod metadata from the API server (run)
        self._fatal: BaseException | None = None
        self._disk_error: str | None = None  # why the last checkpoint write failed, until one succeeds
        self._disk_warn = Every(WARN_EVERY_SECS)
        self._started = 0.0
        self._started_wall = time.time()
        self._cpu0 = 0.0
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
        self._start_kubernetes()
        await self._start_sinks()
        if self.s.metrics.listen:
            self.server = MetricsServer(self.s.metrics.listen, self.metrics.registry, self.readiness,
                                        limits=self.s.metrics, task_supervisor=self.task_supervisor)
            try:
                await self.server.start()
            except OSError as exc:
                await self._close_sinks(1.0)
                raise StartupError(str(exc.strerror or exc)) from exc
        self.ready = True
        shipper = await self._metric_shipper()
        keep = self.task_supervisor.spawn
        bg = [t for d in self.deliveries for t in d.tasks()]
        if shipper is not None:
            bg.append(keep("log_metrics", shipper.run, "log-metrics"))
        bg.append(keep("persist", self._persist_loop, "checkpoints"))
        if self.kube is not None:
            bg.append(keep("kubernetes", self.kube.run, "kubernetes"))
        if self.metric_sources is not None:
            self._discover_pods(self.metric_sources)
            await self.metric_sources.start()
        self.source.report()
        self.source.start(since=self._started_wall)
        try:
            if self.once:
                await self.source.discover()
                waits: list[asyncio.Future[Any]] = [
                    done := asyncio.ensure_future(self.source.tailers_done()),
                    stop := asyncio.create_task(self._stopped.wait()),
                ]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                done.cancel()
            else:
                disc = keep("discovery", self.source.run, "discovery")
                await self._stopped.wait()
                disc.cancel()
            await self._drain()
        finally:
            if self.metric_sources is not None:
                await self.metric_sources.stop()
            for t in bg:
                t.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            await self.source.close()
            self._persist()  # a disk error here is logged, not raised: the last good file stays
            if shipper is not None:  # a last snapshot with the final totals
                await shipper.ship()
                await shipper.sink.close(max(1.0, self.s.shutdown_timeout_secs / 4))
            await self._close_sinks(max(1.0, self.s.shutdown_timeout_secs / 4))
            self.ready = False
            if self.server is not None:
                await self.server.stop()
        if self._fatal is not None:
            raise self._fatal
        return EXIT_OK

    def _metric_sources(self) -> MetricSources | None:
        """Prometheus scrapes and host metrics, in one process only (worker 0: the others would
        ship the same samples again); not with --once, which reads the files and exits."""
        s = self.s
        if self.once or self.shard[0] != 0 or not (s.prometheus_scrape.enabled or s.host_metrics.enabled):
            return None
        sources = MetricSources(s.prometheus_scrape, s.host_metrics, self.spec.host_name,
                                self.fanout.offer, self.router.for_file)
        self.metrics.registry.register(sources.stats)
        return sources

    def _discover_pods(self, sources: MetricSources) -> None:
        """Scrape the pods on this node annotated `prometheus.io/scrape` (agent.metricsources.pods),
        when the API metadata is on; the agent's own pod (its listen address) is left out."""
        s = self.s.prometheus_scrape
        if self.kube is None or not s.enabled or not s.kubernetes_pods:
            return
        from agent.metricsources.pods import PodTargets
        from agent.server import parse_listen

        own = parse_listen(self.s.metrics.listen) if self.s.metrics.listen else None
        sources.providers.append(PodTargets(self.kube, s.job, own, self.metrics.event))

    async def _metric_shipper(self) -> MetricShipper | None:
        lm = self.s.log_metrics
        if self.log_metrics is None or not lm.ship_to:
            return None
        from agent.config import settings_from_dict

        conf = settings_from_dict({"sink": parse_sink_url(lm.ship_to)}, source="log_metrics.ship_to",
                                  interpolate=False)
        sink = build_sink(conf.sink, layout.log_metrics_dir(self.s.data_dir))
        shipper = MetricShipper(self.log_metrics, sink, lm.ship_interval_secs,
                                default_host_name(self.s.host_name),
                                worker=self.shard[0] if self.shard[1] > 1 else None)
        try:
            await sink.start()
        except SinkError as exc:
            if self.once:
                raise
            log.warning("log metrics: %s; trying again with the next snapshot", exc)
            shipper.started = False
        return shipper

    async def _drain(self) -> None:
        """Stop reading, close the open batch, wait for acknowledgements within the timeout."""
        if self.metric_sources is not None:
            await self.metric_sources.stop()
        await self.source.stop()
        for d in self.deliveries:
            await d.flush()
        timeout = None if self.once and not self._stopped.is_set() else self.s.shutdown_timeout_secs
        if self._fatal is None:
            try:
                await asyncio.wait_for(self._acked_all(), timeout)
            except TimeoutError:
                log.warning("shutdown timeout (%.1fs): %d records not acknowledged; they will be "
                            "read again on the next start", self.s.shutdown_timeout_secs, self.unacked)

    async def _acked_all(self) -> None:
        join = asyncio.create_task(self._join_deliveries())
        stop = asyncio.create_task(self._stopped.wait()) if self.once else None
        try:
            await asyncio.wait([join] + ([stop] if stop else []), return_when=asyncio.FIRST_COMPLETED)
            if stop is not None and not join.done():
                # a signal during --once: from now on the shutdown timeout applies
                await asyncio.wait_for(asyncio.shield(join), self.s.shutdown_timeout_secs)
        finally:
            join.cancel()
            if stop is not None:
                stop.cancel()

    async def _join_deliveries(self) -> None:
        for d in self.deliveries:
            await d.join()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopped.set()

    def _start_kubernetes(self) -> None:
        if not self.s.kubernetes.enabled or self.kube is not None:
            return
        # here, not at import: the API client's aiohttp costs every start ~0.2 s (as agent.server)
        from agent.kubernetes.api import ConfigProblem
        from agent.kubernetes.service import KubernetesMetadata

        try:
            self.kube = KubernetesMetadata.from_settings(self.s.kubernetes, self.router, self.metrics.event)
        except ConfigProblem as exc:
            raise StartupError(f"kubernetes: {exc}") from exc
        self.metrics.registry.register(self.kube)

    def _absorbing(self) -> bool:
        """Whether what the tailers read now goes to disk, not to memory waiting on a sink:
        every sink is behind a disk buffer that acknowledges on write and has room (held rotated
        files are then read into it rather than released: `FileSource._release_held`)."""
        return bool(self.deliveries) and all(
            isinstance(d.sink, BufferedSink) and d.sink.absorbs for d in self.deliveries)

    def _processor(self, fid: FileId, path: str, real_path: str) -> FileProcessor:
        meta = file_meta(path, real_path)
        fields = file_fields(meta, path, self.spec.host_name)
        # a kubelet file's fields follow its pod (decided per chunk, see agent.kubernetes.service)
        live = self.kube.live_file(meta, fields) if self.kube is not None else None
        routes = self.router.for_file(fields) if live is None else None
        return FileProcessor(self.spec, fid.key, path, meta, self.metrics.event, routes, live=live)

    # -- sinks --------------------------------------------------------------------------------

    def _sinks(self, given: Sink | Mapping[str, Sink] | None, report: MetricsReport) -> dict[str, Sink]:
        """The sinks by name, each behind its own disk buffer when `buffer.type = "disk"`."""
        s = self.s
        if given is None:
            index, workers = self.shard
            tables = s.sink_tables()
            share = s.deadletter.share(len(tables))
            sinks = {name: build_sink(t, s.data_dir, index if workers > 1 else None, name,
                                      deadletter=share, report=report)
                     for name, t in tables.items()}
        elif isinstance(given, Mapping):
            sinks = dict(given)
        else:
            sinks = {given.name: given}
        self.dead_letters = {name: dead for name, sink in sinks.items()
                             if isinstance(dead := getattr(sink, "dead", None), DeadLetter)}
        if s.buffer.type == "disk":
            b, root = s.buffer, layout.buffer_root(s.data_dir, s.buffer.path)
            table = s.sink_tables()
            sinks = {name: BufferedSink(
                sink, layout.buffer_dir(root, name, bool(s.sinks)), max_bytes=b.max_size_bytes // len(sinks),
                ack=b.ack, when_full=s.batch.when_full,
                retry_initial_secs=table.get(name, s.sink).retry_initial_ms / 1000,
                retry_max_secs=table.get(name, s.sink).retry_max_ms / 1000, count=self.metrics.event,
                retry_refused=not self.once, task_supervisor=self.task_supervisor)
                for name, sink in sinks.items()}
        return sinks

    async def _start_sinks(self) -> None:
        """Once: every sink starts or the agent stops. The daemon: a sink that cannot start now is
        started later by its delivery (only an error that is not the sink's own is raised)."""
        started: list[Delivery] = []
        try:
            for d in self.deliveries:
                await d.start()
                started.append(d)
        except BaseException:
            for d in started:
                await d.sink.close(1.0)
            raise

    async def _close_sinks(self, timeout_secs: float) -> None:
        await asyncio.gather(*(d.sink.close(timeout_secs) for d in self.deliveries))

    def _commit(self, key: str, offset: int, path: str) -> None:
        """Every sink acknowledged the lines of file `key` before `offset`."""
        self.checkpoints.put(key, offset, path)
        self._acked.set()

    @property
    def unacked(self) -> int:
        """Records in batches no sink has acknowledged yet."""
        return sum(d.unacked for d in self.deliveries)

    async def _persist_loop(self) -> None:
        # right after acknowledgements, at most once per interval: duplicates after a crash are
        # bounded by what was in flight plus one interval of acknowledgements
        while True:
            await self._acked.wait()
            self._acked.clear()
            if not self._persist():
                self._acked.set()  # try again, after the interval like any other write
            await asyncio.sleep(self.s.checkpoint_interval_secs)

    def _persist(self) -> bool:
        """Write the checkpoints; on a disk error (full, read-only) keep the last good file,
        count and log it, and say so (False)."""
        try:
            self.checkpoints.persist()
        except OSError as exc:
            self.metrics.event("checkpoint_write_failed")
            self._disk_error = f"{exc.strerror or exc}"
            if self._disk_warn.due():  # retried every checkpoint_interval_secs: logged less often
                log.error("cannot write checkpoints in %s: %s (the last good ones are kept; retrying)",
                          self.s.data_dir, self._disk_error)
            return False
        if self._disk_error is not None:
            log.info("checkpoints in %s written again", self.s.data_dir)
            self._disk_error = None
            self._disk_warn = Every(WARN_EVERY_SECS)
        return True

    # -- reporting ------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: (ready, why)."""
        if self._fatal is not None:
            return False, f"stopped: {self._fatal}"
        if not self.ready:
            return False, "starting or stopping"
        problems = self._stalled(time.monotonic())
        if self._disk_error is not None:
            problems.append(f"data directory {self.s.data_dir} cannot be written: {self._disk_error}")
        problems += [f"sink {d.name}: {why}" for d in self.deliveries
                     if isinstance(d.sink, BufferedSink) and (why := d.sink.write_error) is not None]
        return (False, "; ".join(problems)) if problems else (True, "ready")

    def _stalled(self, now: float) -> list[str]:
        """The watchdog: each sink refused for now, or with records pending and nothing acknowledged for
        `ready_failing_secs` (a sink retrying, a send that hangs, a disk buffer that cannot
        deliver alike)."""
        limit, problems = self.s.metrics.ready_failing_secs, []
        for d in self.deliveries:
            for refusal in (d.refusal, getattr(d.sink, "refusal", None)):  # the disk buffer's too
                if refusal is not None and refusal.current is not None:
                    problems.append(f"sink {d.name} refused: {refusal.current}")
            waits = [(d.stall.secs(now), f"{d.unacked} records pending, nothing acknowledged")]
            if isinstance(d.sink, BufferedSink):
                waits.append((d.sink.stall.secs(now), f"{len(d.sink.buf.frames)} batches in its disk "
                              "buffer, nothing delivered"))
            for secs, what in waits:
                if secs and secs >= limit:
                    problems.append(f"sink {d.name} failing: {what} for {secs:.1f}s")
        return problems

    def _live_values(self) -> dict[str, Any]:
        queues = {"inflight": self.fanout.budget.used, "open_batch": 0, "send_queue": 0, "sending": 0}
        for d in self.deliveries:
            for stage, n in d.pending_bytes.items():
                queues[stage] += n
        if self.log_metrics is not None:  # held, not queued: the accounted label sets (≤ max_bytes)
            queues["log_metrics"] = self.log_metrics.nbytes
        sinks = [d.sink for d in self.deliveries]
        return {
            "files": self.source.open_files(),
            "queues": queues,
            "checkpoint_age": self.checkpoints.age(),
            "dead_letter_bytes": {name: dead.held_bytes for name, dead in self.dead_letters.items()},
            "buffer_bytes": sum(s.bytes for s in sinks if isinstance(s, BufferedSink)),
            "paused_secs": self.fanout.paused_secs(),
            "sinks_healthy": {s.name: s.healthy() for s in sinks},
            "file_pruned": {s.name: (inner.pruned_files, inner.pruned_bytes) for s in sinks
                            if isinstance(inner := getattr(s, "inner", s), FileSink)},
            "held_rotated": (len(held := self.source.held_rotated()), sum(size for _, size in held)),
        }

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


def _delivery_settings(s: Settings, name: str, nsinks: int) -> DeliverySettings:
    t = s.sink_tables().get(name, s.sink)
    return DeliverySettings(
        max_records=s.batch.max_records, max_bytes=s.batch.max_bytes, linger_secs=s.batch.linger_ms / 1000,
        max_in_flight=t.max_in_flight, retry_initial_secs=t.retry_initial_ms / 1000,
        retry_max_secs=t.retry_max_ms / 1000,
        memory_limit_bytes=t.memory_limit_bytes or s.batch.memory_limit_bytes // nsinks)


def uvloop_safe(s: Settings, shard: tuple[int, int]) -> bool:
    """Whether the process of `shard` may run on uvloop. Not the one that scrapes Prometheus
    targets (worker 0): aiohttp connects through `create_connection(sock=...)`, and uvloop
    closes that socket's descriptor a second time when the connect is cancelled (a scrape
    timeout; MagicStack/uvloop#738). The number, reused meanwhile, was seen to be the worker's
    pipe to the supervisor: its report then went into a socket nobody read, and the worker hung."""
    return not (s.prometheus_scrape.enabled and shard[0] == 0)


def run_loop(main: Callable[[], Coroutine[Any, Any, int]], use_uvloop: bool = True) -> int:
    """Run `main` on uvloop (asyncio's own loop where uvloop is missing or not wanted)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        use_uvloop = False
    if not use_uvloop:
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
