"""Delivery to one sink: its byte budget, its batcher, its send queue and senders.

    segments (from `Fanout`) ─► budget ─► Batcher ─► queue ─► senders ─► sink.send (retried)
                                   ▲                                          │
                                   └────────── released on acknowledgement ◄──┘

Each sink has its own `Delivery`, so a sink that is down holds back only what is routed to it:
its budget fills, and the files feeding it wait (`Fanout.emit` awaits this budget). Sending is
retried with one `Backoff` per batch (`send_with_retry`) while the sink raises
`RetriableSinkError`. A `FatalSinkError` (credentials or rights of the whole sink refused) is
handed to `on_fatal` when the agent runs once (`tail --once`: the person at the terminal wants the
answer now); the daemon (`retry_refused`) tries again with a long backoff instead, logging once a
minute and reporting `refusal` to readiness (refusals.SinkRefusal): an operator can fix it while
every other sink keeps flowing. The same holds for starting the sink: in the daemon a sink that
cannot start does not stop the agent; its senders keep trying to start it and what is routed to
it waits in its budget. An acknowledged batch is handed to `on_acked`, which moves checkpoints
once every sink a line went to has acknowledged it.

The senders and the linger timer are supervised (`pipelines.supervise`): an unexpected exception
in a send (a bug, an `OSError` of a wrapping sink) is logged, counted and the same batch is sent
again after a backoff, so no batch is lost and the queue's accounting stays whole. `stall` says
since when records have been pending with nothing acknowledged (the readiness watchdog).

The agent's metrics are out of reach here (`pipelines` imports nothing from `agent`): what a
delivery has to report goes through the small `DeliveryReport` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipelines.backoff import Backoff, send_with_retry
from pipelines.batch import Batcher, ByteBudget
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.refusals import SinkRefusal
from pipelines.sinks.base import Sink
from pipelines.supervise import Stall, TaskSupervisor

log = logging.getLogger("tailship.delivery")


class DeliveryReport(Protocol):
    """What deliveries report (the agent counts it in its metrics)."""

    def sent(self, sink: str, batch: Batch, secs: float) -> None:
        """A batch was acknowledged after `secs` of its last attempt."""

    def retried(self, sink: str) -> None:
        """An attempt failed with a retriable error."""

    def failed(self, sink: str) -> None:
        """An attempt failed with a fatal error."""


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    max_records: int
    max_bytes: int
    linger_secs: float
    max_in_flight: int
    retry_initial_secs: float
    retry_max_secs: float
    memory_limit_bytes: int


class Delivery:
    def __init__(self, sink: Sink, settings: DeliverySettings, report: DeliveryReport,
                 on_fatal: Callable[[BaseException], None], retry_refused: bool = False, *,
                 task_supervisor: TaskSupervisor | None = None) -> None:
        self.sink = sink
        self.name = sink.name
        self.s = settings
        self.report = report
        # what an acknowledged batch is handed to: set by the `Fanout` the delivery belongs to
        self.on_acked: Callable[[Batch], None] = lambda batch: None
        self.on_fatal = on_fatal
        self.budget = ByteBudget(settings.memory_limit_bytes)
        self.batcher = Batcher(settings.max_records, settings.max_bytes, settings.linger_secs, self._ship)
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.unacked = 0                          # records in batches not acknowledged yet
        self.queued_bytes = 0                     # closed batches waiting for a sender
        self.failing_since: float | None = None   # monotonic time of the first failure in a row
        # the daemon: a FatalSinkError is tried again (see the module docstring)
        self.refusal = (SinkRefusal(self.name, settings.retry_initial_secs,
                                    "files routed to it wait on disk") if retry_refused else None)
        self.started = asyncio.Event()
        self.stall = Stall()                      # records pending and nothing acknowledged since
        self.task_supervisor = task_supervisor or TaskSupervisor()

    async def start(self) -> None:
        """Start the sink. Once: its error is raised. The daemon: a SinkError is reported (log,
        readiness) and the sink started later by `tasks()`; any other error (the data directory
        of a disk buffer) is raised."""
        if self.refusal is None:
            await self.sink.start()
            self.started.set()
            return
        try:
            await self.sink.start()
        except FatalSinkError as exc:
            self._refused(exc)
            return
        except RetriableSinkError as exc:
            log.warning("%s; trying again", exc)
            return
        self.started.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start the senders and the linger timer (cancelled by the owner at the end), and, when
        the sink could not be started yet, what keeps trying to start it."""
        keep = self.task_supervisor.spawn
        tasks = [keep("sender", self._sender, f"sender-{self.name}-{i}") for i in range(self.s.max_in_flight)]
        if not self.started.is_set():
            tasks.append(keep("sender", self._start_later, f"start-{self.name}"))
        tasks.append(keep("linger", self.batcher.linger, f"linger-{self.name}"))
        return tasks

    async def add(self, seg: Segment) -> None:
        """Batch `seg`, for which room was taken in `budget` (`Fanout` waits for it)."""
        await self.batcher.add(seg)

    async def flush(self) -> None:
        await self.batcher.flush()

    async def join(self) -> None:
        """Until every closed batch is acknowledged (or given up on a fatal error)."""
        await self.queue.join()

    @property
    def pending_bytes(self) -> dict[str, int]:
        """Bytes by stage, for /metrics."""
        open_batch = self.batcher.open_bytes
        return {"open_batch": open_batch, "send_queue": self.queued_bytes,
                "sending": max(0, self.budget.used - open_batch - self.queued_bytes)}

    async def _ship(self, batch: Batch) -> None:
        # no await in here: a cancelled tailer must not leave a batch half-registered
        self.unacked += batch.nrecords
        self.stall.pending()
        self.queued_bytes += batch.nbytes
        self.queue.put_nowait(batch)

    async def _start_later(self) -> None:
        def on_retry(exc: RetriableSinkError, attempt: int) -> None:
            if attempt % 10 == 0:
                log.warning("%s (attempt %d to start it; files routed to it wait on disk)", exc, attempt)

        await send_with_retry(self.sink.start, self._backoff(), on_retry, on_refused=self._refused)
        log.info("sink %s started", self.name)
        self._accepted()
        self.started.set()

    def _backoff(self) -> Backoff:
        return Backoff(self.s.retry_initial_secs, self.s.retry_max_secs)

    def _refused(self, exc: FatalSinkError) -> float:
        """The daemon's answer to a FatalSinkError: how long to wait before trying again."""
        assert self.refusal is not None
        self.report.failed(self.name)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        return self.refusal.refused(exc)

    def _accepted(self) -> None:
        self.failing_since = None
        if self.refusal is not None and self.refusal.current is not None:
            self.refusal.accepted()

    async def _sender(self) -> None:
        await self.started.wait()
        while True:
            batch = await self.queue.get()
            self.queued_bytes -= batch.nbytes
            try:
                await self._deliver(batch)
            finally:
                self.queue.task_done()
            del batch  # not held while the next one is awaited: an idle agent keeps no batch

    async def _deliver(self, batch: Batch) -> None:
        started = 0.0

        async def attempt() -> None:
            nonlocal started
            started = time.monotonic()
            await self.sink.send(batch)

        def on_retry(exc: RetriableSinkError, attempt: int) -> None:
            self.report.retried(self.name)
            if self.failing_since is None:
                self.failing_since = started
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s (attempt %d; retrying, files wait on disk)", exc, attempt)

        try:
            await self.task_supervisor.keep("sender", lambda: send_with_retry(
                attempt, self._backoff(), on_retry,
                on_refused=None if self.refusal is None else self._refused),
                expected=(FatalSinkError,))
        except FatalSinkError as exc:
            self.report.failed(self.name)
            log.error("%s", exc)
            self.on_fatal(exc)
            return
        self.report.sent(self.name, batch, time.monotonic() - started)
        self._accepted()
        self.unacked -= batch.nrecords
        self.stall.progressed(self.unacked > 0)
        self.budget.release(batch.nbytes)
        self.on_acked(batch)
