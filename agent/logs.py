"""Logging set-up: one line per message on stderr, and client libraries kept from flooding it.

aiokafka and the Elasticsearch transport log every failed connection attempt, many per second
while a server is down. The sinks report an outage themselves (first attempt, then every tenth),
so repeats of the same library message are let through at most once per `interval` seconds; the
next one that passes says how many were held back.
"""

from __future__ import annotations

import logging
import sys
import time

LIBRARIES = ("aiokafka", "elastic_transport", "elasticsearch")


class RepeatFilter(logging.Filter):
    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} similar message(s) held back)"
        if len(self._last) > 1000:
            self._last.clear()
        return True


def setup(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="tailship %(levelname)s %(name)s: %(message)s")
    repeats = RepeatFilter()
    for name in LIBRARIES:
        logging.getLogger(name).addFilter(repeats)
    # the transport logs every request at INFO: far too much for an agent's own log
    transport = logging.getLogger("elastic_transport.transport")
    transport.setLevel(max(transport.getEffectiveLevel(), logging.WARNING))
