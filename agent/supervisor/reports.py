"""A worker's reports to the supervisor, sent from a thread.

A report (readiness and the whole metrics exposition, often more than a pipe holds) used to be
sent with a blocking `conn.send` on the worker's event loop: a supervisor that stopped reading
(busy, or its reader lost, MagicStack/uvloop#738) stalled the worker's tailing with it. Here the
loop only hands the report over; a thread sends it. At most one report waits behind the one
being sent: a newer one replaces it (the latest numbers win; the supervisor asks for one report
at a time, so this happens only when it stopped reading), counted and logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("tailship.supervisor")


class ReportSender:
    """`send(report)` returns at once; `close(last)` sends `last` (replacing what waits), waits
    until it is sent (or the pipe failed) and ends the thread. `count(event, n)` is told of each
    report replaced unsent (`report_replaced`)."""

    def __init__(self, conn: Connection, count: Callable[[str, int], None] = lambda _e, _n: None) -> None:
        self.conn = conn
        self.count = count
        self.replaced = 0
        self.failed: OSError | None = None  # the pipe failed (the supervisor is gone): no more sends
        self._cond = threading.Condition()
        self._pending: Any = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="report-sender", daemon=True)
        self._thread.start()

    def send(self, report: Any) -> None:
        with self._cond:
            if self._pending is not None:
                self._replaced()
            self._pending = report
            self._cond.notify()

    def waiting(self) -> bool:
        """Whether a report waits behind the one being sent."""
        with self._cond:
            return self._pending is not None

    def close(self, last: Any = None) -> None:
        with self._cond:
            if last is not None:
                if self._pending is not None:
                    self._replaced()
                self._pending = last
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _replaced(self) -> None:
        self.replaced += 1
        self.count("report_replaced", 1)
        if self.replaced == 1:
            log.warning("the supervisor has not read this worker's last report yet; a newer one "
                        "replaces the one waiting (logged once, counted in "
                        "tailship_events_total{event=\"report_replaced\"})")

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                report, self._pending = self._pending, None
            if report is None:
                return  # closing, everything sent
            try:
                self.conn.send(report)
            except OSError as exc:  # the supervisor is gone: its end of the pipe tells the loop
                self.failed = exc
                return
