"""Fixtures of the Kafka sink's unit tests: the fake producer (test_errors.py) and no secrets."""

from __future__ import annotations

import pytest

from tests.pipelines.sinks.kafka.test_errors import FakeProducer


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import aiokafka

    FakeProducer.modes = []
    FakeProducer.instances = []
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import logs

    monkeypatch.setattr(logs, "_SECRETS", set())
