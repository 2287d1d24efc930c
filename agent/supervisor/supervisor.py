"""The supervisor: starts the worker processes, watches them, restarts them, serves their
metrics and stops them.

It starts the workers (forked from a fork server that imported the agent once) and asks each one
for a report every second over a pipe (at most one request unanswered per worker, so a worker
that does not read can never fill the pipe and block the supervisor). A report is the worker's
readiness and its metrics exposition; the exposition is the only way a worker's numbers reach
the supervisor: `/metrics` is the sum of the workers' latest expositions (one more report is
asked of each at every scrape), and the run summary is read from the same expositions (see
`agent.supervisor.exposition`, which says why). A worker keeps its latest report until its
next one: a silent worker is represented by it on the page and in the summary, a finished one
by the report it sent when it stopped.

It restarts a worker that exits on its own or does not answer within `worker_stuck_secs`
(killed first; it resumes from its checkpoints), after folding the counters of its last report
into `dead_counters`, so sums do not go back. On SIGTERM/SIGINT it stops every worker with
SIGTERM and waits for them to drain (SIGKILL after `shutdown_timeout_secs` plus a margin). A
worker failing for good (exit 2 or 3: an unusable data directory, say; with --once also a sink
that refuses the credentials, which the daemon's workers retry instead) stops the others; the
supervisor then exits 3.
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
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from agent import logs
from agent.runtime import EXIT_OK, EXIT_RUNTIME, Summary, install_signal_handlers, run_loop
from agent.settings import Settings
from agent.state import StartupError, prepare_state
from agent.supervisor.exposition import RUN_FAMILIES, merge, summarize
from agent.supervisor.worker import preload_modules, worker_main
from pipelines.backoff import Backoff

log = logging.getLogger("tailship.supervisor")

REPORT_SECS = 1.0                 # a report is asked of every worker this often
STOP_MARGIN_SECS = 10.0           # beyond shutdown_timeout_secs before a draining worker is killed
SCRAPE_TIMEOUT_SECS = 5.0


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


@dataclasses.dataclass
class _Worker:
    index: int
    proc: Any = None                       # multiprocessing.Process
    conn: Connection | None = None
    started: float = 0.0
    last_answer: float = 0.0
    ready: tuple[bool, str] = (False, "starting")
    last_metrics: bytes = b""              # its latest exposition (its last one once it stopped)
    done: bool = False                     # exited 0 in --once mode, or stopped on request
    stuck: bool = False                    # killed by the supervisor for not answering
    incarnations: int = 0                  # processes started for this index so far
    asked: int = 0                         # reports asked and not received yet (0 or 1)
    waiting: list[asyncio.Future[None]] = dataclasses.field(default_factory=list)  # /metrics requests
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
        self.registry = CollectorRegistry()
        self.restarts = Counter("tailship_worker_restarts_total", "Workers restarted by the supervisor, "
                                "by cause (exited, stuck, start_failed)", ["cause"], registry=self.registry)
        for cause in ("exited", "stuck", "start_failed"):
            self.restarts.labels(cause)
        Gauge("tailship_workers", "Worker processes configured", registry=self.registry).set(workers)
        # counters of worker incarnations that died, added to the live ones so that the merged
        # counters (and the run summary) never go back (a restarted worker counts from 0 again)
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
                                        render=self.render_metrics, limits=self.s.metrics)
            try:
                await self.server.start()
            except OSError as exc:
                raise StartupError(str(exc.strerror or exc)) from exc
        if self._stopping:  # a signal during start-up: no worker was started
            await self._shutdown_server()
            return EXIT_OK
        for w in self.workers:
            self._spawn(w)
        asker = asyncio.create_task(self._report_loop(), name="reports")
        try:
            while not all(w.done for w in self.workers):
                await self._changed.wait()
                self._changed.clear()
                if self._stopping:
                    await self._stop_all()
                    break
        finally:
            asker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asker
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
        w.asked = 0
        child.close()
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)
        w.conn, w.started, w.last_answer = parent, time.monotonic(), time.monotonic()
        w.ready = (False, "starting")
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._on_message, w)
        loop.add_reader(w.proc.sentinel, self._on_exit, w)

    def _on_message(self, w: _Worker) -> bool:
        """Handle one message of `w` (a report: its readiness and exposition); False at the end
        of its pipe."""
        assert w.conn is not None
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(w.conn.fileno())
            return False
        w.last_answer = time.monotonic()
        if msg[0] == "report":
            w.asked = max(0, w.asked - 1)
            w.ready, w.last_metrics = msg[1], msg[2]
            if w.last_answer - w.started > 30:
                w.backoff.reset()
            self._answered(w)
        return True

    def _answered(self, w: _Worker) -> None:
        """Wake the /metrics requests waiting for `w`: its latest exposition stands."""
        for fut in w.waiting:
            if not fut.done():
                fut.set_result(None)
        w.waiting.clear()

    def _on_exit(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        proc = w.proc
        loop.remove_reader(proc.sentinel)
        proc.join()
        if w.conn is not None:
            with contextlib.suppress(OSError, EOFError):
                while w.conn.poll() and self._on_message(w):  # the report sent just before exiting
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
            # its counters are carried, not its gauges (files open, records not acknowledged:
            # the new process counts its files again and reads again what was not acknowledged)
            self.dead_counters = merge([self.dead_counters.decode(), w.last_metrics.decode()],
                                       counters_only=True)
            w.last_metrics = b""
            delay = w.backoff.next()
            log.error("worker %d (pid %d) died (%s); restarting it in %.1fs, it resumes from its "
                      "checkpoints", w.index, proc.pid, cause, delay)
            loop.call_later(delay, self._respawn, w)
        self._answered(w)  # scrapes waiting for it take what is left of it
        self._changed.set()

    def _respawn(self, w: _Worker) -> None:
        if not self._stopping:
            self._spawn(w)

    def _ask(self, w: _Worker) -> None:
        """Ask `w` for a report unless one is on its way."""
        if w.conn is not None and not w.asked:
            w.asked += 1
            w.conn.send("report")

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECS)
            now = time.monotonic()
            for w in self.workers:
                if w.conn is None or w.proc is None or not w.proc.is_alive():
                    continue
                if not self._stopping and now - w.last_answer > self.s.worker_stuck_secs:
                    log.error("worker %d (pid %d) has not answered for %.0fs; killing it",
                              w.index, w.proc.pid, now - w.last_answer)
                    w.stuck = True
                    w.proc.kill()
                    continue
                with contextlib.suppress(OSError):
                    self._ask(w)

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

    def _expositions(self) -> list[str]:
        """The workers' latest expositions and the counters of those that died."""
        return [t for t in (self.dead_counters.decode(), *(w.last_metrics.decode() for w in self.workers))
                if t]

    def summary(self) -> Summary:
        """The run summary: the workers' numbers from their latest expositions, with the
        supervisor's elapsed time and its own CPU time added."""
        total = summarize(self._expositions())
        total.elapsed_secs = time.monotonic() - self._started
        total.cpu_secs += time.process_time() - self._cpu0
        return total

    def readiness(self) -> tuple[bool, str]:
        """Ready when every running worker is (by its latest report, asked every REPORT_SECS);
        else each worker that is not, with its reasons (a stalled sink, the data directory)."""
        why = [f"worker {w.index}: {w.ready[1]}" for w in self.workers if not w.done and not w.ready[0]]
        return (False, "; ".join(why)) if why else (True, "ready")

    async def render_metrics(self) -> bytes:
        """The workers' metrics summed (see `merge`), plus the supervisor's own. Each running
        worker is asked for a fresh report; one that does not answer within SCRAPE_TIMEOUT_SECS
        is represented by its latest, so that the sums do not drop (which Prometheus would read
        as counter resets)."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[_Worker, asyncio.Future[None]]] = []
        for w in self.workers:
            if w.conn is None:
                continue
            fut: asyncio.Future[None] = loop.create_future()
            w.waiting.append(fut)
            with contextlib.suppress(OSError):
                self._ask(w)
            asked.append((w, fut))
        if asked:
            await asyncio.wait([f for _, f in asked], timeout=SCRAPE_TIMEOUT_SECS)
        for w, f in asked:
            if not f.done():
                f.cancel()
                with contextlib.suppress(ValueError):
                    w.waiting.remove(f)
        return merge(self._expositions(), leave_out=RUN_FAMILIES) + generate_latest(self.registry)


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

    # asyncio's own loop, not uvloop: the supervisor serves /metrics to clients that come and go
    # (aborted, timed out) beside the pipes to its workers, and uvloop can close a descriptor a
    # second time (MagicStack/uvloop#738): a worker's pipe number, reused by a client socket, left
    # that worker's reports unread and the worker hung in its send. Its load is small either way.
    code = run_loop(go, use_uvloop=False)
    return code, sup.summary()
