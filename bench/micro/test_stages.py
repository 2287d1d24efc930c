"""Micro-benchmarks of the hot stages of the pipeline, one per stage, on one shared workload.

Run with `.venv/bin/pytest bench/micro --benchmark-enable --benchmark-only` (outside the default
test run, which collects only tests/). `--benchmark-enable` is needed because pyproject's addopts
carry `--benchmark-disable`, which pytest-benchmark refuses to combine with `--benchmark-only`.
Without those options each benchmark runs once as a plain test, which still checks its output.

Workload: 2000 docker json-file lines of ~1 KB (an app JSON payload with a canonical trace id and
span id), and the same payloads as CRI lines. Every stage calls the project's own code on the
input the previous stage produced; divide a mean by 2000 for the cost per line.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from pytest_benchmark.fixture import BenchmarkFixture

from agent.settings import KafkaSettings
from pipelines import trace
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.codec import ZstdCodec, encode_ndjson
from pipelines.enrich import file_meta
from pipelines.formats import CriDecoder, DockerDecoder, Entry
from pipelines.records import Batch, Segment
from pipelines.sinks.kafka import KafkaSink
from pipelines.sinks.kafka.aiokafka_internals import install_zstd_level

N = 2000
PATH = "/var/log/containers/checkout-5f7c9d-x2k4p_shop_app-" + "ab" * 32 + ".log"
NOW_TS = "2026-11-24T10:00:01.000000Z"
WORDS = ("order", "cart", "payment", "latency", "upstream", "retry", "cache", "user", "item", "ok")


@dataclass
class Workload:
    docker: list[bytes]        # docker json-file lines (no newline)
    cri: list[bytes]           # the same payloads as CRI lines
    payloads: list[str]        # the app JSON each line carries
    trace_ids: list[str]
    segment: Segment           # what the whole chain makes of `docker`
    counts: dict[str, int]     # decoder/chain counters (malformed, invalid_utf8, ...)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


def _payload(rnd: random.Random, seq: int, trace_id: str) -> str:
    msg = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(90, 130)))
    return orjson.dumps({
        "ts": "2026-11-24T10:00:00.123Z", "level": rnd.choice(("info", "warn", "error")),
        "logger": "checkout.http", "msg": msg, "service": "checkout", "http.method": "POST",
        "http.path": f"/api/v1/orders/{rnd.randrange(10**6)}", "status": rnd.choice((200, 201, 503)),
        "duration_ms": rnd.randint(1, 900), "trace_id": trace_id,
        "span_id": f"{rnd.getrandbits(64) | 1:016x}", "seq": seq,
    }).decode()


@pytest.fixture(scope="module")
def work() -> Workload:
    rnd = random.Random(20261124)
    tids = [f"{rnd.getrandbits(128) | 1:032x}" for _ in range(N)]
    payloads = [_payload(rnd, i, tid) for i, tid in enumerate(tids)]
    ts = "2026-11-24T10:00:00.123456789Z"
    docker = [orjson.dumps({"log": p + "\n", "stream": "stdout", "time": ts}) for p in payloads]
    cri = [f"{ts} stdout F {p}".encode() for p in payloads]
    w = Workload(docker, cri, payloads, tids, Segment("", PATH, {}), {})
    w.segment = _chain(w)
    assert len(w.segment.records) == N and w.segment.trace_ids == tids and not w.counts, w.counts
    return w


def _chain(w: Workload) -> Segment:
    spec = ChainSpec(format="docker", host_name="bench")
    return FileProcessor(spec, "1:1:ff", PATH, file_meta(PATH, None), w.count).process(w.docker, 0, 0.0)


def test_chain_whole(benchmark: BenchmarkFixture, work: Workload) -> None:
    """Reference: the whole FileProcessor.process (stages 1-4 plus enrichment) on the docker lines."""
    seg = benchmark(_chain, work)
    assert seg.records == work.segment.records and seg.safe_offset == sum(len(x) + 1 for x in work.docker)


@pytest.mark.parametrize("fmt", ["docker", "cri"])
def test_1_decode(benchmark: BenchmarkFixture, work: Workload, fmt: str) -> None:
    lines = work.docker if fmt == "docker" else work.cri
    cls = DockerDecoder if fmt == "docker" else CriDecoder

    def run() -> tuple[int, list[Entry]]:
        out: list[Entry] = []
        return cls(1 << 20, work.count).decode(lines, 0, NOW_TS, out), out

    end, entries = benchmark(run)
    assert end == sum(len(x) + 1 for x in lines)
    assert [e[3] for e in entries] == work.payloads and not work.counts
    assert {(e[1], e[4]) for e in entries} == {("stdout", 0)}


def test_2_parse(benchmark: BenchmarkFixture, work: Workload) -> None:
    """The chain's JSON parse: orjson.loads on each payload that starts with `{`."""
    loads = orjson.loads
    objs = benchmark(lambda: [loads(p) for p in work.payloads if p[:1] == "{"])
    assert len(objs) == N and [o["seq"] for o in objs] == list(range(N))


def test_3_trace(benchmark: BenchmarkFixture, work: Workload) -> None:
    """trace.extract_fields, as the chain calls it on each parsed object (canonical ids: fast path)."""
    objs = [orjson.loads(p) for p in work.payloads]
    extract = trace.extract_fields
    ids = benchmark(lambda: [extract(o) for o in objs])
    assert [t for t, _ in ids] == work.trace_ids
    assert all(s is not None and len(s) == 16 for _, s in ids)


def test_4_encode(benchmark: BenchmarkFixture, work: Workload) -> None:
    """orjson.dumps of each enriched record (as the chain does), then the batch's NDJSON framing."""
    recs: list[dict[str, Any]] = [orjson.loads(r) for r in work.segment.records]
    dumps = orjson.dumps

    def run() -> bytes:
        seg = Segment("1:1:ff", PATH, {}, [dumps(r) for r in recs])
        batch = Batch(1)
        batch.add(seg)
        return encode_ndjson(batch)

    data = benchmark(run)
    assert data == b"\n".join(work.segment.records) + b"\n"


def test_5_zstd(benchmark: BenchmarkFixture, work: Workload) -> None:
    """The file sink's codec at its default level, on the whole batch as NDJSON."""
    batch = Batch(1)
    batch.add(work.segment)
    data = encode_ndjson(batch)
    codec = ZstdCodec()
    frame = benchmark(codec.compress, data)
    assert codec.level == 3 and len(frame) < len(data) // 2
    assert ZstdCodec().decompress(frame) == data


def test_6_kafka_batch(benchmark: BenchmarkFixture, work: Workload, tmp_path: Path) -> None:
    """KafkaSink._chunks: headers + BatchBuilder.append of every record, grouped as the sink does.

    No broker: the producer is replaced by a stand-in whose create_batch makes the same aiokafka
    BatchBuilder the producer would (max_batch_bytes, zstd record batches, not transactional).
    """
    settings = KafkaSettings()
    assert settings.compression == "zstd"
    install_zstd_level(settings.compression_level)  # what KafkaSink.start does

    class Producer:
        def create_batch(self) -> BatchBuilder:
            return BatchBuilder(settings.max_batch_bytes, DefaultRecordBatch.CODEC_ZSTD)

    sink = KafkaSink(settings, str(tmp_path))
    sink._producer = Producer()
    sink._partitions[settings.topic] = 6  # no metadata request
    batch = Batch(1)
    batch.add(work.segment)
    groups = asyncio.run(sink._group(batch, set()))
    assert len(groups) == 6

    def run() -> list[tuple[int, Any, int, int]]:
        return [chunk for items in groups.values() for chunk in sink._chunks(items)]

    chunks = benchmark(run)
    assert sum(end - start for _, _, start, end in chunks) == N
    assert all(b.record_count() == end - start for _, b, start, end in chunks)
    # read the first record batch back as a broker would (BatchBuilder._build is what the sender calls)
    _, builder, start, end = chunks[0]
    recs = next(iter(groups.values()))
    got = list(DefaultRecordBatch(bytes(builder._build())))
    assert [r.value for r in got] == recs.values[start:end]
    tids = [work.segment.trace_ids[i] for _, i in recs.origins(start, end)]
    assert [r.key for r in got] == [t.encode() for t in tids if t]
    assert [dict(r.headers)["trace_id"] for r in got] == [t.encode() for t in tids if t]
