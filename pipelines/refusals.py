"""Destinations a server refuses for good (a Kafka topic that does not exist or whose ACL denies
writes), remembered for a while so that only their records go to dead letters while every other
destination of the sink keeps flowing.

A refusal expires after `recheck_secs`: the sink then asks the server again, so a topic created
or an ACL granted later receives new records without a restart. While a destination is refused,
its records are dead-lettered without asking the server each time, and the log names it at most
once per `warn_secs` with how many records went to dead letters since (never a line per record).

`Throttle` is the "at most once per interval per key" both this and the sinks' "credentials
refused" messages use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(slots=True)
class Refusal:
    reason: Reason
    detail: str         # the server's answer, naming the server, the destination and the cause
    until: float        # monotonic time after which the destination is asked again
    records: int = 0    # dead-lettered since the last warning


class Refusals:
    def __init__(self, sink: str, recheck_secs: float, warn_secs: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.recheck_secs, self.clock = sink, recheck_secs, clock
        self.throttle = Throttle(warn_secs, clock)
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
        old = self._refused.get(dest)
        r = self._refused[dest] = Refusal(reason, detail, self.clock() + self.recheck_secs,
                                          old.records if old is not None else 0)
        return r

    def dead_lettered(self, dest: str, n: int, where: str) -> None:
        """`n` records of refused `dest` were written to dead letters (`where`): warn once per
        interval per destination."""
        r = self._refused.get(dest)
        if r is None:
            return
        r.records += n
        if self.throttle.ready(dest):
            log.warning("sink %s: %s; %d record(s) for it written to %s (asked again every %.0fs, "
                        "this warning at most every %.0fs)", self.sink, r.detail, r.records, where,
                        self.recheck_secs, self.throttle.secs)
            r.records = 0
