"""The Kafka sink's own cost per record, apart from reading and parsing: `KafkaSink.send` fed
ready batches against a real broker, one settings variant after another, alternating.

    python -m bench.kafka_sink --bootstrap HOST:PORT [--records N] [--rounds R]

File → Kafka costs more than file → null by what the sink and aiokafka spend on a record (grouping,
headers, aiokafka's C record builder, compression, the produce request, the acknowledgement)
plus what sharing the event loop and the caches with them costs the chain. This measures the
first part alone, so the effect of one setting (the zstd level, compression off, keys, more
partitions) shows without the ±30 % noise of whole-agent runs on a shared machine. Each variant
sends the same batches to a topic of its own; the figure is the process's CPU (user + system,
getrusage) per record over all batches but the first (connection and metadata), the median of
the rounds. The broker's CPU is not in it; the kernel's loopback work is only partly.

Records: payloads of `bench.generate` CRI lines (~1 KB app JSON, seeded) carrying a trace id
(7 in 8) and a span id, in segments of 170 records from 8 files and batches of 2000 records
(the agent's `batch.max_records`), as the chain hands them to a sink.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.generate import generate_file
from bench.kafka import create_topic
from pipelines.records import Batch, Segment
from pipelines.sinks.kafka import KafkaSink
from pipelines.sinks.kafka.config import KafkaSettings

SEGMENT = 170  # records of one file's chunk
BATCH = 2000  # records of one batch (batch.max_records)
FILES = 8

# name → (settings changed from the defaults, partitions)
VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "zstd-1": ({}, 1),
    "zstd-3": ({"compression_level": 3}, 1),
    "none": ({"compression": "none"}, 1),
    "key-none": ({"key": "none"}, 1),
    "zstd-1 x4": ({}, 4),
}


def payloads(n: int, work: Path) -> list[bytes]:
    """`n` payloads of seeded CRI lines (their JSON objects, stack-trace lines as they are)."""
    path = work / "payloads.log"
    generate_file(path, seed=5, lines=n, fmt="cri", avg_bytes=1000)
    lines = path.read_bytes().splitlines()
    return [line.split(b" ", 3)[3] for line in lines][:n]


def batches(values: list[bytes]) -> list[Batch]:
    rnd = random.Random(7)
    out: list[Batch] = []
    for start in range(0, len(values), BATCH):
        batch = Batch(seq=len(out))
        end = min(start + BATCH, len(values))
        for s in range(start, end, SEGMENT):
            path = f"/var/log/containers/app-{s // SEGMENT % FILES}_ns_app-{'0' * 64}.log"
            seg = Segment(file_key=path, path=path, meta={})
            seg.records = values[s:min(s + SEGMENT, end)]
            seg.offsets = list(range(len(seg.records)))
            seg.trace_ids = [f"{rnd.getrandbits(128):032x}" if rnd.random() < 0.875 else None
                             for _ in seg.records]
            seg.span_ids = [None if t is None else f"{rnd.getrandbits(64):016x}" for t in seg.trace_ids]
            seg.nbytes = sum(map(len, seg.records))
            batch.add(seg)
        out.append(batch)
    return out


async def stored(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in `topic` (the sum of its partitions' end offsets: no transactions here)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def run(bootstrap: str, name: str, todo: list[Batch], data_dir: str) -> tuple[float, float]:
    """CPU-seconds and wall seconds of sending `todo` but its first batch through a new sink;
    raises if the topic does not hold every record once."""
    changes, partitions = VARIANTS[name]
    topic = f"bench-sink-{uuid.uuid4().hex[:12]}"
    await create_topic(bootstrap, topic, partitions)
    s = dataclasses.replace(KafkaSettings(bootstrap_servers=[bootstrap], topic=topic,
                                          fallback_topic=topic), **changes)
    sink = KafkaSink(s, data_dir)
    await sink.start()
    try:
        await sink.send(todo[0])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for batch in todo[1:]:
            await sink.send(batch)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    finally:
        await sink.close(10)
    want = sum(b.nrecords for b in todo)
    got = await stored(bootstrap, topic, partitions)
    if got != want:
        raise RuntimeError(f"{name}: topic {topic} holds {got} records, {want} were sent")
    return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, t1 - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kafka_sink", description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True, help="host:port of a broker")
    ap.add_argument("--records", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: "
                    + ", ".join(VARIANTS))
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="bench-kafka-sink-") as work:
        values = payloads(args.records, Path(work))
        todo = batches(values)
        measured = sum(b.nrecords for b in todo[1:])
        cpu: dict[str, list[float]] = {n: [] for n in names}
        wall: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names:
                c, w = asyncio.run(run(args.bootstrap, name, todo, work))
                cpu[name].append(c)
                wall[name].append(w)
                print(f"round {r + 1} {name:>10}: {1e6 * c / measured:5.2f} µs/record CPU, "
                      f"{measured / w:8.0f} records/s", flush=True)
    size = sum(map(len, values)) / len(values)
    print(f"\n{measured} records of {size:.0f} B a round, median of {args.rounds}:")
    print(f"{'variant':>10} {'µs/record':>10} {'records/s':>10}")
    for name in names:
        print(f"{name:>10} {1e6 * statistics.median(cpu[name]) / measured:10.2f} "
              f"{measured / statistics.median(wall[name]):10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
