"""The pause after failed aiokafka metadata updates (pipelines/sinks/kafka/damping.py)."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.sinks.kafka.aiokafka_internals import damp_metadata_retries
from pipelines.sinks.kafka.damping import Damper

pytestmark = pytest.mark.timeout(10)


def test_failed_updates_pause_exponentially_and_a_success_resets():
    slept: list[float] = []

    async def sleep(secs: float) -> None:
        slept.append(secs)

    outcomes = iter([False] * 6 + [True] + [False])
    calls: list[tuple[str, list[str]]] = []

    async def update(cluster: str, topics: list[str]) -> bool:
        calls.append((cluster, topics))
        return next(outcomes)

    d = Damper(initial=0.1, cap=1.0, jitter=0.0, sleep=sleep)
    damped = d.wrap(update)

    async def run() -> list[bool]:
        return [await damped("md", ["t"]) for _ in range(8)]

    assert asyncio.run(run()) == [False] * 6 + [True, False]
    assert calls == [("md", ["t"])] * 8  # every call reaches the real update, with its arguments
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.1])  # no pause after the success
    assert d.failures == 1


def test_jitter_stays_within_its_bounds():
    slept: list[float] = []

    async def sleep(secs: float) -> None:
        slept.append(secs)

    async def fail(cluster: object, topics: object) -> bool:
        return False

    damped = Damper(initial=0.5, cap=0.5, jitter=0.2, sleep=sleep).wrap(fail)

    async def run() -> None:
        for _ in range(200):
            await damped(None, None)

    asyncio.run(run())
    assert all(0.4 <= s <= 0.6 for s in slept) and len(set(slept)) > 1


def test_installed_on_the_producers_client():
    from aiokafka import AIOKafkaProducer

    async def build() -> None:
        p = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        original = p.client._metadata_update
        d = damp_metadata_retries(p, initial=0.05)
        assert d is not None and d.initial == 0.05
        assert p.client._metadata_update is not original
        await p.client.close()

    asyncio.run(build())
    assert damp_metadata_retries(object(), initial=0.1) is None  # nothing to wrap: left alone
