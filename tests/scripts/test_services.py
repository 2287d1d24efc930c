"""scripts/services itself, without Java: each checkout's own ports (picked once, kept, overridable)
and the test-run journal that lets scripts/test stop what a run started and nothing else.

The "brokers" here are sleeping Python processes whose command line looks like a broker of a
given state dir (`kafka.Kafka <state>/kafka/server.properties`), which is how scripts/services
recognises its processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

from tests.services import SERVICES

PORT_VARS = ("TAILSHIP_KAFKA_PORT", "TAILSHIP_KAFKA_CONTROLLER_PORT", "TAILSHIP_KAFKA_SSL_PORT",
             "TAILSHIP_KAFKA_SASL_PORT", "TAILSHIP_ES_PORT", "TAILSHIP_ES_TRANSPORT_PORT",
             "TAILSHIP_KUBE_API_PORT")


@pytest.fixture
def svc(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/services as a module, with no port variables set."""
    for var in (*PORT_VARS, "TAILSHIP_SERVICES_RUN"):
        monkeypatch.delenv(var, raising=False)
    loader = SourceFileLoader("tailship_scripts_services", str(SERVICES))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def run(*args: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PORT_VARS and k != "TAILSHIP_SERVICES_RUN"}
    return subprocess.run([sys.executable, str(SERVICES), *args], capture_output=True, text=True,
                          timeout=120, env={**clean, "TAILSHIP_SERVICES_STATE": str(state), **env})


def env_ports(state: Path, **env: str) -> dict[str, int]:
    r = run("env", state=state, **env)
    assert r.returncode == 0, r.stderr
    return {k: int(v) for k, v in re.findall(r"export (TAILSHIP_\w+)=\S*?:(\d+)\s*$", r.stdout, re.M)}


@pytest.fixture
def listening() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def listen_on(socks: list[socket.socket], port: int) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    socks.append(s)


def test_ports_are_picked_once_per_checkout_and_kept(tmp_path, listening):
    a, b = tmp_path / "checkout-a", tmp_path / "checkout-b"
    first = env_ports(a)
    assert set(first) == {"TAILSHIP_KAFKA_BOOTSTRAP", "TAILSHIP_KAFKA_SASL_BOOTSTRAP",
                          "TAILSHIP_KAFKA_SSL_BOOTSTRAP", "TAILSHIP_ES_URL", "TAILSHIP_KUBE_API_URL"}
    assert len(set(first.values())) == 5
    kept = json.loads((a / "ports.json").read_text())
    assert kept["kafka"]["plaintext"] == first["TAILSHIP_KAFKA_BOOTSTRAP"]
    assert kept["elasticsearch"]["http"] == first["TAILSHIP_ES_URL"]
    assert kept["kube-api"]["http"] == first["TAILSHIP_KUBE_API_URL"]
    all_a = [*kept["kafka"].values(), *kept["elasticsearch"].values(), *kept["kube-api"].values()]
    assert len(set(all_a)) == 7
    # checkout A's services run (their ports are taken): another checkout picks other ports,
    # and A keeps its own
    for port in all_a:
        listen_on(listening, port)
    env_ports(b)
    other = json.loads((b / "ports.json").read_text())
    assert not set(all_a) & {*other["kafka"].values(), *other["elasticsearch"].values(),
                             *other["kube-api"].values()}
    assert env_ports(a) == first


def test_environment_overrides_the_kept_ports(tmp_path):
    kept = env_ports(tmp_path)
    got = env_ports(tmp_path, TAILSHIP_KAFKA_PORT="30000", TAILSHIP_ES_PORT="31000",
                    TAILSHIP_KAFKA_SASL_PORT="30500", TAILSHIP_KUBE_API_PORT="32000")
    assert got == {"TAILSHIP_KAFKA_BOOTSTRAP": 30000, "TAILSHIP_KAFKA_SSL_BOOTSTRAP": 30002,
                   "TAILSHIP_KAFKA_SASL_BOOTSTRAP": 30500, "TAILSHIP_ES_URL": 31000,
                   "TAILSHIP_KUBE_API_URL": 32000}
    assert env_ports(tmp_path) == kept  # the override did not replace the kept ports


def test_start_picks_new_ports_when_a_kept_one_is_taken(svc, tmp_path, monkeypatch, listening):
    kafka = svc.Kafka(tmp_path)
    kept = kafka.configured()
    assert svc.ports_for_start(kafka) == kept  # all free: the kept ones
    listen_on(listening, kept["sasl"])  # another program took one meanwhile
    fresh = svc.ports_for_start(kafka)
    assert fresh["sasl"] != kept["sasl"]
    assert kafka.configured() == fresh  # and they are kept from now on
    # a port the environment names is never changed behind the user's back
    monkeypatch.setenv("TAILSHIP_KAFKA_SASL_PORT", str(kept["sasl"]))
    with pytest.raises(svc.ServiceError, match=f"sasl {kept['sasl']} .* already in use"):
        svc.ports_for_start(kafka)


def test_to_stop_is_what_the_run_started_less_what_ran_before(svc):
    lines = [{"running_before": ["kafka"], "state": "/a"},
             {"started": "kafka", "state": "/a"},            # a test restarted the user's broker
             {"started": "elasticsearch", "state": "/a"},
             {"started": "elasticsearch", "state": "/b"},
             {"started": "elasticsearch", "state": "/a"}]    # restarted by a test: once
    assert svc.to_stop(lines) == [("elasticsearch", "/a"), ("elasticsearch", "/b")]


class FakeBrokers:
    """Sleeping processes that scripts/services takes for the Kafka broker of a state dir: a JVM
    (argv[0] "java"; it is Python) running kafka.Kafka with the state dir's server.properties."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, state: Path, pidfile: bool = True, argv0: str = "java") -> subprocess.Popen[bytes]:
        (state / "kafka").mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen([argv0, "-c", "import time\nwhile True: time.sleep(1)", "kafka.Kafka",
                              str(state / "kafka" / "server.properties")], executable=sys.executable,
                             start_new_session=True)
        self.procs.append(p)
        if pidfile:
            (state / "kafka" / "pid").write_text(f"{p.pid}\n")
        return p

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=30)


@pytest.fixture
def brokers() -> Iterator[FakeBrokers]:
    b = FakeBrokers()
    yield b
    b.close()


def test_run_end_stops_what_the_run_started_and_nothing_else(svc, tmp_path, monkeypatch, brokers):
    journal = tmp_path / "run.journal"
    user, started, stray, other = (tmp_path / n for n in ("user", "started", "stray", "other"))
    by_user = brokers.start(user)  # running before the run: the user's
    r = run("run-begin", state=user, TAILSHIP_SERVICES_RUN=str(journal))
    assert r.returncode == 0, r.stderr
    # what starts during the run note in the journal (start does this before it launches)
    monkeypatch.setenv("TAILSHIP_SERVICES_RUN", str(journal))
    svc.note_start(svc.Kafka(user))          # a test stopped and started the user's broker
    ours = brokers.start(started)
    svc.note_start(svc.Kafka(started))
    interrupted = brokers.start(stray, pidfile=False)  # its start was cut off before the pid file
    svc.note_start(svc.Kafka(stray))
    svc.note_start(svc.Elasticsearch(tmp_path / "never-came-up"))
    by_hand = brokers.start(other)  # started by hand during the run (not through the journal)
    # no JVM, though its arguments name the stray's broker (say, a script or an editor)
    bystander = brokers.start(stray, pidfile=False, argv0="python3")

    r = run("run-end", state=user, TAILSHIP_SERVICES_RUN=str(journal))
    assert r.returncode == 0, r.stderr
    # run-end returns once they are gone (it waits for each to exit)
    assert ours.poll() is not None and interrupted.poll() is not None, r.stderr
    assert not (started / "kafka" / "pid").exists()
    assert by_user.poll() is None and by_hand.poll() is None and bystander.poll() is None, r.stderr
    assert svc.Kafka(user).running() == by_user.pid


def test_run_end_without_a_journal_entry_stops_nothing(svc, tmp_path, brokers):
    journal = tmp_path / "run.journal"
    user = brokers.start(tmp_path / "user")
    for cmd in ("run-begin", "run-end"):
        r = run(cmd, state=tmp_path / "user", TAILSHIP_SERVICES_RUN=str(journal))
        assert r.returncode == 0, r.stderr
    assert user.poll() is None


def test_kafka_strict_is_a_second_broker_with_its_own_ports_and_production_settings(svc, tmp_path):
    """kafka-strict: its own state dir and ports, no topic auto-creation, SCRAM-SHA-512 only with
    re-authentication, no SSL; the first broker keeps auto-creation and its mechanisms."""
    kafka, strict = svc.make("kafka", tmp_path), svc.make("kafka-strict", tmp_path)
    assert strict.dir == tmp_path / "kafka-strict" and strict.props != kafka.props
    kp, sp = kafka.configured(), strict.configured()
    assert set(sp) == {"plaintext", "controller", "sasl"}
    assert not set(kp.values()) & set(sp.values())
    props = dict(line.split("=", 1) for line in strict.properties(sp).splitlines()
                 if "=" in line and not line.startswith("#"))
    assert props["auto.create.topics.enable"] == "false"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert int(props["connections.max.reauth.ms"]) > 0
    assert "SSL://" not in props["listeners"] and f":{sp['sasl']}" in props["listeners"]
    first = dict(line.split("=", 1) for line in kafka.properties(kp).splitlines() if "=" in line)
    assert first["auto.create.topics.enable"] == "true"
    assert "connections.max.reauth.ms" not in first
    assert first["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"


def test_env_and_start_without_names_mean_the_first_two_all_means_every_one(tmp_path):
    assert "STRICT" not in run("env", state=tmp_path).stdout
    out = run("env", "all", state=tmp_path).stdout
    assert "TAILSHIP_KAFKA_STRICT_BOOTSTRAP=" in out and "TAILSHIP_KAFKA_STRICT_SCRAM_BOOTSTRAP=" in out
    r = run("env", "kafka-strict", state=tmp_path)
    assert r.returncode == 0 and "TAILSHIP_KAFKA_BOOTSTRAP=" not in r.stdout


def test_scram_user_rejects_what_the_config_file_cannot_carry(tmp_path):
    """Names and passwords go through a properties value: `,` `=` `[` `]` and line breaks are
    refused with the reason, before any broker is asked."""
    r = subprocess.run([sys.executable, str(SERVICES), "scram-user", "kafka-strict", "bob"],
                       input="a,b\n", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TAILSHIP_SERVICES_STATE": str(tmp_path)})
    assert r.returncode == 1 and "may not contain" in r.stderr
    r = run("scram-user", "elasticsearch", "bob", state=tmp_path)
    assert r.returncode == 1 and "usage:" in r.stderr
