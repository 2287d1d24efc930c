"""The kafka-strict broker of scripts/services, for real: topics are not auto-created, and SCRAM
passwords changed with `scripts/services scram-user` take effect on new and open connections
(connections.max.reauth.ms).

Locally the tests skip when the broker cannot start; under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from bench.kafka import create_topic
from tests.services import SERVICES, scram_password, start

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def strict() -> dict[str, str]:
    return start("kafka-strict")


def producer(env: dict[str, str], user: str, password: str):  # type: ignore[no-untyped-def]
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=env["TAILSHIP_KAFKA_STRICT_SCRAM_BOOTSTRAP"],
                            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                            sasl_plain_username=user, sasl_plain_password=password,
                            request_timeout_ms=5000, retry_backoff_ms=100)


async def topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_a_topic_is_not_created_by_producing_to_it(strict):
    async def go() -> None:
        from aiokafka import AIOKafkaProducer

        bootstrap = strict["TAILSHIP_KAFKA_STRICT_BOOTSTRAP"]
        missing, made = f"strict-{uuid.uuid4().hex[:8]}", f"strict-{uuid.uuid4().hex[:8]}"
        await create_topic(bootstrap, made, 1)
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await p.start()
        try:
            await asyncio.wait_for(p.send_and_wait(made, b"x"), 30)
            with pytest.raises(Exception):  # noqa: B017 - aiokafka waits for the topic, then gives up
                await asyncio.wait_for(p.send_and_wait(missing, b"x"), 5)
        finally:
            await p.stop()
        have = await topics(bootstrap)
        assert made in have and missing not in have

    asyncio.run(asyncio.wait_for(go(), 120))


def test_a_changed_scram_password_holds_for_new_and_open_connections(strict):
    user, old, new = f"u{uuid.uuid4().hex[:8]}", "first-password", "second-password"
    topic = f"scram-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(strict["TAILSHIP_KAFKA_STRICT_BOOTSTRAP"], topic, 1))
    scram_password(user, old)

    async def go() -> None:
        from aiokafka.errors import KafkaConnectionError

        opened = producer(strict, user, old)
        await opened.start()  # logged in with the old password, and stays connected
        try:
            await asyncio.wait_for(opened.send_and_wait(topic, b"before"), 30)
            await asyncio.to_thread(scram_password, user, new)
            with pytest.raises(KafkaConnectionError):
                await producer(strict, user, old).start()
            fresh = producer(strict, user, new)
            await fresh.start()
            await asyncio.wait_for(fresh.send_and_wait(topic, b"after"), 30)
            await fresh.stop()
            # the open connection must log in again within connections.max.reauth.ms, and
            # cannot with the old password: its sends stop getting through
            failed = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not failed and loop.time() < deadline:
                try:
                    await asyncio.wait_for(opened.send_and_wait(topic, b"still?"), 6)
                    await asyncio.sleep(0.5)
                except Exception:
                    failed = True
            assert failed, "a connection opened with the old password still produces after 60 s"
        finally:
            await opened.stop()

    asyncio.run(asyncio.wait_for(go(), 180))


def test_the_strict_broker_is_stopped_and_killed_like_the_others(strict):
    """kill -9 and start again: same ports, and the SCRAM users survive (they are in the
    metadata log, not re-created at start)."""
    user = f"u{uuid.uuid4().hex[:8]}"
    scram_password(user, "kept-password")
    r = subprocess.run([sys.executable, str(SERVICES), "kill", "kafka-strict"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert start("kafka-strict") == strict

    async def login() -> None:
        p = producer(strict, user, "kept-password")
        await p.start()
        await p.stop()

    asyncio.run(asyncio.wait_for(login(), 60))
