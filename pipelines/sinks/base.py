"""The sink interface every output implements (file, stdout, null; Kafka and Elasticsearch later).

A sink is started once, handed batches, acknowledges each batch by returning from `send` (the data
is durable or accepted by the server), and closed with a deadline. `send` raises
`RetriableSinkError` for failures worth retrying (the sender owns the retry loop and its backoff)
and `FatalSinkError` when retrying cannot help. Records that can never be accepted go to the
dead-letter file with their reason, and the batch is still acknowledged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pipelines.records import Batch


@runtime_checkable
class Sink(Protocol):
    name: str

    async def start(self) -> None:
        """Open connections or files; raise FatalSinkError naming the target and cause if impossible."""

    async def send(self, batch: Batch) -> None:
        """Deliver every record of `batch`; return only once it is acknowledged."""

    async def close(self, timeout_secs: float) -> None:
        """Flush and release resources within `timeout_secs`."""

    def healthy(self) -> bool:
        """True while the last delivery attempt succeeded."""
