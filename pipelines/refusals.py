"""Destinations a server refuses for good (a Kafka topic that does not exist or whose ACL denies
writes), remembered for a while so that only their records go to dead letters while every other
destination of the sink keeps flowing.

A refusal expires after `recheck_secs`: the sink then asks the server again, so a topic created
or an ACL granted later receives new records without a restart. While a destination is refused,
its records are dead-lettered without asking the server each time, and the log names it at most
once per `warn_secs` with how many records went to dead letters since (never a line per record).

`Throttle` is the "at most once per interval per key" of these warnings and of the daemon's
"sink refused" messages; `DeadLetterLog` the counted warning per destination that both this and
the Elasticsearch sink's per-document rejections (an index with a write block) use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.backoff import Backoff
from pipelines.deadletter import Reason

log = logging.getLogger("tailship.delivery")


class Throttle:
    """`ready(key)` is True at most once per `secs` for each key."""

    def __init__(self, secs: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.secs, self.clock = secs, clock
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.secs:
            return False
        self._last[key] = now
        return True


class DeadLetterLog:
    """Records dead-lettered per destination, warned about at most once per `secs` per
    destination, with the count since the last warning and the latest cause."""

    def __init__(self, sink: str, secs: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 note: str = "") -> None:
        self.sink, self.note = sink, note
        self.throttle = Throttle(secs, clock)
        self._counts: dict[str, int] = {}

    def add(self, dest: str, n: int, detail: str, where: str) -> None:
        count = self._counts[dest] = self._counts.get(dest, 0) + n
        if self.throttle.ready(dest):
            log.warning("sink %s: %s; %d record(s) for it written to %s (%sthis warning at most "
                        "every %.0fs)", self.sink, detail, count, where, self.note, self.throttle.secs)
            self._counts[dest] = 0


@dataclass(slots=True)
class Refusal:
    reason: Reason
    detail: str         # the server's answer, naming the server, the destination and the cause
    until: float        # monotonic time after which the destination is asked again


class Refusals:
    def __init__(self, sink: str, recheck_secs: float, warn_secs: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.recheck_secs, self.clock = sink, recheck_secs, clock
        self.log = DeadLetterLog(sink, warn_secs, clock, f"asked again every {recheck_secs:.0f}s, ")
        self._refused: dict[str, Refusal] = {}

    def get(self, dest: str) -> Refusal | None:
        """The destination's refusal if it has not expired."""
        r = self._refused.get(dest)
        return r if r is not None and self.clock() < r.until else None

    def seen(self, dest: str) -> bool:
        """`dest` was refused and has not been accepted since (its refusal may have expired)."""
        return dest in self._refused

    def accepted(self, dest: str) -> None:
        """The server took `dest` again: forget its refusal (logged when there was one)."""
        if self._refused.pop(dest, None) is not None:
            log.warning("sink %s: %r is accepted again", self.sink, dest)

    def refuse(self, dest: str, reason: Reason, detail: str) -> Refusal:
        """Remember that `dest` was refused (again): its records go to dead letters until
        `recheck_secs` from now."""
        r = self._refused[dest] = Refusal(reason, detail, self.clock() + self.recheck_secs)
        return r

    def dead_lettered(self, dest: str, n: int, where: str) -> None:
        """`n` records of refused `dest` were written to dead letters (`where`): warn once per
        interval per destination."""
        r = self._refused.get(dest)
        if r is not None:
            self.log.add(dest, n, r.detail, where)


REFUSED_RETRY_MAX_SECS = 60.0  # the longest wait between two attempts of a refused sink


class SinkRefusal:
    """The daemon's answer to a FatalSinkError of a whole sink (credentials or rights refused,
    nothing reachable at start): retrying alone cannot help, but an operator can fix it while the
    daemon runs (rotate the secret, grant the right, start the server), and exiting would stop
    every other sink of the node. So the sink is tried again with a backoff up to
    REFUSED_RETRY_MAX_SECS, the error is logged at most once per `log_secs`, and `current` tells
    readiness that the sink is refused (`tail --once` stops at the first FatalSinkError instead).
    """

    def __init__(self, sink: str, initial_secs: float, waiting: str,
                 log_secs: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.waiting, self.clock = sink, waiting, clock
        self.backoff = Backoff(initial_secs, max(initial_secs, REFUSED_RETRY_MAX_SECS))
        self.throttle = Throttle(log_secs, clock)
        self.current: Exception | None = None  # the refusal now, None once the sink works again
        self.since: float | None = None

    def refused(self, exc: Exception) -> float:
        """Note the refusal; how long to wait before the next attempt."""
        if self.since is None:
            self.since = self.clock()
        self.current = exc
        if self.throttle.ready(self.sink):
            log.error("%s (refused for %.0fs; tried again at least every %.0fs until it is fixed, "
                      "this message at most every %.0fs; %s)", exc, self.clock() - self.since,
                      self.backoff.cap, self.throttle.secs, self.waiting)
        return self.backoff.next()

    def accepted(self) -> None:
        """The sink works again."""
        if self.since is not None:
            log.warning("sink %s: accepted again after %.0fs refused", self.sink,
                        self.clock() - self.since)
        self.current = self.since = None
        self.backoff.reset()
        self.throttle = Throttle(self.throttle.secs, self.clock)  # the next refusal is logged at once
