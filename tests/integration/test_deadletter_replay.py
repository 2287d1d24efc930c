"""`tailship deadletter list|replay` against a real Kafka broker (scripts/services), through the
command line as an operator runs it.

The story of the README: a namespace's topic was missing, its records were dead-lettered with
reason missing_destination; the operator creates the topic and replays.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.kafka import create_topic
from pipelines import deadletter, layout
from pipelines.deadletter import DeadLetter, DeadLetterSettings, Reason, read_segment, segments
from tests.integration.test_kafka import consume, topic_name
from tests.services import start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka() -> dict[str, str]:
    return start("kafka")


def config(tmp_path: Path, bootstrap: str, data: Path) -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(f'data_dir = "{data}"\n[sink]\ntype = "kafka"\nretry_initial_ms = 50\n'
                    f'retry_max_ms = 500\n[sink.kafka]\nbootstrap_servers = ["{bootstrap}"]\n'
                    'topic = "{kubernetes.namespace}"\nfallback_topic = "fallback"\n')
    return conf


def dead_letter(state_dir: Path, namespace: str, start_seq: int, n: int,
                reason: Reason = Reason.MISSING_DESTINATION) -> None:
    """Entries as the Kafka sink writes them for a missing topic (several segments)."""
    dl = DeadLetter(layout.dead_letter_file(state_dir, "kafka"), "kafka", DeadLetterSettings(1 << 20, 16384))
    for i in range(start_seq, start_seq + n, 10):
        dl.write([(reason, f"topic {namespace!r} does not exist", "/var/log/containers/a.log", j,
                   orjson.dumps({"seq": j, "message": f"line {j}", "kubernetes": {"namespace": namespace},
                                 "trace_id": f"{j:032x}"}), namespace)
                  for j in range(i, min(i + 10, start_seq + n))])


def tailship(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def held(state_dir: Path) -> list[int]:
    active = layout.dead_letter_file(state_dir, "kafka")
    return [orjson.loads(obj["record"])["seq"] for p in segments(active) for _, obj in read_segment(p)
            if obj is not None]


def test_replay_delivers_each_dead_letter_once_and_empties_the_store(kafka, tmp_path: Path) -> None:
    """Dead letters of two namespaces, in the data directory and in a worker's: list counts
    them by reason and destination; once the topics exist, replay sends every record once,
    exits 0 and leaves the stores empty."""
    bootstrap = kafka["TAILSHIP_KAFKA_BOOTSTRAP"]
    data = tmp_path / "data"
    a, b = topic_name("dl-a"), topic_name("dl-b")
    dead_letter(data, a, 0, 300)
    dead_letter(data / "worker-1", b, 1000, 200)
    conf = config(tmp_path, bootstrap, data)
    listed = tailship("deadletter", "list", "--config", str(conf), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["store"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows[str(data / "deadletter")]["reasons"] == {"missing_destination": 300}
    assert rows[str(data / "worker-1" / "deadletter")]["destinations"] == {b: 200}
    asyncio.run(create_topic(bootstrap, a))
    asyncio.run(create_topic(bootstrap, b))
    r = tailship("deadletter", "replay", "--config", str(conf), "--sink", "kafka")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tailship deadletter replay: 500 selected, 500 accepted and removed, 0 dead-lettered again" \
        in r.stdout
    got_a = asyncio.run(consume(bootstrap, a, 300))
    got_b = asyncio.run(consume(bootstrap, b, 200))
    seqs = Counter(orjson.loads(m.value)["seq"] for m in got_a + got_b)
    assert set(seqs) == set(range(300)) | set(range(1000, 1200))
    assert max(seqs.values()) == 1  # each once
    assert {m.key for m in got_a[:1]} == {f"{orjson.loads(got_a[0].value)['seq']:032x}".encode()}
    assert held(data) == [] and held(data / "worker-1") == []
    again = tailship("deadletter", "list", "--config", str(conf))
    assert again.returncode == 0 and f"no dead letters under {data}" in again.stdout
    print(f"replay: 500 dead letters in 2 stores, {sum(seqs.values())} consumed, 0 duplicates, "
          "stores empty")


def test_records_refused_again_stay_in_the_store_and_exit_5(kafka, tmp_path: Path) -> None:
    """Records whose destination still cannot take them (an invalid topic name) are dead-lettered
    again with their reason and stay; the rest is delivered and removed; older entries than
    --since are not touched."""
    bootstrap = kafka["TAILSHIP_KAFKA_BOOTSTRAP"]
    data = tmp_path / "data"
    good = topic_name("dl-good")
    asyncio.run(create_topic(bootstrap, good))
    dead_letter(data, good, 0, 50)
    dead_letter(data, "bad topic!", 100, 20)
    old = layout.dead_letter_dir(data) / "kafka.00000000.ndjson"  # sealed before everything else
    old.write_bytes(orjson.dumps({"time": "2020-01-01T00:00:00.000Z", "sink": "kafka",
                                  "reason": "missing_destination", "detail": "", "file": "/x.log",
                                  "offset": 0, "record": orjson.dumps({"seq": 999}).decode()}) + b"\n")
    conf = config(tmp_path, bootstrap, data)
    r = tailship("deadletter", "replay", "--config", str(conf), "--since", "1h")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "70 selected, 50 accepted and removed, 20 dead-lettered again (invalid_destination: 20; " \
           "back in the store), 1 kept (older than --since)" in r.stdout
    assert sorted(held(data)) == [*range(100, 120), 999]
    reasons = Counter(obj["reason"] for p in segments(layout.dead_letter_file(data, "kafka"))
                      for _, obj in read_segment(p) if obj is not None)
    assert reasons == {"invalid_destination": 20, "missing_destination": 1}
    got = asyncio.run(consume(bootstrap, good, 50))
    assert sorted(orjson.loads(m.value)["seq"] for m in got) == list(range(50))


def test_replay_refuses_a_store_another_replay_holds(kafka, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dead_letter(data, "whatever", 0, 5)
    fd = os.open(layout.dead_letter_dir(data) / deadletter.LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a replay does
    try:
        conf = config(tmp_path, kafka["TAILSHIP_KAFKA_BOOTSTRAP"], data)
        r = tailship("deadletter", "replay", "--config", str(conf))
    finally:
        os.close(fd)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "is being replayed by another" in r.stderr and "nothing was replayed" in r.stderr
    assert sorted(held(data)) == list(range(5))
