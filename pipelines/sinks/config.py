"""The options every sink table has (`[sink]`, or each `[sinks.<name>]`), and what a sink is
built with.

A sink table selects its implementation with `type`; the options of the Kafka and Elasticsearch
sinks are sub-tables defined beside those sinks (`kafka/config.py`, `elasticsearch/config.py`).
The file sink's options stay flat here (`path`, `compression_level`, `rotate_bytes`,
`retention_bytes`, `retention_secs`): that is how one-sink configs have always written them.
Delivery options (`max_in_flight`, retries, `memory_limit_bytes`) apply to whatever the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines import layout
from pipelines.deadletter import DeadLetter, DeadLetterReport, DeadLetterSettings
from pipelines.options import opt
from pipelines.sinks.elasticsearch.config import ElasticsearchSettings
from pipelines.sinks.kafka.config import KafkaSettings

TYPES = ("file", "stdout", "null", "kafka", "elasticsearch")


@dataclass(slots=True)
class SinkSettings:
    type: str = opt("file", choices=TYPES,
                   help="which sink")
    path: str = opt("", help="file sink: output directory (default <data_dir>/out)")
    compression_level: int = opt(3, min=1, max=19, help="file sink: zstd level")
    rotate_bytes: int = opt(64 << 20, min=1024,
                            help="file sink: start a new file after this many uncompressed bytes")
    retention_bytes: int = opt(1 << 30, min=0,
                               help="file sink: delete the oldest files once they take more than this "
                                    "on disk (0 = keep everything)")
    retention_secs: float = opt(0.0, min=0,
                                help="file sink: delete files last written longer ago than this (0 = off)")
    max_in_flight: int = opt(1, min=1, max=64,
                             help="batches sent concurrently (above 1, batches may arrive out of order)")
    retry_initial_ms: int = opt(100, min=1, help="first retry delay; doubles up to retry_max_ms")
    retry_max_ms: int = opt(10000, min=1, help="longest retry delay")
    memory_limit_bytes: int = opt(0, min=0,
                                  help="in-flight bytes this sink may hold before the files routed to it "
                                       "wait; 0 = batch.memory_limit_bytes divided by the number of sinks")
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)


    def check(self, path: str) -> list[tuple[str, str]]:
        """Problems between options (the fields are valid alone): (key path, what)."""
        problems = []
        if self.retry_initial_ms > self.retry_max_ms:
            problems.append((f"{path}.retry_initial_ms", f"expected at most {path}.retry_max_ms "
                             f"({self.retry_max_ms}), got {self.retry_initial_ms}"))
        return problems

    def check_types(self, path: str) -> list[tuple[str, str]]:
        """Problems within the type sub-tables (`kafka`, `elasticsearch`)."""
        return self.kafka.check(f"{path}.kafka") + self.elasticsearch.check(f"{path}.elasticsearch")

@dataclass(frozen=True, slots=True)
class SinkContext:
    """What building a sink needs besides its options."""

    name: str                  # the sink's name: metrics label, dead-letter file, messages
    data_dir: str              # this process's state directory (dead letters live below it)
    worker: int | None = None  # index of a worker process (names its own output files)
    deadletter: DeadLetterSettings | None = None  # this sink's share of the dead-letter cap
    report: DeadLetterReport | None = None        # counts dead letters (the agent's metrics)

    def dead_letter(self) -> DeadLetter:
        """The sink's dead-letter store."""
        return DeadLetter(layout.dead_letter_file(self.data_dir, self.name), self.name,
                          self.deadletter, self.report)
