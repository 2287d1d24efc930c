"""Faults of a production-like broker (scripts/services kafka-strict: topics never auto-created,
SCRAM-SHA-512 with connections.max.reauth.ms): a topic missing for one namespace while the others
ship, created later and its dead letters replayed; the SCRAM password changed on the broker and
the agent's secret file updated. Each ends with every line delivered.

Locally the tests skip when the broker cannot start; under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from bench.kafka import create_topic
from tests.faults.harness import (
    RATE,
    TAILSHIP,
    AgentProcess,
    KafkaReceiver,
    Scenario,
    Writer,
    kubelet_container,
    poll,
)
from tests.services import scram_password, start

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

FAULT_SECS = 3  # a fault lasts at least while the containers write this many seconds of lines
# a refused topic is asked for again this often (default 30 s); each time, the sink waits up to 2 s
# for its metadata, holding that batch (every namespace's lines): 1 s here stalls the agent
RECHECK_SECS = 10
REAUTH_SECS = 5  # kafka-strict's connections.max.reauth.ms (TAILSHIP_KAFKA_STRICT_REAUTH_MS default)


@pytest.fixture(scope="module")
def strict() -> dict[str, str]:
    return start("kafka-strict")


def write_secret(path: Path, password: str) -> None:
    """As the kubelet updates a mounted secret: the new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(password + "\n")
    tmp.replace(path)


def test_topic_missing_for_one_namespace_then_created_and_dead_letters_replayed(strict, tmp_path):
    bootstrap = strict["TAILSHIP_KAFKA_STRICT_BOOTSTRAP"]
    run = uuid.uuid4().hex[:6]
    shop, pay, audit = f"shop-{run}", f"pay-{run}", f"audit-{run}"
    for ns in (shop, pay):
        asyncio.run(create_topic(bootstrap, f"logs-{ns}", 3))
    root = tmp_path / "log"
    agent = AgentProcess(tmp_path, root, type="kafka", **{
        "kafka.bootstrap_servers": [bootstrap], "kafka.topic": "logs-{kubernetes.namespace}",
        "kafka.refused_topic_recheck_secs": RECHECK_SECS})
    writer = Writer([kubelet_container(root, ns) for ns in (shop, pay, audit)], RATE // 2)
    in_audit = lambda seq: writer.file_of(seq) == 2  # noqa: E731
    receiver = KafkaReceiver(bootstrap, f"^logs-.*-{run}$")
    with Scenario(f"kafka topic missing for 1 of 3 namespaces, created, replayed ({writer.rate} "
                  "lines/s)", writer, receiver,
                  agent, affected=in_audit) as sc:
        sc.wait_flowing()
        with sc.fault():
            writer.wait_written(writer.written + FAULT_SECS * writer.rate)
            # the other namespaces ship all the while: every line of theirs written by now
            # arrives while the topic is still missing, and none of the missing topic's
            upto = writer.written
            poll(lambda: receiver.got.has_all(upto, only=lambda s: not in_audit(s)), 60,
                 "the other namespaces' lines while one topic is missing")
            assert not receiver.got.any(in_audit), "a line of the missing topic arrived"
            asyncio.run(create_topic(bootstrap, f"logs-{audit}", 3))
        # new lines of the namespace go to its topic once the agent asks again ...
        direct = writer.written
        receiver.got.wait_any(lambda s: s >= direct and in_audit(s), 60, "a line in the created topic")
        # ... and the operator replays what was dead-lettered meanwhile, with the agent running
        r = subprocess.run([*TAILSHIP, "deadletter", "replay", "--config", str(agent.cfg)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"tailship deadletter replay (exit {r.returncode}): {r.stdout}{r.stderr}"
        sc.note = f"replay: {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]}"
        figures = sc.finish()
    figures.check()


def test_scram_password_changed_on_the_broker_then_in_the_secret_file(strict, tmp_path):
    bootstrap = strict["TAILSHIP_KAFKA_STRICT_BOOTSTRAP"]
    user, topic = f"agent-{uuid.uuid4().hex[:8]}", f"fault-scram-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(bootstrap, topic, 3))
    scram_password(user, "password-one")
    secret = tmp_path / "kafka-password"
    write_secret(secret, "password-one")
    root = tmp_path / "log"
    agent = AgentProcess(tmp_path, root, type="kafka", **{
        "kafka.bootstrap_servers": [strict["TAILSHIP_KAFKA_STRICT_SCRAM_BOOTSTRAP"]],
        "kafka.topic": topic, "kafka.security_protocol": "SASL_PLAINTEXT",
        "kafka.sasl_mechanism": "SCRAM-SHA-512", "kafka.sasl_username": user,
        "kafka.sasl_password_file": str(secret)})
    writer = Writer([kubelet_container(root, ns) for ns in ("shop", "payments")], RATE)
    with Scenario(f"kafka SCRAM password rotated, broker then secret file ({RATE} lines/s)", writer,
                  KafkaReceiver(bootstrap, f"^{topic}$"), agent) as sc:
        sc.wait_flowing()
        with sc.fault():
            scram_password(user, "password-two")
            # the open connections must log in again within connections.max.reauth.ms (5 s) and
            # cannot; the secret is updated some seconds later (as a secret store syncs it)
            writer.wait_written(writer.written + (REAUTH_SECS + FAULT_SECS) * RATE)
            write_secret(secret, "password-two")
        figures = sc.finish(after_lines=FAULT_SECS * RATE, timeout=45)
    log = agent.stderr()
    assert "password-one" not in log and "password-two" not in log
    figures.check()
