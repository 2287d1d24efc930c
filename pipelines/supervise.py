"""Keeping long-lived work going, and noticing when it does not move.

`TaskSupervisor.keep(task, run)` awaits `run()` and, when it raises an unexpected exception, logs it
with its traceback, counts it (`count(task)`: the agent's `tailship_internal_errors_total{task}`)
and calls `run()` again after a backoff. The same helper serves a task that loops forever (the
disk buffer's drain, the checkpoint persister, discovery: `run` is the loop, restarting it is
calling it again) and one unit of work that must not be lost (a sender's batch: `run` sends that
batch, so the same batch is tried again). `task` is a fixed name ("sender", "buffer_drain", ...),
never per-instance text: it is a metric label.

Why restart rather than let the exception end the task: before this, an `OSError` in a sender
ended that sender silently; its sink's data piled up, the tailers blocked forever and nothing
said why. A bug that raises every time now costs a log line per backoff period and a counter
that moves, and readiness (`Stall`) turns 503 while nothing is acknowledged.

`Stall` is the watchdog's clock: since when data has been pending without any acknowledgement.
`Every` lets a message through at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pipelines.backoff import Backoff

log = logging.getLogger("tailship.supervise")

RESTART_INITIAL_SECS = 0.1
RESTART_MAX_SECS = 30.0
WARN_EVERY_SECS = 30.0  # a fault that repeats (a disk refusing writes) is logged at most this often


class TaskSupervisor:
    """Runs work again after an unexpected exception; `count(task)` is told of each one."""

    def __init__(self, count: Callable[[str], None] = lambda task: None,
                 initial_secs: float = RESTART_INITIAL_SECS, max_secs: float = RESTART_MAX_SECS) -> None:
        self.count = count
        self.initial, self.cap = initial_secs, max_secs

    async def keep(self, task: str, run: Callable[[], Awaitable[None]],
                   expected: tuple[type[BaseException], ...] = ()) -> None:
        """Await `run()` until it returns. Exceptions of the `expected` classes (those the caller
        handles: a sink's fatal error) and cancellation pass through; any other exception is
        logged, counted and `run()` is called again after a backoff, reset once a run lasted
        longer than the longest delay (a fault that heals does not slow later restarts)."""
        backoff = Backoff(self.initial, self.cap)
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except expected:
                raise
            except Exception as exc:  # noqa: BLE001 - unexpected by definition: the point is to survive it
                if time.monotonic() - started > self.cap:
                    backoff.reset()
                delay = backoff.next()
                self.failed(task, exc, f"restarting in {delay:.1f}s")
                await asyncio.sleep(delay)

    def spawn(self, task: str, run: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
        """`keep(task, run)` as an asyncio task called `name`."""
        return asyncio.create_task(self.keep(task, run), name=name)

    def failed(self, task: str, exc: BaseException, then: str) -> None:
        """Log `exc` with its traceback and count it."""
        log.error("internal error in %s: %r (%s)", task, exc, then, exc_info=exc)
        self.count(task)


class Stall:
    """Since when work has been pending with no progress: `pending()` when work arrives,
    `progressed(still_pending)` on each acknowledgement; `secs(now)` is 0 when nothing waits."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None

    def pending(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def progressed(self, still_pending: bool) -> None:
        self.since = time.monotonic() if still_pending else None

    def secs(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since


class Every:
    """`due()` is true at the first call and then at most once per `interval` seconds."""

    __slots__ = ("interval", "_last")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
