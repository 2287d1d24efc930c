"""The Kafka sink's uses of aiokafka internals (pipelines/sinks/kafka/aiokafka_internals.py).

The first two tests are the upgrade guard: they fail when the installed aiokafka is not the
version the module was written for, or when an internal it relies on is gone or changed shape.
The rest prove the uses take effect on this aiokafka and that the public paths work without them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import aiokafka
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record import default_records as py_records
from aiokafka.record._crecords import default_records as c_records
from aiokafka.record.default_records import DefaultRecordBatch

from agent.settings import KafkaSettings
from pipelines.sinks.kafka import Records, _fill
from pipelines.sinks.kafka import aiokafka_internals as internals
from pipelines.sinks.kafka.codec import make_encoder

pytestmark = pytest.mark.timeout(20)

ZSTD = DefaultRecordBatch.CODEC_ZSTD


def test_installed_aiokafka_is_the_version_the_internals_were_written_for():
    assert aiokafka.__version__ == internals.WRITTEN_FOR, (
        f"aiokafka {aiokafka.__version__} is installed; pipelines/sinks/kafka/aiokafka_internals.py "
        f"was written for {internals.WRITTEN_FOR}. Check each internal in its table against the "
        f"new aiokafka, then change WRITTEN_FOR.")


def test_every_internal_the_sink_relies_on_is_there():
    async def check() -> tuple[list[str], bool, bool]:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=True)
        try:
            gone = internals.missing(p)
            damped = internals.damp_metadata_retries(p, initial=0.1) is not None
            kept = internals.keep_batches(p) and p._message_accumulator._batch_ttl == float("inf")
        finally:
            await p.client.close()
        return gone, damped, kept

    gone, damped, kept = asyncio.run(check())
    assert gone == [], ("aiokafka internals the Kafka sink relies on are missing or changed "
                        f"(see pipelines/sinks/kafka/aiokafka_internals.py): {gone}")
    assert damped and kept


def test_missing_names_each_internal_that_is_gone(monkeypatch):
    """The guard can fail: each internal taken away is reported."""
    monkeypatch.delattr(c_records, "zstd_encode")
    assert any("zstd_encode" in m for m in internals.missing())
    monkeypatch.undo()

    class OtherBuilder:
        pass

    monkeypatch.setattr(py_records, "DefaultRecordBatchBuilder", OtherBuilder)
    assert any("BatchBuilder._builder" in m for m in internals.missing())
    monkeypatch.undo()

    def sync_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
        return True

    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", sync_update)
    assert any("_metadata_update" in m for m in internals.missing())
    monkeypatch.undo()

    monkeypatch.delattr(AIOKafkaClient, "fetch_all_metadata")
    assert any("fetch_all_metadata" in m for m in internals.missing())
    monkeypatch.undo()

    class Producer:
        client = None
        _message_accumulator = None

    assert len(internals.missing(Producer())) == 2  # no client update, no accumulator ttl
    assert internals.missing() == []


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka's encoders restored and warnings re-armed after the test."""
    monkeypatch.setattr(py_records, "zstd_encode", py_records.zstd_encode)
    monkeypatch.setattr(c_records, "zstd_encode", c_records.zstd_encode)
    monkeypatch.setattr(internals, "_zstd_level", None)
    monkeypatch.setattr(internals, "_warned", set())


def test_the_zstd_level_reaches_both_record_builders(fresh, monkeypatch):
    """After install_zstd_level, the C and the pure-Python record builders compress with the
    encoder made for that level (the module globals they call were replaced), and the batch
    decodes back."""
    calls: list[int] = []

    def counting(level: int) -> Any:
        encode = make_encoder(level)

        def zstd_encode(payload: Any, *args: Any) -> bytes:
            calls.append(level)
            return encode(payload)

        return zstd_encode

    monkeypatch.setattr(internals, "make_encoder", counting)
    assert internals.install_zstd_level(7)
    builders = [c_records.DefaultRecordBatchBuilder(2, ZSTD, 0, -1, -1, 0, 1 << 16),
                py_records._DefaultRecordBatchBuilderPy(2, ZSTD, 0, -1, -1, 0, 1 << 16)]
    for b in builders:
        b.append(0, None, b"k", b"v" * 500, [])
        [record] = list(DefaultRecordBatch(bytes(b.build())))
        assert (record.key, record.value) == (b"k", b"v" * 500)
    assert calls == [7, 7]


def records(n: int) -> Records:
    recs = Records()
    recs.keys = [b"%032x" % i if i % 3 else None for i in range(n)]
    recs.values = [b'{"message":"m%d"}' % i for i in range(n)]
    recs.paths = [("log.file.path", b"/x.log")] * n
    recs.trace_ids = [b"%032x" % i if i % 3 else None for i in range(n)]
    recs.span_ids = [b"%016x" % i if i % 2 else None for i in range(n)]
    return recs


def decoded(builder: BatchBuilder) -> list[tuple[Any, ...]]:
    return [(r.offset, r.key, r.value, list(r.headers))
            for r in DefaultRecordBatch(bytes(builder._build()))]


def test_on_another_aiokafka_version_the_public_paths_are_taken(fresh, monkeypatch, caplog):
    """With another version installed: one warning naming both versions, the zstd level is not
    applied, and records go through BatchBuilder.append, giving the same record batch contents
    and record count as the direct append."""
    recs = records(50)
    direct = BatchBuilder(1 << 20, ZSTD)
    assert internals.direct_append(direct) is not None
    assert _fill(direct, recs, 0) == 50 and direct.record_count() == 50

    other = internals.WRITTEN_FOR + ".post1"
    monkeypatch.setattr(aiokafka, "__version__", other)
    before = c_records.zstd_encode, py_records.zstd_encode
    with caplog.at_level(logging.WARNING, logger="tailship.kafka"):
        assert not internals.install_zstd_level(5)
        public = BatchBuilder(1 << 20, ZSTD)
        assert internals.direct_append(public) is None
        appended: list[bytes] = []
        original_append = BatchBuilder.append

        def spy(self: BatchBuilder, **kw: Any) -> Any:
            appended.append(kw["value"])
            return original_append(self, **kw)

        monkeypatch.setattr(BatchBuilder, "append", spy)
        assert _fill(public, recs, 0) == 50 and public.record_count() == 50
    assert (c_records.zstd_encode, py_records.zstd_encode) == before  # aiokafka's own, untouched
    assert appended == recs.values  # every record through the public method
    assert decoded(public) == decoded(direct)
    versions = [r.getMessage() for r in caplog.records if f"{other} is installed" in r.getMessage()]
    assert len(versions) == 1 and f"written for {internals.WRITTEN_FOR}" in versions[0]
    assert any("compression_level 5 not applied" in r.getMessage() for r in caplog.records)


def test_a_full_record_batch_stops_the_direct_append_with_the_right_count(fresh):
    """The direct append stops where the C builder is full, and the record count (which the
    idempotent producer's sequence numbers follow) is the number of records in the batch."""
    recs = records(400)
    b = BatchBuilder(4096, 0)
    n = _fill(b, recs, 0)
    assert 0 < n < 400 and b.record_count() == n
    assert [v for _, _, v, _ in decoded(b)] == recs.values[:n]


def test_the_sink_starts_with_the_level_installed(fresh, tmp_path: Path, monkeypatch):
    """KafkaSink.start installs the configured zstd level (through aiokafka_internals)."""
    from pipelines.sinks.kafka import KafkaSink

    class Producer:
        def __init__(self, **opts: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Producer)
    s = dataclasses.replace(KafkaSettings(), compression="zstd", compression_level=9)

    async def go() -> None:
        k = KafkaSink(s, str(tmp_path))
        await k.start()
        await k.close(1)

    asyncio.run(go())
    assert internals._zstd_level == 9
    assert c_records.zstd_encode is py_records.zstd_encode
    assert c_records.zstd_encode.__qualname__.startswith("make_encoder")
