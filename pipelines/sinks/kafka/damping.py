"""A pause after each failed metadata update of an aiokafka client.

While a partition has no known leader (the broker is down), aiokafka's sender asks for a
metadata update (`force_metadata_update`) and waits for it; the client's synchronizer runs the
update at once, the connection is refused at once, the sender asks again: a loop with no pause
that kept one core busy for as long as the broker was down (measured with `python -m bench`'s
stall scenario: ~1 CPU-second per second of outage). This wraps the client's update so that a
failed one is followed by an exponential, jittered pause, reset by the next success.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

Update = Callable[[Any, Any], Awaitable[bool]]


class Damper:
    def __init__(self, initial: float = 0.1, cap: float = 1.0, jitter: float = 0.2,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.initial, self.cap, self.jitter, self.sleep = initial, cap, jitter, sleep
        self.delay = initial
        self.failures = 0  # failed updates in a row

    def wrap(self, update: Update) -> Update:
        async def damped(cluster: Any, topics: Any) -> bool:
            ok = await update(cluster, topics)
            if ok:
                self.delay, self.failures = self.initial, 0
                return ok
            self.failures += 1
            await self.sleep(self.delay * (1 + random.uniform(-self.jitter, self.jitter)))
            self.delay = min(self.cap, self.delay * 2)
            return ok

        return damped


def damp_metadata_retries(producer: Any, initial: float, cap: float = 1.0) -> Damper | None:
    """Install a `Damper` on an (unstarted) AIOKafkaProducer's client (aiokafka 0.14's private
    `_metadata_update`; the version is pinned in pyproject.toml). None when the producer has no
    such client (another aiokafka version, or a test's stand-in)."""
    client = getattr(producer, "client", None)
    update = getattr(client, "_metadata_update", None)
    if update is None:
        return None
    d = Damper(initial, cap)
    client._metadata_update = d.wrap(update)  # type: ignore[union-attr]
    return d
