"""Error paths of the Kafka sink that a real broker cannot produce on demand, with a fake producer.

These prove the sink's reaction to a stuck or failing producer, not that it talks Kafka: that is
tests/integration/test_kafka.py, against the real broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.settings import KafkaSettings
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.sinks import kafka as kafka_sink


class FakeBuilder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: Any) -> object:
        if len(self.values) >= 2:
            return None  # full: two records per record batch, so a batch has several chunks
        self.values.append(value)
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    """`mode` of each new instance is taken from `FakeProducer.modes`: "stuck" futures never
    resolve, "fail" futures fail retriably, "ok" futures resolve."""

    modes: list[str] = []
    instances: list[FakeProducer] = []

    def __init__(self, **opts: Any) -> None:
        self.mode = FakeProducer.modes.pop(0)
        self.sent: list[tuple[str, int, list[bytes]]] = []
        self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        if self.mode == "down":
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, 0)]")

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        from aiokafka.errors import NotEnoughReplicasError

        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.mode == "ok":
            self.sent.append((topic, partition, builder.values))
            fut.set_result(None)
        elif self.mode == "fail":
            fut.set_exception(NotEnoughReplicasError())
        return fut


def make_batch(n: int) -> Batch:
    seg = Segment(file_key="k", path="/x.log", meta={})
    for i in range(n):
        seg.records.append(b'{"message":"m%d"}' % i)
        seg.offsets.append(i * 10)
        seg.trace_ids.append(None)
        seg.span_ids.append(None)
    batch = Batch(seq=1)
    batch.add(seg)
    return batch


def sink(tmp_path: Path) -> kafka_sink.KafkaSink:
    s = dataclasses.replace(KafkaSettings(), request_timeout_ms=1000, linger_ms=0, topic="t",
                            compression="none")
    return kafka_sink.KafkaSink(s, str(tmp_path))


@pytest.mark.timeout(30)
def test_stuck_producer_is_replaced_and_the_batch_delivered_once(fake_producer, tmp_path):
    """Futures that never resolve (aiokafka after some broker restarts): after the deadline the
    delivery fails retriably, the producer is replaced, and the retry delivers every record."""
    fake_producer.modes = ["stuck", "ok"]

    async def go() -> None:
        k = sink(tmp_path)
        await k.start()
        batch = make_batch(7)
        with pytest.raises(RetriableSinkError, match="no acknowledgement within 3s; producer restarted"):
            await k.send(batch)
        assert not k.healthy()
        await k.send(batch)
        assert k.healthy()
        await k.close(1)

    asyncio.run(go())
    stuck, fresh = fake_producer.instances
    assert stuck.stopped
    sent = sorted(v for _, _, vals in fresh.sent for v in vals)
    assert sent == sorted(b'{"message":"m%d"}' % i for i in range(7))


@pytest.mark.timeout(30)
def test_repeated_failures_restart_the_producer_and_unreachable_restart_is_retried(fake_producer, tmp_path):
    """Five retriable failures in a row replace the producer; if the brokers are unreachable then,
    the failure stays retriable and the next attempt connects again."""
    fake_producer.modes = ["fail", "down", "ok"]

    async def go() -> list[str]:
        k = sink(tmp_path)
        await k.start()
        batch = make_batch(3)
        errors = []
        for _ in range(5):
            with pytest.raises(RetriableSinkError) as info:
                await k.send(batch)
            errors.append(str(info.value))
        await k.send(batch)
        await k.close(1)
        with pytest.raises(FatalSinkError, match="send after close"):
            await k.send(batch)
        return errors

    errors = asyncio.run(go())
    assert all("NotEnoughReplicasError" in e for e in errors[:4])
    assert "cannot connect to Kafka at 127.0.0.1:9092" in errors[4]
    failing, down, ok = fake_producer.instances
    assert failing.stopped and not failing.sent and not down.sent
    assert sorted(v for _, _, vals in ok.sent for v in vals) == [b'{"message":"m%d"}' % i for i in range(3)]


@pytest.mark.timeout(30)
def test_unreachable_at_start_is_fatal_and_names_the_brokers(fake_producer, tmp_path):
    fake_producer.modes = ["down"]

    async def go() -> None:
        with pytest.raises(FatalSinkError, match=r"cannot connect to Kafka at 127.0.0.1:9092: "
                                                 r"KafkaConnectionError"):
            await sink(tmp_path).start()

    asyncio.run(go())


class _Client:
    async def _metadata_update(self, cluster: object, topics: object) -> bool:
        return False


class _Accumulator:
    _batch_ttl = 1.0


@pytest.mark.timeout(30)
def test_unreachable_brokers_are_waited_for_without_a_restart(fake_producer, monkeypatch, tmp_path, caplog):
    """Past the deadline while no broker answers (the last metadata update failed), the sink
    keeps waiting for the producer's own batches instead of restarting it and re-sending
    (which would store copies); once the batch is acknowledged, every record is there once."""
    pending: list[asyncio.Future[None]] = []

    async def held_send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                              partition: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, builder.values))
        pending.append(fut)
        return fut

    monkeypatch.setattr(FakeProducer, "send_batch", held_send_batch)
    monkeypatch.setattr(FakeProducer, "client", _Client(), raising=False)
    acc = _Accumulator()
    monkeypatch.setattr(FakeProducer, "_message_accumulator", acc, raising=False)
    fake_producer.modes = ["ok"]

    async def go() -> None:
        k = sink(tmp_path)
        await k.start()
        assert k._damper is not None and acc._batch_ttl == float("inf")  # batches never expire
        k._damper.failures = 1  # as after a failed metadata update: the broker is down
        send = asyncio.create_task(k.send(make_batch(5)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while "unreachable" not in caplog.text:  # one deadline (3 s) went by
            assert loop.time() < deadline and not send.done()
            await asyncio.sleep(0.05)
        assert len(fake_producer.instances) == 1 and not send.done()
        k._damper.failures = 0  # the broker is back: aiokafka delivers the same batches
        for fut in pending:
            fut.set_result(None)
        await asyncio.wait_for(send, 5)
        assert k.healthy()
        await k.close(1)

    with caplog.at_level("WARNING", logger="tailship.kafka"):
        asyncio.run(go())
    [producer] = fake_producer.instances
    assert sorted(v for _, _, vals in producer.sent for v in vals) == sorted(
        b'{"message":"m%d"}' % i for i in range(5))


@pytest.mark.timeout(30)
def test_a_retry_waits_for_chunks_still_in_the_producer_instead_of_sending_them_again(
        fake_producer, monkeypatch, tmp_path):
    """A delivery fails part-way (aiokafka's queue for a partition stays full past the timeout)
    while an earlier chunk is still pending in the producer: the retry waits for that chunk's
    future and sends only the rest, so no record is stored twice."""
    from aiokafka.errors import KafkaTimeoutError

    held: list[asyncio.Future[None]] = []
    calls = 0

    async def send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KafkaTimeoutError()  # the partition's queue did not drain in time
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, builder.values))
        if calls == 1:
            held.append(fut)  # in flight while the broker is away
        else:
            fut.set_result(None)
        return fut

    monkeypatch.setattr(FakeProducer, "send_batch", send_batch)
    fake_producer.modes = ["ok"]

    async def go() -> None:
        k = sink(tmp_path)
        await k.start()
        batch = make_batch(6)  # three chunks of two records
        with pytest.raises(RetriableSinkError, match="KafkaTimeoutError"):
            await k.send(batch)
        assert len(held) == 1 and not held[0].done()
        retry = asyncio.create_task(k.send(batch))
        await asyncio.sleep(0)
        held[0].set_result(None)  # the first chunk is acknowledged after all
        await asyncio.wait_for(retry, 5)
        await k.close(1)

    asyncio.run(go())
    [producer] = fake_producer.instances
    values = [v for _, _, vals in producer.sent for v in vals]
    assert sorted(values) == sorted(b'{"message":"m%d"}' % i for i in range(6))  # each once


@pytest.mark.timeout(30)
def test_a_record_batch_rejected_for_its_content_is_dead_lettered_with_its_own_records(
        fake_producer, monkeypatch, tmp_path):
    """The broker rejects one record batch as too large: exactly its records (here the last of
    one file and the first of the next) go to the dead-letter file with their files and offsets;
    the delivery succeeds and the other batches were sent."""
    from aiokafka.errors import MessageSizeTooLargeError

    calls = 0

    async def send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        nonlocal calls
        calls += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if calls == 2:
            fut.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, partition, builder.values))
            fut.set_result(None)
        return fut

    monkeypatch.setattr(FakeProducer, "send_batch", send_batch)
    fake_producer.modes = ["ok"]
    batch = make_batch(3)
    second = make_batch(3).segments[0]
    second.path = "/y.log"
    second.records = [b'{"message":"n%d"}' % i for i in range(3)]
    batch.add(second)

    async def go() -> None:
        k = sink(tmp_path)
        await k.start()
        await k.send(batch)  # chunks of two: m0 m1 | m2 n0 (rejected) | n1 n2
        await k.close(1)

    asyncio.run(go())
    [producer] = fake_producer.instances
    assert [v for _, _, vals in producer.sent for v in vals] == [
        b'{"message":"m0"}', b'{"message":"m1"}', b'{"message":"n1"}', b'{"message":"n2"}']
    dead = [orjson.loads(x) for x in (tmp_path / "deadletter" / "kafka.ndjson").read_bytes().splitlines()]
    assert [(d["file"], d["offset"], d["record"]) for d in dead] == [
        ("/x.log", 20, '{"message":"m2"}'), ("/y.log", 0, '{"message":"n0"}')]
    assert all(d["reason"] == "too_large" and d["detail"].startswith("MessageSizeTooLargeError")
               for d in dead)


# --- One test per row of the error table (pipelines/sinks/kafka/errors.py). The expected
# behaviour is written out here, not read from the table, so a wrong row fails a test.

PASSWORD = "pw-s3cr3t-0451"


def sasl_sink(tmp_path: Path) -> kafka_sink.KafkaSink:
    """A sink with a SASL password from a file (registered as a secret when the sink starts)."""
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    s = dataclasses.replace(KafkaSettings(), request_timeout_ms=1000, linger_ms=0, topic="t",
                            compression="none", security_protocol="SASL_PLAINTEXT",
                            sasl_username="tailship", sasl_password_file=str(tmp_path / "pw"))
    return kafka_sink.KafkaSink(s, str(tmp_path))


def failing_futures(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> dict[str, bool]:
    """Every record batch's future fails with `exc` until `state["ok"]` is set."""
    state = {"ok": False}

    async def send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if state["ok"]:
            self.sent.append((topic, partition, builder.values))
            fut.set_result(None)
        else:
            fut.set_exception(exc)
        return fut

    monkeypatch.setattr(FakeProducer, "send_batch", send_batch)
    return state


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / "kafka.ndjson"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def assert_names_sink_topic_cause(text: str, cls: type[Exception]) -> None:
    assert "127.0.0.1:9092" in text and "topic 't'" in text and cls.__name__ in text, text
    assert PASSWORD not in text and "***" in text, text  # the cause carried it: masked


def _errors(*names: str) -> list[type[Exception]]:
    import aiokafka.errors

    return [getattr(aiokafka.errors, n) for n in names]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls", _errors(
    "MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidTopicError",
    "CorruptRecordException", "RecordTooLargeError", "TopicAuthorizationFailedError"),
    ids=lambda c: c.__name__)
def test_record_batch_rejected_for_its_content_or_topic_acl_is_dead_lettered(
        fake_producer, monkeypatch, tmp_path, secrets, cls):
    """The delivery succeeds without a retry; every record is in the dead-letter file, the reason
    naming the error, the brokers and the topic, with the secret masked."""
    failing_futures(monkeypatch, cls(f"broker detail {PASSWORD}"))
    fake_producer.modes = ["ok"]

    async def go() -> None:
        k = sasl_sink(tmp_path)
        await k.start()
        await k.send(make_batch(3))
        assert k.healthy()
        await k.close(1)

    asyncio.run(go())
    dead = dead_letters(tmp_path)
    assert [(d["file"], d["offset"]) for d in dead] == [("/x.log", 0), ("/x.log", 10), ("/x.log", 20)]
    expected = {"InvalidTopicError": "invalid_destination", "CorruptRecordException": "rejected",
                "TopicAuthorizationFailedError": "not_authorized"}.get(cls.__name__, "too_large")
    for d in dead:
        assert d["reason"] == expected
        assert d["detail"].startswith(cls.__name__)
        assert_names_sink_topic_cause(d["detail"], cls)
    assert not fake_producer.instances[0].sent


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls", _errors(
    "SaslAuthenticationFailed", "AuthenticationFailedError", "UnsupportedSaslMechanismError",
    "IllegalSaslStateError", "ClusterAuthorizationFailedError"),
    ids=lambda c: c.__name__)
def test_refused_credentials_or_rights_are_fatal(fake_producer, monkeypatch, tmp_path, secrets, cls):
    failing_futures(monkeypatch, cls(f"broker detail {PASSWORD}"))
    fake_producer.modes = ["ok"]

    async def go() -> str:
        k = sasl_sink(tmp_path)
        await k.start()
        with pytest.raises(FatalSinkError) as info:
            await k.send(make_batch(3))
        await k.close(1)
        return str(info.value)

    message = asyncio.run(go())
    assert message.startswith("sink kafka: Kafka at 127.0.0.1:9092 refused"), message
    assert_names_sink_topic_cause(message, cls)
    assert dead_letters(tmp_path) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cls", _errors(
    "KafkaConnectionError", "KafkaTimeoutError", "NotLeaderForPartitionError", "RequestTimedOutError",
    "NotEnoughReplicasError", "LeaderNotAvailableError", "UnknownTopicOrPartitionError",
    "NodeNotReadyError", "OutOfOrderSequenceNumber", "UnknownError"), ids=lambda c: c.__name__)
def test_other_kafka_errors_are_retried_and_the_retry_delivers(fake_producer, monkeypatch, tmp_path,
                                                               secrets, cls):
    """A retriable failure (UnknownError included: aiokafka's class for codes it does not know,
    such as 87 INVALID_RECORD); nothing dead-lettered; the retry delivers every record."""
    state = failing_futures(monkeypatch, cls(f"broker detail {PASSWORD}"))
    fake_producer.modes = ["ok"]
    batch = make_batch(3)

    async def go() -> str:
        k = sasl_sink(tmp_path)
        await k.start()
        with pytest.raises(RetriableSinkError) as info:
            await k.send(batch)
        assert not k.healthy()
        state["ok"] = True
        await k.send(batch)
        assert k.healthy()
        await k.close(1)
        return str(info.value)

    message = asyncio.run(go())
    assert message.startswith("sink kafka: Kafka at 127.0.0.1:9092 (topic 't'"), message
    assert_names_sink_topic_cause(message, cls)
    assert dead_letters(tmp_path) == []
    [producer] = fake_producer.instances
    assert sorted(v for _, _, vals in producer.sent for v in vals) == [
        b'{"message":"m%d"}' % i for i in range(3)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name,fatal", [("MessageSizeTooLargeError", False),
                                        ("TopicAuthorizationFailedError", False),
                                        ("ClusterAuthorizationFailedError", True)])
def test_an_error_raised_by_send_batch_is_not_about_records_already_known(
        fake_producer, monkeypatch, tmp_path, secrets, name, fatal):
    """Raised by send_batch itself rather than by a record batch's future: a content or topic
    authorization error is retried (no record batch to dead-letter; test_refused_topics has what
    the retry does with the refused topic), a cluster authorization error is fatal."""
    [cls] = _errors(name)

    async def send_batch(self: FakeProducer, builder: FakeBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        raise cls(f"broker detail {PASSWORD}")

    monkeypatch.setattr(FakeProducer, "send_batch", send_batch)
    fake_producer.modes = ["ok"]

    async def go() -> Exception:
        k = sasl_sink(tmp_path)
        await k.start()
        with pytest.raises((FatalSinkError, RetriableSinkError)) as info:
            await k.send(make_batch(3))
        await k.close(1)
        return info.value

    err = asyncio.run(go())
    assert isinstance(err, FatalSinkError if fatal else RetriableSinkError), err
    assert_names_sink_topic_cause(str(err), cls)
    assert dead_letters(tmp_path) == []


@pytest.mark.timeout(30)
def test_refused_credentials_at_start_are_fatal_without_the_password(fake_producer, monkeypatch,
                                                                     tmp_path, secrets):
    from aiokafka.errors import SaslAuthenticationFailed

    async def start(self: FakeProducer) -> None:
        raise SaslAuthenticationFailed(f"Authentication failed: bad password {PASSWORD}")

    monkeypatch.setattr(FakeProducer, "start", start)
    fake_producer.modes = ["ok"]

    async def go() -> str:
        with pytest.raises(FatalSinkError) as info:
            await sasl_sink(tmp_path).start()
        return str(info.value)

    message = asyncio.run(go())
    assert message == ("sink kafka: cannot connect to Kafka at 127.0.0.1:9092: [Error 58] "
                       "SaslAuthenticationFailed: Authentication failed: bad password ***")


@pytest.mark.timeout(30)
def test_refused_credentials_reconnect_with_the_password_file_read_again(fake_producer, monkeypatch,
                                                                         tmp_path, secrets):
    """SASL refused at start and again mid-run (FatalSinkError each time: `tail --once` stops, the
    daemon tries again): every new attempt connects with a new producer and the password file
    read again, so a rotated secret heals without a restart; the delivery then succeeds."""
    from aiokafka.errors import SaslAuthenticationFailed

    passwords: list[str] = []
    state = failing_futures(monkeypatch, SaslAuthenticationFailed("Authentication failed"))

    async def start(self: FakeProducer) -> None:
        passwords.append(self.password)
        if self.password != "rotated":
            raise SaslAuthenticationFailed("Authentication failed during authentication")

    original_init = FakeProducer.__init__

    def init(self: FakeProducer, **opts: Any) -> None:
        original_init(self, **opts)
        self.password = opts["sasl_plain_password"]

    monkeypatch.setattr(FakeProducer, "__init__", init)
    monkeypatch.setattr(FakeProducer, "start", start)
    fake_producer.modes = ["ok"] * 4

    async def go() -> list[str]:
        k = sasl_sink(tmp_path)
        errors = []
        with pytest.raises(FatalSinkError) as info:
            await k.start()
        errors.append(str(info.value))
        (tmp_path / "pw").write_text("rotated\n")  # the operator rotates the secret
        await k.start()
        with pytest.raises(FatalSinkError) as info:  # the broker changes it again: refused mid-run
            await k.send(make_batch(3))
        errors.append(str(info.value))
        assert k._producer is None  # dropped: the next attempt connects anew
        state["ok"] = True
        await k.send(make_batch(3))
        await k.close(1)
        return errors

    errors = asyncio.run(go())
    assert passwords == [PASSWORD, "rotated", "rotated"]
    assert errors[0].startswith("sink kafka: cannot connect to Kafka at 127.0.0.1:9092: [Error 58] "
                                "SaslAuthenticationFailed"), errors[0]
    assert errors[1].startswith("sink kafka: Kafka at 127.0.0.1:9092 refused"), errors[1]
    assert PASSWORD not in "".join(errors)
    assert sorted(v for p in fake_producer.instances for _, _, vals in p.sent for v in vals) == [
        b'{"message":"m%d"}' % i for i in range(3)]
