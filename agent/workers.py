"""Worker processes: one CPython process uses one core, so `workers = N` runs N shared-nothing
agents under a supervisor.

Each worker is a whole agent (its own tailers, pipeline, sink clients and checkpoints under
`<data_dir>/worker-<i>`) that reads only the files `agent.filesource.discovery.owner` gives it:
a stable hash of a file's device and inode, so a file stays with its worker through renames and
a restarted worker finds its own checkpoints. The memory limit and the disk buffer are divided among the
workers.

The supervisor starts the workers (forked from a fork server that imported the agent once),
pings each one every second over a pipe (the answer carries its running totals and readiness),
restarts one that exits on its own or does not answer within `worker_stuck_secs` (killed
first; it resumes from its checkpoints), serves `/metrics` as the sum of the workers' metrics
(fetched over the same pipes at each scrape), and on SIGTERM/SIGINT stops every worker with
SIGTERM and waits for them to drain (SIGKILL after `shutdown_timeout_secs` plus a margin). A
worker failing for good (exit 2 or 3: a sink that refuses the credentials, say) stops the
others; the supervisor then exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from agent import logs
from agent.filesource.checkpoints import worker_dir
from agent.runtime import (
    EXIT_OK,
    EXIT_RUNTIME,
    StartupError,
    Summary,
    install_signal_handlers,
    prepare_state,
    run_loop,
)
from agent.settings import Settings
from pipelines.backoff import Backoff

log = logging.getLogger("tailship.supervisor")

PING_SECS = 1.0
STOP_MARGIN_SECS = 10.0           # beyond shutdown_timeout_secs before a draining worker is killed
SCRAPE_TIMEOUT_SECS = 5.0
REFRESH_PINGS = 2                 # every this many pings a worker's metrics are fetched and kept
# gauges whose sum over workers means nothing: the merged value is the largest
MAX_GAUGES = frozenset(("tailship_checkpoint_age_seconds", "tailship_build_info"))
# histograms that describe the present (not accumulated): not kept from a worker that died
SNAPSHOT_FAMILIES = frozenset(("tailship_file_unread_bytes",))


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 `cpu.max`
    or v1 `cpu.cfs_quota_us`), rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _cgroup_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs granted by the cgroup CPU quota, None when there is none."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu.max")) as f:
            q, period = f.read().split()[:2]
        return None if q == "max" else int(q) / int(period)
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            q1 = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            p1 = int(f.read())
        return None if q1 <= 0 else q1 / p1
    return None


AUTO_MAX_WORKERS = 8              # workers = 0 on a big machine: each worker costs ~70 MiB at rest


def resolve_workers(s: Settings) -> int:
    """`workers`, or one per CPU available (at most AUTO_MAX_WORKERS) when 0; always 1 for the
    stdout sink (lines written by several processes to one pipe could interleave)."""
    if s.sink.type == "stdout":
        return 1
    return s.workers if s.workers > 0 else min(AUTO_MAX_WORKERS, available_cpus())


def worker_settings(s: Settings, index: int, workers: int) -> Settings:
    """The settings of worker `index`: its own data directory, its share of the memory limit and
    of the disk buffer, no HTTP server of its own (the supervisor serves /metrics)."""
    w = copy.deepcopy(s)
    w.workers = 1
    w.data_dir = worker_dir(s.data_dir, index, workers)
    w.batch.memory_limit_bytes = max(1 << 20, s.batch.memory_limit_bytes // workers)
    w.buffer.max_size_bytes = max(1 << 20, s.buffer.max_size_bytes // workers)
    if s.buffer.path:
        w.buffer.path = worker_dir(s.buffer.path, index, workers)
    if s.sink.type == "file" and not s.sink.path:
        w.sink.path = os.path.join(s.data_dir, "out")  # one output directory, files named per worker
    w.metrics.listen = ""
    return w


def preload_modules(s: Settings) -> list[str]:
    """Modules a worker needs, imported once by the fork server."""
    mods = ["agent.forkserver_signals", "agent.runtime", "agent.logs", "pipelines.sinks.registry",
            "uvloop", "orjson", "zstandard"]
    if s.sink.type == "kafka":
        mods.append("pipelines.sinks.kafka")
    elif s.sink.type == "elasticsearch":
        mods.append("pipelines.sinks.elasticsearch")
    return mods


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
        return False
    return True


def _stop_fork_server() -> None:
    """Stop and reap the fork server now, not after we exit: it has reaped the workers, so the
    kernel adds their CPU time to ours (what `time` and the benchmark's wait4 report)."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython's own (used by its tests)
    if stop is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop()


# -- the worker process ---------------------------------------------------------------------------

def worker_main(settings: Settings, index: int, workers: int, once: bool, log_level: str,
                secrets: list[str], conn: Connection) -> None:
    """Entry point of worker `index` (forked from the fork server)."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only: it stops the workers once
    for sig in (signal.SIGTERM, signal.SIGINT):  # the fork server ignores them; a worker must not
        signal.signal(sig, signal.SIG_DFL)
    from agent.runtime import Agent
    from pipelines.errors import TailshipError
    from pipelines.sinks.registry import build_sink

    for secret in secrets:  # registered while the supervisor read the configuration
        logs.add_secret(secret)
    logs.setup(log_level, f"w{index}")
    ws = worker_settings(settings, index, workers)
    agent = Agent(ws, build_sink(ws.sink, ws.data_dir, index), once=once, shard=(index, workers))

    async def go() -> int:
        install_signal_handlers(agent.request_stop)
        loop = asyncio.get_running_loop()

        def on_message() -> None:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                # the supervisor is gone (killed): stop at once rather than drain, so that a new
                # supervisor's worker never reads the same files alongside this one; what is
                # not acknowledged is read again from the checkpoints
                log.error("the supervisor is gone; worker %d exits", index)
                with contextlib.suppress(OSError):
                    agent.checkpoints.persist()
                os._exit(EXIT_RUNTIME)
            if msg == "ping":
                conn.send(("pong", dataclasses.asdict(agent.summary()), agent.readiness()))
            elif msg == "scrape":
                conn.send(("metrics", generate_latest(agent.metrics.registry)))

        loop.add_reader(conn.fileno(), on_message)
        try:
            return await agent.run()
        finally:
            loop.remove_reader(conn.fileno())

    try:
        code = run_loop(go)
    except TailshipError as exc:
        log.error("%s", exc)
        code = EXIT_RUNTIME
    with contextlib.suppress(OSError):
        conn.send(("summary", dataclasses.asdict(agent.summary())))
    sys.exit(code)


# -- the supervisor -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Worker:
    index: int
    proc: Any = None                       # multiprocessing.Process
    conn: Connection | None = None
    started: float = 0.0
    last_answer: float = 0.0
    live: dict[str, Any] = dataclasses.field(default_factory=dict)   # running totals (last pong)
    ready: tuple[bool, str] = (False, "starting")
    final: dict[str, Any] | None = None    # the summary it sent when it stopped
    done: bool = False                     # exited 0 in --once mode, or stopped on request
    stuck: bool = False                    # killed by the supervisor for not answering
    incarnations: int = 0                  # processes started for this index so far
    pings: int = 0                         # pings sent and not answered yet
    scrapes_asked: int = 0                 # scrapes sent and not answered yet
    waiting: list[asyncio.Future[bytes]] = dataclasses.field(default_factory=list)  # /metrics requests
    last_metrics: bytes = b""              # its latest exposition (refreshed every few seconds)
    backoff: Backoff = dataclasses.field(default_factory=lambda: Backoff(0.5, 30.0))


class Supervisor:
    def __init__(self, settings: Settings, workers: int, *, once: bool = False,
                 log_level: str = "info") -> None:
        self.s = settings
        self.n = workers
        self.once = once
        self.log_level = log_level
        # workers fork from a server process that imported the agent once: a worker starts in
        # milliseconds and shares those pages, instead of importing everything again (spawn)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload_modules(settings))
        self.workers = [_Worker(i) for i in range(workers)]
        self.carried = Summary()         # totals of worker incarnations that died
        self.registry = CollectorRegistry()
        self.restarts = Counter("tailship_worker_restarts_total", "Workers restarted by the supervisor, "
                                "by cause (exited, stuck, start_failed)", ["cause"], registry=self.registry)
        for cause in ("exited", "stuck", "start_failed"):
            self.restarts.labels(cause)
        Gauge("tailship_workers", "Worker processes configured", registry=self.registry).set(workers)
        # counters of worker incarnations that died, added to the live ones so that the merged
        # counters never go back (a restarted worker counts from 0 again)
        self.dead_counters = b""
        self._stopping = False
        self._failed = False
        self._changed = asyncio.Event()
        self._started = time.monotonic()
        self._cpu0 = time.process_time()
        self.server: Any = None

    # -- lifecycle

    def request_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            for w in self.workers:
                if w.proc is not None and w.proc.is_alive():
                    with contextlib.suppress(OSError):
                        os.kill(w.proc.pid, signal.SIGTERM)
        self._changed.set()

    async def run(self) -> int:
        self._started, self._cpu0 = time.monotonic(), time.process_time()
        prepare_state(self.s, self.n)
        if self.s.metrics.listen:
            from agent.server import MetricsServer

            self.server = MetricsServer(self.s.metrics.listen, self.registry, self.readiness,
                                        render=self.render_metrics)
            try:
                await self.server.start()
            except OSError as exc:
                raise StartupError(str(exc.strerror or exc)) from exc
        if self._stopping:  # a signal during start-up: no worker was started
            await self._shutdown_server()
            return EXIT_OK
        for w in self.workers:
            self._spawn(w)
        pinger = asyncio.create_task(self._ping_loop(), name="ping")
        try:
            while not all(w.done for w in self.workers):
                await self._changed.wait()
                self._changed.clear()
                if self._stopping:
                    await self._stop_all()
                    break
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            await self._shutdown_server()
            _stop_fork_server()
        return EXIT_RUNTIME if self._failed else EXIT_OK

    async def _shutdown_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def _spawn(self, w: _Worker) -> None:
        if self._stopping:
            w.done = True
            self._changed.set()
            return
        s = self.s
        if w.incarnations:  # a restart: files without a checkpoint appeared while it was down
            s = copy.deepcopy(s)
            s.source.read_from = "head"
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, name=f"tailship-worker-{w.index}",
                                args=(s, w.index, self.n, self.once, self.log_level, logs.secrets(), child))
        try:
            proc.start()
        except OSError as exc:  # no process (EMFILE, ENOMEM, fork server trouble): try again
            parent.close()
            child.close()
            self.restarts.labels("start_failed").inc()
            delay = w.backoff.next()
            log.error("worker %d could not be started (%s); trying again in %.1fs", w.index, exc, delay)
            asyncio.get_running_loop().call_later(delay, self._respawn, w)
            return
        w.proc = proc
        w.incarnations += 1
        w.pings = w.scrapes_asked = 0
        child.close()
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)
        w.conn, w.started, w.last_answer = parent, time.monotonic(), time.monotonic()
        w.live, w.final, w.ready = {}, None, (False, "starting")
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._on_message, w)
        loop.add_reader(w.proc.sentinel, self._on_exit, w)

    def _on_message(self, w: _Worker) -> bool:
        """Handle one message of `w`; False at the end of its pipe."""
        assert w.conn is not None
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(w.conn.fileno())
            return False
        w.last_answer = time.monotonic()
        kind = msg[0]
        if kind == "pong":
            w.pings = max(0, w.pings - 1)
            w.live, w.ready = msg[1], msg[2]
            if w.last_answer - w.started > 30:
                w.backoff.reset()
        elif kind == "metrics":
            w.scrapes_asked = max(0, w.scrapes_asked - 1)
            w.last_metrics = msg[1]
            for fut in w.waiting:
                if not fut.done():
                    fut.set_result(msg[1])
            w.waiting.clear()
        elif kind == "summary":
            w.final = msg[1]
        return True

    def _on_exit(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        proc = w.proc
        loop.remove_reader(proc.sentinel)
        proc.join()
        if w.conn is not None:
            with contextlib.suppress(OSError, EOFError):
                while w.conn.poll() and self._on_message(w):  # the summary sent just before exiting
                    pass
            loop.remove_reader(w.conn.fileno())
            w.conn.close()
            w.conn = None
        code = proc.exitcode
        if _alive(proc.pid):
            # the fork server died, not the worker (its status pipe closed): a worker we can no
            # longer watch is stopped and started again; it resumes from its checkpoints
            log.error("worker %d (pid %d): its fork server is gone; killing it", w.index, proc.pid)
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)
        for fut in w.waiting:  # its last metrics stand in
            if not fut.done():
                fut.set_result(w.last_metrics)
        w.waiting.clear()
        if self._stopping or (self.once and code == EXIT_OK):
            w.done = True
        elif code in (2, 3):
            log.error("worker %d failed (exit %d); stopping the others", w.index, code)
            self._failed = True
            w.done = True
            self.request_stop()
        else:
            cause = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            if w.stuck:
                cause += ", killed when it stopped answering"
            self.restarts.labels("stuck" if w.stuck else "exited").inc()
            w.stuck = False
            self._carry(w)
            self.dead_counters = merge([self.dead_counters.decode(), w.last_metrics.decode()],
                                       counters_only=True)
            w.last_metrics = b""
            delay = w.backoff.next()
            log.error("worker %d (pid %d) died (%s); restarting it in %.1fs, it resumes from its "
                      "checkpoints", w.index, proc.pid, cause, delay)
            loop.call_later(delay, self._respawn, w)
        self._changed.set()

    def _respawn(self, w: _Worker) -> None:
        if not self._stopping:
            self._spawn(w)

    def _carry(self, w: _Worker) -> None:
        """Keep the totals of a worker incarnation that is gone (not its files, which a restarted
        worker counts again, nor what it had not acknowledged)."""
        _add_totals(self.carried, w.final or w.live, skip=("unacked_records", "files"))
        w.live, w.final = {}, None

    async def _ping_loop(self) -> None:
        pings = 0
        while True:
            await asyncio.sleep(PING_SECS)
            now = time.monotonic()
            pings += 1
            for w in self.workers:
                if w.conn is None or w.proc is None or not w.proc.is_alive():
                    continue
                if not self._stopping and now - w.last_answer > self.s.worker_stuck_secs:
                    log.error("worker %d (pid %d) has not answered for %.0fs; killing it",
                              w.index, w.proc.pid, now - w.last_answer)
                    w.stuck = True
                    w.proc.kill()
                    continue
                # at most one ping and one scrape unanswered: sends to a worker that does not
                # read can never fill the pipe and block this loop
                with contextlib.suppress(OSError):
                    if not w.pings:
                        w.pings += 1
                        w.conn.send("ping")
                    if pings % REFRESH_PINGS == 0:  # its counters, in case it dies before a scrape
                        self._ask_metrics(w)

    async def _stop_all(self) -> None:
        deadline = time.monotonic() + self.s.shutdown_timeout_secs + STOP_MARGIN_SECS
        while any(w.proc is not None and w.proc.is_alive() for w in self.workers):
            if time.monotonic() > deadline:
                for w in self.workers:
                    if w.proc is not None and w.proc.is_alive():
                        log.error("worker %d did not stop in time; killing it", w.index)
                        w.proc.kill()
                deadline = math.inf
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
            self._changed.clear()
        await asyncio.sleep(0)  # let the exit callbacks run

    def kill_now(self) -> None:
        """A second signal: no draining."""
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                w.proc.kill()

    # -- reporting

    def summary(self) -> Summary:
        total = dataclasses.replace(self.carried, events=dict(self.carried.events))
        for w in self.workers:
            _add_totals(total, w.final or w.live)
        total.elapsed_secs = time.monotonic() - self._started
        total.cpu_secs += time.process_time() - self._cpu0
        return total

    def readiness(self) -> tuple[bool, str]:
        for w in self.workers:
            if not w.done and not w.ready[0]:
                return False, f"worker {w.index}: {w.ready[1]}"
        return True, "ready"

    def _ask_metrics(self, w: _Worker) -> None:
        if w.conn is not None and not w.scrapes_asked:
            w.scrapes_asked += 1
            w.conn.send("scrape")

    async def render_metrics(self) -> bytes:
        """The workers' metrics summed (see `merge`), plus the supervisor's own. A worker that
        does not answer within SCRAPE_TIMEOUT_SECS is represented by its latest exposition, so
        that the sums do not drop (which Prometheus would read as counter resets)."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[_Worker, asyncio.Future[bytes]]] = []
        for w in self.workers:
            if w.conn is None:
                continue
            fut: asyncio.Future[bytes] = loop.create_future()
            w.waiting.append(fut)
            with contextlib.suppress(OSError):
                self._ask_metrics(w)
            asked.append((w, fut))
        if asked:
            await asyncio.wait([f for _, f in asked], timeout=SCRAPE_TIMEOUT_SECS)
        texts = [(f.result() if f.done() else w.last_metrics).decode() for w, f in asked]
        for w, f in asked:
            if not f.done():
                f.cancel()
                with contextlib.suppress(ValueError):
                    w.waiting.remove(f)
        return merge([t for t in [*texts, self.dead_counters.decode()] if t]) + generate_latest(self.registry)


def _add_totals(total: Summary, got: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Add a worker's summary (`dataclasses.asdict` of its `Summary`) into `total`; elapsed time
    is the supervisor's own, and the fields in `skip` are left out."""
    for f in dataclasses.fields(Summary):
        if f.name in ("elapsed_secs", "events", *skip) or f.name not in got:
            continue
        setattr(total, f.name, getattr(total, f.name) + got[f.name])
    for k, v in got.get("events", {}).items():
        total.events[k] = total.events.get(k, 0) + v


def merge(texts: list[str], counters_only: bool = False) -> bytes:
    """Prometheus text expositions of several workers as one: samples with the same name and
    labels are added (counters, histogram buckets and sums, gauges such as bytes in flight);
    `_created` samples take the earliest, and gauges in MAX_GAUGES the largest value.
    `counters_only`: keep only what accumulates (counters, histograms, summaries)."""
    fams: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if counters_only and (fam.type not in ("counter", "histogram", "summary")
                                  or fam.name in SNAPSHOT_FAMILIES):
                continue
            if fam.name not in fams:
                fams[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            acc = values[fam.name]
            for sample in fam.samples:
                if counters_only and sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                have = acc.get(key)
                if have is None or math.isnan(have):
                    acc[key] = sample.value
                elif math.isnan(sample.value):
                    continue
                elif sample.name.endswith("_created"):
                    acc[key] = min(have, sample.value)
                elif fam.type in ("info", "stateset") or fam.name in MAX_GAUGES:
                    acc[key] = max(have, sample.value)
                else:
                    acc[key] = have + sample.value

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            for name, fam in fams.items():
                for (sname, labels), v in values[name].items():
                    fam.add_sample(sname, dict(labels), v)
                yield fam

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Merged())  # type: ignore[arg-type]
    return generate_latest(reg)


def run_supervisor(settings: Settings, workers: int, *, once: bool, log_level: str,
                   progress: Callable[[Callable[[], Summary]], Any] | None = None
                   ) -> tuple[int, Summary]:
    """Run `workers` worker processes until done (--once) or a signal; (exit code, totals)."""
    sup = Supervisor(settings, workers, once=once, log_level=log_level)

    async def go() -> int:
        install_signal_handlers(sup.request_stop, sup.kill_now, "stopping the workers")
        ticker = asyncio.create_task(progress(sup.summary)) if progress is not None else None
        try:
            return await sup.run()
        finally:
            if ticker is not None:
                ticker.cancel()

    code = run_loop(go)
    return code, sup.summary()
