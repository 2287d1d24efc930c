"""One worker process: its settings (derived from the agent's) and its entry point.

`worker_main` runs in a process forked from the supervisor's fork server (which imported the
modules of `preload_modules` once). It runs a whole agent over the files its index owns and
answers the supervisor over a pipe: every "report" request with its readiness and its metrics
exposition, and once more when it stops (see `agent.supervisor.exposition`: that exposition is
all the supervisor knows of a worker's numbers). Reports are sent from a thread
(`reports.ReportSender`): a supervisor that stops reading never blocks the worker's loop.
When the supervisor's end of the pipe closes, the worker exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection

from prometheus_client import generate_latest

from agent import logs
from agent.runtime import EXIT_RUNTIME, install_signal_handlers, run_loop, uvloop_safe
from agent.settings import Settings
from agent.supervisor.exposition import RunTotals
from agent.supervisor.reports import ReportSender
from pipelines import layout
from pipelines.layout import worker_dir

log = logging.getLogger("tailship.supervisor")


def worker_settings(s: Settings, index: int, workers: int) -> Settings:
    """The settings of worker `index`: its own data directory, its share of the memory limits
    (shared and per sink), of the disk buffer, of the dead-letter store and of the file sink's
    retention, no HTTP server of its own (the supervisor serves /metrics)."""
    w = copy.deepcopy(s)
    w.workers = 1
    w.data_dir = worker_dir(s.data_dir, index, workers)
    w.batch.memory_limit_bytes = max(1 << 20, s.batch.memory_limit_bytes // workers)
    w.buffer.max_size_bytes = max(1 << 20, s.buffer.max_size_bytes // workers)
    w.deadletter = s.deadletter.share(workers)
    if s.buffer.path:
        w.buffer.path = worker_dir(s.buffer.path, index, workers)
    for t in w.sink_tables().values():
        if t.memory_limit_bytes:  # a sink's own budget, divided like the shared one it is part of
            t.memory_limit_bytes = max(1, t.memory_limit_bytes // workers)
        if t.type == "file":  # each worker prunes its own files: its share of the bound
            t.retention_bytes = t.retention_bytes and max(1, t.retention_bytes // workers)
        if t.type == "file" and not t.path:
            t.path = layout.out_dir(s.data_dir)  # one output directory, files named per worker
    w.metrics.listen = ""
    return w


def preload_modules(s: Settings) -> list[str]:
    """Modules a worker needs, imported once by the fork server."""
    mods = ["agent.forkserver_signals", "agent.runtime", "agent.logs", "pipelines.sinks.registry",
            "uvloop", "orjson", "zstandard"]
    types = {t.type for t in s.sink_tables().values()}
    mods += [f"pipelines.sinks.{t}" for t in ("kafka", "elasticsearch") if t in types]
    if s.kubernetes.enabled:  # imported by Agent.run only when enabled (aiohttp's client)
        mods.append("agent.kubernetes.service")
    return mods


def worker_main(settings: Settings, index: int, workers: int, once: bool, log_level: str,
                secrets: list[str], conn: Connection) -> None:
    """Entry point of worker `index` (forked from the fork server)."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only: it stops the workers once
    for sig in (signal.SIGTERM, signal.SIGINT):  # the fork server ignores them; a worker must not
        signal.signal(sig, signal.SIG_DFL)
    from agent.runtime import Agent
    from pipelines.errors import TailshipError

    for secret in secrets:  # registered while the supervisor read the configuration
        logs.add_secret(secret)
    logs.setup(log_level, f"w{index}")
    ws = worker_settings(settings, index, workers)
    agent = Agent(ws, once=once, shard=(index, workers))
    agent.metrics.registry.register(RunTotals(agent.summary))

    def report() -> tuple[str, tuple[bool, str], bytes]:
        return ("report", agent.readiness(), generate_latest(agent.metrics.registry))

    sender = ReportSender(conn, agent.metrics.event)

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
            if msg == "report":
                sender.send(report())  # built here, on the loop; sent by the sender's thread

        loop.add_reader(conn.fileno(), on_message)
        try:
            return await agent.run()
        finally:
            loop.remove_reader(conn.fileno())

    try:
        code = run_loop(go, uvloop_safe(ws, (index, workers)))
    except TailshipError as exc:
        log.error("%s", exc)
        code = EXIT_RUNTIME
    sender.close(report())  # its final numbers, for the run summary
    sys.exit(code)
