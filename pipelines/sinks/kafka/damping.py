"""Riding out a broker outage with aiokafka: a pause after each failed metadata update, and
batches kept (not expired) while the brokers are unreachable.

While a partition has no known leader (the broker is down), aiokafka's sender asks for a
metadata update (`force_metadata_update`) and waits for it; the client's synchronizer runs the
update at once, the connection is refused at once, the sender asks again: a loop with no pause
that kept one core busy for as long as the broker was down (measured with `python -m bench`'s
stall scenario: ~1 CPU-second per second of outage). This wraps the client's update so that a
failed one is followed by an exponential, jittered pause, reset by the next success; its
`failures` count tells the sink that the brokers are unreachable right now. It is installed on the
client's private `_metadata_update` by aiokafka_internals.damp_metadata_retries.

A batch that waits for a partition leader is failed by aiokafka `request_timeout_ms` after it
was created, even with idempotence on (its own retry path never expires idempotent batches, the
wait for a leader does). A batch that was in flight when the broker went down may already be in
the log; re-sent by us as a new batch it gets new sequence numbers and is stored twice (1,756
copies per 30 s outage in tests/test_kafka.py). aiokafka_internals.keep_batches lifts that expiry
for idempotent producers, so aiokafka retries the same batch with the same sequence numbers when
the broker is back and the broker drops what it already has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pipelines.backoff import Backoff

Update = Callable[[Any, Any], Awaitable[bool]]


class Damper:
    def __init__(self, initial: float = 0.1, cap: float = 1.0, jitter: float = 0.2,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.initial, self.sleep = initial, sleep
        self.backoff = Backoff(initial, cap, 1 - jitter, 1 + jitter)
        self.failures = 0  # failed updates in a row

    def wrap(self, update: Update) -> Update:
        async def damped(cluster: Any, topics: Any) -> bool:
            ok = await update(cluster, topics)
            if ok:
                self.backoff.reset()
                self.failures = 0
                return ok
            self.failures += 1
            await self.sleep(self.backoff.next())
            return ok

        return damped

