"""One refused topic (missing, ACL denied) never holds back the others: its records go to the
dead-letter file, the batch is acknowledged, the topic is asked for again later; with the fake
producer of test_errors (tests/integration has the real broker)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agent.settings import KafkaSettings
from pipelines.errors import RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.sinks import kafka as kafka_sink
from tests.pipelines.sinks.kafka.test_errors import (
    PASSWORD,
    FakeBuilder,
    FakeProducer,
    dead_letters,
)

RECHECK = 30.0


class _MetadataClient:
    """fetch_all_metadata answers (the brokers are up) or fails (unreachable)."""

    def __init__(self, up: bool) -> None:
        self.up = up

    async def fetch_all_metadata(self) -> object:
        from aiokafka.errors import KafkaError

        if not self.up:
            raise KafkaError("Unable to get cluster metadata over all known brokers")
        return object()


class Topics:
    """What the fake broker knows: topics that exist, topics whose ACL denies writes (on
    metadata, or only on produce), and the lookups asked of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, exist: set[str], denied: set[str] = frozenset(),
                 produce_denied: set[str] = frozenset(), up: bool = True) -> None:
        self.exist, self.denied, self.produce_denied = set(exist), set(denied), set(produce_denied)
        self.lookups: list[str] = []
        topics = self

        async def partitions_for(self: FakeProducer, topic: str) -> set[int]:
            from aiokafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError

            topics.lookups.append(topic)
            if topic in topics.denied:
                raise TopicAuthorizationFailedError(topic)
            if topic not in topics.exist:
                raise UnknownTopicOrPartitionError()
            return {0, 1}

        async def send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                             partition: int) -> asyncio.Future[None]:
            from aiokafka.errors import TopicAuthorizationFailedError

            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if topic in topics.produce_denied:
                fut.set_exception(TopicAuthorizationFailedError(f"{topic} {PASSWORD}"))
            else:
                self.sent.append((topic, partition, builder.values))
                fut.set_result(None)
            return fut

        monkeypatch.setattr(FakeProducer, "partitions_for", partitions_for)
        monkeypatch.setattr(FakeProducer, "send_batch", send_batch)
        monkeypatch.setattr(FakeProducer, "client", _MetadataClient(up), raising=False)


def batch(seq: int, per_ns: dict[str, int]) -> Batch:
    """One segment per namespace, `n` records each; the topic is `logs-<namespace>`."""
    b = Batch(seq=seq)
    for ns, n in per_ns.items():
        seg = Segment(file_key=ns, path=f"/{ns}.log", meta={"kubernetes": {"namespace": ns}})
        for i in range(n):
            seg.records.append(b'{"ns":"%s","i":%d,"b":%d}' % (ns.encode(), i, seq))
            seg.offsets.append(i * 10)
            seg.trace_ids.append(None)
            seg.span_ids.append(None)
        b.add(seg)
    return b


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sink(tmp_path: Path, clock: Clock) -> kafka_sink.KafkaSink:
    s = dataclasses.replace(KafkaSettings(), request_timeout_ms=1000, linger_ms=0,
                            topic="logs-{kubernetes.namespace}", compression="none",
                            refused_topic_recheck_secs=RECHECK)
    k = kafka_sink.KafkaSink(s, str(tmp_path))
    k.refused.clock = clock
    k.refused.log.throttle.clock = clock
    return k


def sent(producer: FakeProducer, topic: str) -> list[bytes]:
    return [v for t, _, vals in producer.sent if t == topic for v in vals]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("refusal", ["missing", "denied"])
def test_a_refused_topic_is_dead_lettered_while_the_other_topics_flow(fake_producer, monkeypatch,
                                                                      tmp_path, caplog, refusal):
    """A missing topic (the broker answers but does not create it) or one whose ACL denies
    writes: its records, and only those, go to the dead-letter file with the reason and a detail
    naming brokers and topic; the batch is acknowledged without a retry; the other topic gets
    every record. Later batches dead-letter it without asking the broker again, and the warning
    names the topic once for all of them."""
    topics = Topics(monkeypatch, exist={"logs-a"}, denied={"logs-b"} if refusal == "denied" else set())
    fake_producer.modes = ["ok"]
    clock = Clock()

    async def go() -> None:
        k = sink(tmp_path, clock)
        await k.start()
        for seq in range(1, 4):
            await k.send(batch(seq, {"a": 3, "b": 2}))  # returns: acknowledged
            clock.now += 1
        assert k.healthy()
        await k.close(1)

    with caplog.at_level("WARNING", logger="tailship"):
        asyncio.run(go())
    [producer] = fake_producer.instances
    assert len(sent(producer, "logs-a")) == 9 and sent(producer, "logs-b") == []
    dead = dead_letters(tmp_path)
    assert sorted((d["file"], d["offset"]) for d in dead) == sorted(
        [("/b.log", 0), ("/b.log", 10)] * 3)
    reason = "missing_destination" if refusal == "missing" else "not_authorized"
    assert {d["reason"] for d in dead} == {reason}
    for d in dead:
        assert "127.0.0.1:9092" in d["detail"] and "'logs-b'" in d["detail"], d["detail"]
    assert topics.lookups.count("logs-b") == 1  # remembered, not asked per batch
    warnings = [r.getMessage() for r in caplog.records if "logs-b" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "2 record(s)" in warnings[0] and "deadletter" in warnings[0]


@pytest.mark.timeout(30)
def test_a_topic_created_later_receives_new_records_after_the_recheck(fake_producer, monkeypatch,
                                                                       tmp_path, caplog):
    """While the refusal holds, the topic's records are dead-lettered; once
    refused_topic_recheck_secs went by the topic is asked for again, and after it was created
    new records go to it (no restart: one producer)."""
    topics = Topics(monkeypatch, exist={"logs-a"})
    fake_producer.modes = ["ok"]
    clock = Clock()

    async def go() -> None:
        k = sink(tmp_path, clock)
        await k.start()
        await k.send(batch(1, {"a": 1, "b": 2}))
        topics.exist.add("logs-b")  # the operator creates the topic
        clock.now += RECHECK - 1
        await k.send(batch(2, {"b": 2}))  # still remembered as missing
        clock.now += 1
        await k.send(batch(3, {"b": 2}))  # asked again: there now
        await k.close(1)

    with caplog.at_level("WARNING", logger="tailship"):
        asyncio.run(go())
    [producer] = fake_producer.instances
    assert sent(producer, "logs-b") == [b'{"ns":"b","i":0,"b":3}', b'{"ns":"b","i":1,"b":3}']
    assert len(dead_letters(tmp_path)) == 4
    assert topics.lookups.count("logs-b") == 2
    assert "'logs-b' is accepted again" in caplog.text


@pytest.mark.timeout(30)
def test_a_refused_topic_asked_again_and_still_missing_stays_refused(fake_producer, monkeypatch,
                                                                      tmp_path):
    """The recheck of a still missing topic waits briefly (not request_timeout_ms again: a
    broker that creates topics did so the first time) and refuses it for another interval."""
    Topics(monkeypatch, exist={"logs-a"})
    fake_producer.modes = ["ok"]
    clock = Clock()
    hung: list[str] = []

    async def go() -> None:
        k = sink(tmp_path, clock)
        await k.start()
        await k.send(batch(1, {"b": 1}))
        clock.now += RECHECK

        b_asked = asyncio.Event()

        async def partitions_for(self: FakeProducer, topic: str) -> set[int]:
            hung.append(topic)
            if topic == "logs-a":  # returns only once logs-b is being asked for too
                await b_asked.wait()
                return {0, 1}
            b_asked.set()
            await asyncio.Event().wait()  # aiokafka polls metadata until request_timeout_ms
            return set()

        monkeypatch.setattr(FakeProducer, "partitions_for", partitions_for)
        await k.send(batch(2, {"a": 1, "b": 1}))
        assert k.refused.get("logs-b") is not None
        await k.close(1)

    asyncio.run(go())
    assert sorted(hung) == ["logs-a", "logs-b"]  # both asked at once: neither waits for the other
    assert [d["reason"] for d in dead_letters(tmp_path)] == ["missing_destination"] * 2
    [producer] = fake_producer.instances
    assert sent(producer, "logs-a") == [b'{"ns":"a","i":0,"b":2}']


@pytest.mark.timeout(30)
def test_a_missing_topic_while_the_brokers_are_unreachable_is_retried_not_dead_lettered(
        fake_producer, monkeypatch, tmp_path):
    """No metadata because no broker answers is not a missing topic: retried, nothing dead-lettered."""
    Topics(monkeypatch, exist=set(), up=False)
    fake_producer.modes = ["ok"]

    async def go() -> Exception:
        k = sink(tmp_path, Clock())
        await k.start()
        with pytest.raises(RetriableSinkError) as info:
            await k.send(batch(1, {"a": 1}))
        await k.close(1)
        return info.value

    err = asyncio.run(go())
    assert str(err) == "sink kafka: no metadata for topic 'logs-a': Kafka at 127.0.0.1:9092 unreachable"
    assert dead_letters(tmp_path) == []


@pytest.mark.timeout(30)
def test_a_topic_denied_on_produce_is_refused_for_the_following_batches(fake_producer, monkeypatch,
                                                                         tmp_path, secrets):
    """The ACL allows describing the topic but not writing (the produce request fails): those
    record batches are dead-lettered (not_authorized, secret masked), the topic is not sent to
    again until the recheck, the other topic flows; after the recheck a granted ACL heals it."""
    topics = Topics(monkeypatch, exist={"logs-a", "logs-b"}, produce_denied={"logs-b"})
    fake_producer.modes = ["ok"]
    clock = Clock()
    attempts: list[str] = []
    original = FakeProducer.send_batch

    async def counting(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                       partition: int) -> Any:
        attempts.append(topic)
        return await original(self, builder, topic, partition=partition)

    monkeypatch.setattr(FakeProducer, "send_batch", counting)

    async def go() -> None:
        k = sink(tmp_path, clock)
        (tmp_path / "pw").write_text(PASSWORD)
        from pipelines.secrets import add_secret

        add_secret(PASSWORD)
        await k.start()
        await k.send(batch(1, {"a": 2, "b": 2}))
        before = attempts.count("logs-b")
        await k.send(batch(2, {"a": 2, "b": 2}))
        assert attempts.count("logs-b") == before  # refused: not sent to again
        topics.produce_denied.clear()  # the ACL is granted
        clock.now += RECHECK
        await k.send(batch(3, {"b": 2}))
        await k.close(1)

    asyncio.run(go())
    [producer] = fake_producer.instances
    assert len(sent(producer, "logs-a")) == 4
    assert [v for v in sent(producer, "logs-b")] == [b'{"ns":"b","i":0,"b":3}', b'{"ns":"b","i":1,"b":3}']
    dead = dead_letters(tmp_path)
    assert len(dead) == 4 and {d["reason"] for d in dead} == {"not_authorized"}
    assert all("'logs-b'" in d["detail"] and PASSWORD not in d["detail"] for d in dead)
    assert topics.lookups.count("logs-b") == 1
