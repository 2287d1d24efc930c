"""Unit tests of the benchmark runner's parts that decide what a results file says: the targets
(met or missed from the figures), the profile summary, the flags each agent is given, and the
configuration tailship gets for the latency setting."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.config import load_config
from bench import profile
from bench.__main__ import scenario_agents
from bench.agents import Agent, Latency, tailship_config
from bench.report import MIB, Run, median_run, targets


def _run(agent: str, scenario: str, cpu: float, wall: float = 10.0, lines: int = 1_000_000,
         rss_proc: int = 50 * MIB, startup: float = 0.5) -> Run:
    return Run(agent, scenario, wall=wall, cpu=cpu, lines=lines, rss=rss_proc, rss_proc=rss_proc,
               startup_cpu=startup)


def test_targets_are_met_or_missed_from_the_figures() -> None:
    results = {
        # CRI: tailship 8.5 net CPU-s per M lines against go's 9.5 -> met; docker 12.5 vs 9.5 -> missed
        "null-cri": {"tailship": _run("tailship", "null-cri", 9.0),
                     "go": _run("go", "null-cri", 9.5, startup=0),
                     "go@a1799ed": _run("go@a1799ed", "null-cri", 5.0, startup=0)},
        "null-docker": {"tailship": _run("tailship", "null-docker", 13.0),
                        "go": _run("go", "null-docker", 9.5, startup=0)},
        # one worker: 2.0x the old lines per CPU-second on CRI (met), 1.5x on docker (missed: wants 1.6)
        "null1-cri": {"tailship": _run("tailship", "null1-cri", 5.5),
                      "tailship@old": _run("tailship@old", "null1-cri", 10.5)},
        "null1-docker": {"tailship": _run("tailship", "null1-docker", 6.5, rss_proc=120 * MIB),
                         "tailship@old": _run("tailship@old", "null1-docker", 9.5)},
    }
    lat = _run("tailship", "latency", 1.0, wall=30.0, lines=300_000)
    lat.latencies = sorted([0.010] * 990 + [0.050] * 10)  # p99 = 50 ms: missed
    results["latency"] = {"tailship": lat}
    got = {t.what: t for t in targets(results, "tailship@old", "go@a1799ed")}
    cri = got["file → null, cri: CPU per line ≤ 1.0× go"]
    assert cri.met is True and "8.50 vs 9.50" in cri.figure and "against go@a1799ed: 1.70×" in cri.figure
    assert got["file → null, docker: CPU per line ≤ 1.0× go"].met is False
    one_cri = next(t for w, t in got.items() if w.startswith("one worker → null, cri"))
    assert one_cri.met is True and "2.00×" in one_cri.figure
    one_docker = next(t for w, t in got.items() if w.startswith("one worker → null, docker"))
    assert one_docker.met is False and "1.50×" in one_docker.figure
    rss = got["peak RSS ≤ 100 MiB per worker, every scenario"]
    assert rss.met is False and "120 MiB (null1-docker)" in rss.figure
    latency = next(t for w, t in got.items() if w.startswith("latency setting"))
    assert latency.met is False and "p99 50 ms" in latency.figure
    kafka = next(t for w, t in got.items() if w.startswith("file → Kafka"))
    assert kafka.met is None and kafka.figure == "not run"


def test_median_run_keeps_the_worst_loss_and_the_median_cpu() -> None:
    runs = [_run("go", "null-cri", c) for c in (3.0, 1.0, 2.0)]
    runs[2].lost = 7
    runs[0].broker_cpu, runs[1].broker_cpu = 4.0, 2.0
    m = median_run(runs)
    assert (m.cpu, m.lost, m.broker_cpu) == (2.0, 7, 3.0)
    assert m.cpu_per_m == 1.5 and m.gross_cpu_per_m == 2.0 and m.startup_share == 0.25


def test_profile_summary_counts_own_and_inclusive_time() -> None:
    raw = ("main (agent/cli.py:10);run (agent/runtime.py:20);parse (pipelines/chain.py:30) 60\n"
           "main (agent/cli.py:10);run (agent/runtime.py:21);encode (pipelines/chain.py:40) 30\n"
           "main (agent/cli.py:10);run (agent/runtime.py:22) 10\n"
           "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 40\n"
           "not a sample line\n")
    rows, samples, idle = profile.summarize(raw, top=2)
    assert (samples, idle) == (100, 40)
    assert [(r.function, round(r.own, 2), round(r.inclusive, 2)) for r in rows] == [
        ("parse (pipelines/chain.py)", 0.6, 0.6), ("encode (pipelines/chain.py)", 0.3, 0.3)]
    rows, _, _ = profile.summarize(raw, top=3)
    assert (rows[2].function, rows[2].own, rows[2].inclusive) == ("run (agent/runtime.py)", 0.1, 1.0)


def test_go_flags_it_lacks_are_not_given(tmp_path: Path) -> None:
    new = Agent("go", "go", Path("/bin/go-new"), "", flags=frozenset(
        {"include", "to", "once", "data", "linger", "kafka-linger"}))
    old = Agent("go@old", "go", Path("/bin/go-old"), "", flags=frozenset({"include", "to", "once", "linger"}))
    lat = Latency(batch_ms=7, kafka_ms=3)
    cmd = new.command("/x/*.log", "kafka://h:1/t", once=False, data=tmp_path / "d", latency=lat)
    assert cmd[cmd.index("-data") + 1] == str(tmp_path / "d")
    assert cmd[cmd.index("-linger") + 1] == "7ms" and cmd[cmd.index("-kafka-linger") + 1] == "3ms"
    cmd = old.command("/x/*.log", "null", once=True, data=tmp_path / "d", latency=lat)
    assert "-data" not in cmd and "-kafka-linger" not in cmd and "-once" in cmd
    assert cmd[cmd.index("-linger") + 1] == "7ms"
    assert old.dropped == {"data", "kafka-linger"} and not new.dropped


def test_latency_setting_is_a_valid_tailship_configuration(tmp_path: Path) -> None:
    path = tailship_config(str(tmp_path / "logs" / "*.log"), "kafka://127.0.0.1:9092,127.0.0.1:9093/bench-t",
                           tmp_path / "data", 1, Latency(batch_ms=7, kafka_ms=3))
    settings = load_config(path)
    assert settings.batch.linger_ms == 7 and settings.workers == 1
    assert settings.sink.type == "kafka" and settings.sink.kafka.linger_ms == 3
    assert settings.sink.kafka.topic == "bench-t"
    assert settings.sink.kafka.bootstrap_servers == ["127.0.0.1:9092", "127.0.0.1:9093"]
    assert settings.source.include == [str(tmp_path / "logs" / "*.log")] and settings.metrics.listen == ""


def test_agents_run_where_the_defaults_and_agents_option_say() -> None:
    agents = {n: Agent(n, "go" if n.startswith("go") else "tailship", Path("/x"), "")
              for n in ("tailship", "tailship@old", "go", "go@a1799ed")}

    def names(specs: list[str], have: dict[str, Agent] = agents) -> dict[str, list[str]]:
        named = {n for s in specs for n in s.split("=")[1].split(",")}
        ns = argparse.Namespace(agents=specs, agents_named=named)
        return {s: [a.name for a in got] for s, got in scenario_agents(ns, have).items()}

    got = names([])
    assert got["null-cri"] == ["tailship", "go", "go@a1799ed"]
    assert got["null1-docker"] == ["tailship", "tailship@old"] and got["kafka-cri"] == ["tailship", "go"]
    got = names(["kafka=tailship,tailship@rev,go", "latency=go"])
    assert got["kafka-docker"] == got["kafka-cri"] == ["tailship", "tailship@old", "go"]
    assert got["latency"] == ["go"] and got["stall"] == ["tailship", "go"]
    without_old = {n: a for n, a in agents.items() if "@" not in n}
    assert names([], without_old)["null1-cri"] == ["tailship"]  # no --tailship-rev: the alias is skipped
    with pytest.raises(SystemExit, match="gox"):
        names(["null=tailship,gox"])
    with pytest.raises(SystemExit, match="nulll"):
        names(["nulll=tailship"])
