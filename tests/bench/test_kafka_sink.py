"""Smoke test of the Kafka sink benchmark (`python -m bench.kafka_sink`) against a real broker.

It checks what the instrument must get right — every variant's topic holds every record sent
(else a figure per record means nothing), and each variant has its row — and nothing about speed.
"""

from __future__ import annotations

import pytest

from bench import kafka_sink
from tests.services import start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]


def test_every_variant_delivers_every_record_and_has_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    kafka = start("kafka")["TAILSHIP_KAFKA_BOOTSTRAP"]
    assert kafka_sink.main(["--bootstrap", kafka, "--records", "3000", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("median of 1"):].splitlines()[2:]
    assert sorted(line.split()[0] if " x" not in line else " ".join(line.split()[:2])
                  for line in table if line.strip()) == sorted(kafka_sink.VARIANTS)


def test_a_topic_missing_records_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose topic does not hold what was sent raises instead of giving a figure."""
    kafka = start("kafka")["TAILSHIP_KAFKA_BOOTSTRAP"]

    async def fewer(bootstrap: str, topic: str, partitions: int) -> int:
        return 0

    monkeypatch.setattr(kafka_sink, "stored", fewer)
    with pytest.raises(RuntimeError, match="holds 0 records"):
        kafka_sink.main(["--bootstrap", kafka, "--records", "500", "--rounds", "1",
                         "--variants", "none"])
