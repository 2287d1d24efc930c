"""What the Kafka sink puts into record batches, read back as a consumer would: keys, values,
headers, partitions and order, with aiokafka's own record batch builder and no broker."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from agent.settings import KafkaSettings
from pipelines.records import Batch, Segment
from pipelines.sinks.kafka import KafkaSink
from pipelines.sinks.kafka.partition import partition_for


def segment(path: str, n: int, seed: int) -> Segment:
    seg = Segment(file_key=path, path=path, meta={})
    for i in range(n):
        pad = "x" * (200 + (i * 37 + seed) % 300)
        seg.records.append(orjson.dumps({"message": f"{path} {i} {pad}"}))
        seg.offsets.append(i * 1000)
        # every combination of trace and span id present or absent
        seg.trace_ids.append(None if i % 4 in (1, 3) else f"{(i * 7919 + seed) % 50:032x}")
        seg.span_ids.append(None if i % 4 in (2, 3) else f"{i + seed:016x}")
    return seg


def expected(batch: Batch, partitions: int, limit: int) -> dict[int, list[tuple[Any, ...]]]:
    """The records each partition should get, in order: what the sink is specified to do."""
    out: dict[int, list[tuple[Any, ...]]] = {}
    for seg in batch.segments:
        for rec, tid, sid in zip(seg.records, seg.trace_ids, seg.span_ids, strict=True):
            if len(rec) > limit:
                continue
            key = tid.encode() if tid is not None else None
            headers = [("log.file.path", seg.path.encode())]
            if tid is not None:
                headers.append(("trace_id", tid.encode()))
            if sid is not None:
                headers.append(("span_id", sid.encode()))
            part = 0 if key is None else partition_for(key, partitions)  # first batch: sticky 0
            out.setdefault(part, []).append((key, rec, headers))
    return out


def test_record_batches_carry_every_record_once_keyed_with_headers_in_order(tmp_path: Path) -> None:
    """Two files, three partitions, record batches of at most 4 KiB (so a partition's records span
    several): each batch decodes to the records, keys and headers of its partition in file order,
    offsets counting from 0; a record above max_record_bytes is dead-lettered, not sent."""
    settings = dataclasses.replace(KafkaSettings(), topic="t", max_batch_bytes=4096,
                                   max_record_bytes=1024)

    class Producer:
        def create_batch(self) -> BatchBuilder:
            return BatchBuilder(settings.max_batch_bytes, DefaultRecordBatch.CODEC_ZSTD)

    sink = KafkaSink(settings, str(tmp_path))
    sink._producer = Producer()
    sink._partitions["t"] = 3
    a, b = segment("/logs/a.log", 60, 1), segment("/logs/b.log", 45, 2)
    a.records[5] = orjson.dumps({"message": "y" * 1100})  # too large
    batch = Batch(1)
    batch.add(a)
    batch.add(b)
    groups = asyncio.run(sink._group(batch, set()))
    got: dict[int, list[tuple[Any, ...]]] = {}
    nchunks = 0
    for (topic, part), recs in groups.items():
        assert topic == "t"
        for _, builder, start, end in sink._chunks(recs):
            nchunks += 1
            assert builder.record_count() == end - start  # the producer's sequence numbers
            records = list(DefaultRecordBatch(bytes(builder._build())))
            assert [r.offset for r in records] == list(range(end - start))
            got.setdefault(part, []).extend((r.key, r.value, list(r.headers)) for r in records)
    assert got == expected(batch, 3, 1024)
    assert nchunks > 3 * 2 and len(got) == 3
    [dead] = [orjson.loads(x) for x in (tmp_path / "deadletter" / "kafka.ndjson").read_bytes().splitlines()]
    assert dead["file"] == "/logs/a.log" and dead["offset"] == 5000
    assert dead["reason"] == "too_large" and "exceeds max_record_bytes" in dead["detail"]


def test_an_oversized_record_the_disk_refuses_to_dead_letter_is_retried_not_lost(tmp_path: Path) -> None:
    """The dead-letter write of a too-large record fails (read-only disk): grouping raises
    RetriableSinkError naming the path, nothing is marked dead-lettered, and the next attempt
    writes it once."""
    import pytest

    from pipelines.errors import RetriableSinkError

    settings = dataclasses.replace(KafkaSettings(), topic="t", max_record_bytes=1024)
    sink = KafkaSink(settings, str(tmp_path))
    sink._partitions["t"] = 1
    seg = segment("/logs/a.log", 3, 0)
    seg.records[1] = orjson.dumps({"message": "y" * 1100})
    batch = Batch(1)
    batch.add(seg)
    done: set[Any] = set()
    real = sink.dead._store

    def read_only(data: bytes) -> None:
        raise OSError(30, "Read-only file system")

    sink.dead._store = read_only  # type: ignore[method-assign]
    with pytest.raises(RetriableSinkError) as err:
        asyncio.run(sink._group(batch, done))
    assert "Read-only file system" in str(err.value) and "kafka.ndjson" in str(err.value)
    assert done == set()
    sink.dead._store = real  # type: ignore[method-assign]
    asyncio.run(sink._group(batch, done))
    [dead] = [orjson.loads(x) for x in (tmp_path / "deadletter" / "kafka.ndjson").read_bytes().splitlines()]
    assert dead["offset"] == 1000 and dead["destination"] == "t"
