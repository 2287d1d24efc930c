"""Exponential backoff with jitter, and the one retry loop every sender uses (the delivery of
each sink, the disk buffer's drain, the log-metrics shipper; Kafka metadata updates use the
backoff alone)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from pipelines.errors import FatalSinkError, RetriableSinkError


class Backoff:
    """`next()` gives the current delay times a random factor in [low, high] and doubles the
    delay up to `cap`; `reset()` starts over from `initial`."""

    def __init__(self, initial: float, cap: float, low: float = 0.5, high: float = 1.0) -> None:
        self.initial, self.cap, self.low, self.high = initial, cap, low, high
        self.delay = initial

    def next(self) -> float:
        d = self.delay * random.uniform(self.low, self.high)
        self.delay = min(self.cap, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.initial


async def send_with_retry(send: Callable[[], Awaitable[None]], backoff: Backoff,
                          on_retry: Callable[[RetriableSinkError, int], None],
                          attempts: int = 0,
                          on_refused: Callable[[FatalSinkError], float] | None = None) -> None:
    """Await `send()` until it returns. A `RetriableSinkError` is reported to `on_retry` with the
    attempt number and tried again after the backoff's next delay, at most `attempts` times in
    all (0: without end), after which it is raised. A `FatalSinkError` is raised, unless
    `on_refused` is given (the daemon: refusals.SinkRefusal): then it is tried again after the
    delay `on_refused` returns. Any other error is raised at once."""
    attempt = 0
    while True:
        try:
            await send()
            return
        except RetriableSinkError as exc:
            attempt += 1
            if attempts and attempt >= attempts:
                raise
            on_retry(exc, attempt)
            await asyncio.sleep(backoff.next())
        except FatalSinkError as exc:
            if on_refused is None:
                raise
            await asyncio.sleep(on_refused(exc))
