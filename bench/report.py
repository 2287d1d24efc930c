"""The results file of `python -m bench`: figures, ratios, the targets of issue 16, profiles."""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

OTHERS = ("fluent-bit", "vector", "filebeat")
STARTUP_LIMIT = 0.05  # start-up must stay under this share of a throughput run's CPU
MIB = 1 << 20


@dataclass
class Run:
    agent: str
    scenario: str
    workers: int = 0
    wall: float = 0.0
    cpu: float = 0.0   # gross: user+sys of the whole process tree, start-up included
    rss: int = 0       # peak RSS of the agent's whole process tree (the sum of the processes' peaks)
    rss_proc: int = 0  # the largest single process's peak RSS (a worker's, with worker processes)
    lines: int = 0
    bytes: int = 0
    lost: int = 0
    dups: int = 0      # lines delivered more than once
    bad_keys: int = 0  # Kafka messages whose key is not their trace id
    broker_cpu: float | None = None  # CPU-s of the Kafka broker during the agent's run
    latencies: list[float] = field(default_factory=list)
    recovery: float | None = None
    startup_cpu: float = 0.0   # CPU-s of starting and stopping on nothing; `cpu` includes it
    startup_wall: float = 0.0  # seconds of the same; `wall` includes it

    @property
    def work_cpu(self) -> float:
        return max(1e-6, self.cpu - self.startup_cpu)

    @property
    def work_wall(self) -> float:
        return max(1e-3, self.wall - self.startup_wall)

    @property
    def lines_per_s(self) -> float:
        """Lines per second of wall time, net of start-up."""
        return self.lines / self.work_wall if self.wall else 0.0

    @property
    def cpu_per_m(self) -> float:
        """CPU-seconds per million lines, net of start-up: the cost of the work itself."""
        return self.work_cpu / self.lines * 1e6 if self.lines else 0.0

    @property
    def gross_cpu_per_m(self) -> float:
        return self.cpu / self.lines * 1e6 if self.lines else 0.0

    @property
    def lines_per_cpu_s(self) -> float:
        """Lines per CPU-second, net of start-up (the inverse of `cpu_per_m`)."""
        return self.lines / self.work_cpu if self.lines else 0.0

    @property
    def startup_share(self) -> float:
        return self.startup_cpu / self.cpu if self.cpu else 0.0

    @property
    def broker_per_m(self) -> float | None:
        return None if self.broker_cpu is None or not self.lines else self.broker_cpu / self.lines * 1e6


def median_run(runs: list[Run]) -> Run:
    """Medians of the rounds (losses and keying errors: the worst round)."""
    m = Run(runs[0].agent, runs[0].scenario, workers=runs[0].workers)
    m.wall = statistics.median(r.wall for r in runs)
    m.cpu = statistics.median(r.cpu for r in runs)
    m.rss = int(statistics.median(r.rss for r in runs))
    m.rss_proc = int(statistics.median(r.rss_proc for r in runs))
    m.lines, m.bytes = runs[0].lines, runs[0].bytes
    m.startup_cpu, m.startup_wall = runs[0].startup_cpu, runs[0].startup_wall
    m.lost = max(r.lost for r in runs)
    m.dups = max(r.dups for r in runs)
    m.bad_keys = max(r.bad_keys for r in runs)
    brokers = [r.broker_cpu for r in runs if r.broker_cpu is not None]
    m.broker_cpu = statistics.median(brokers) if brokers else None
    m.latencies = sorted(x for r in runs for x in r.latencies)
    rec = [r.recovery for r in runs if r.recovery is not None]
    m.recovery = statistics.median(rec) if rec else None
    return m


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {psutil.cpu_count()} CPUs available ({len(psutil.Process().cpu_affinity() or [])} "
            f"usable), {mem:.0f} GiB RAM; Linux {platform.release()}; host {platform.node()}")


Results = dict[str, dict[str, Run]]  # scenario -> agent name -> the median run


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def _f(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def throughput_table(results: Results) -> list[str]:
    out = ["| scenario | agent | workers | lines | lines/s | MB/s | **CPU-s per M lines** | lines per "
           "CPU-s | gross CPU-s per M | start-up CPU-s | start-up % of CPU | broker CPU-s per M | "
           "peak RSS MiB | largest process MiB | lost | dup | bad key |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, by_agent in results.items():
        if scenario in ("latency", "stall"):
            continue
        for agent, r in by_agent.items():
            share = r.startup_share
            flag = " ⚠" if share >= STARTUP_LIMIT else ""
            out.append(f"| {scenario} | {agent} | {r.workers or 'per CPU'} | {r.lines:,} | "
                       f"{r.lines_per_s:,.0f} | {r.bytes / r.work_wall / 1e6:.1f} | **{r.cpu_per_m:.2f}** | "
                       f"{r.lines_per_cpu_s:,.0f} | {r.gross_cpu_per_m:.2f} | {r.startup_cpu:.2f} | "
                       f"{100 * share:.1f}{flag} | {_f(r.broker_per_m)} | {r.rss / MIB:.0f} | "
                       f"{r.rss_proc / MIB:.0f} | {r.lost} | {r.dups} | "
                       f"{r.bad_keys if scenario.startswith('kafka') else ''} |")
    return out


def follow_table(results: Results) -> list[str]:
    out = ["| scenario | agent | lines/s offered | CPU-s per M lines | broker CPU-s per M | peak RSS MiB | "
           "largest process MiB | p50 ms | p99 ms | max ms | recovery s | lost | dup | bad key |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in ("latency", "stall"):
        for agent, r in results.get(scenario, {}).items():
            lat = ([f"{pct(r.latencies, q) * 1000:.0f}" for q in (0.5, 0.99, 1.0)] if r.latencies
                   else ["", "", ""])
            out.append(f"| {scenario} | {agent} | {r.lines_per_s:,.0f} | {r.cpu_per_m:.2f} | "
                       f"{_f(r.broker_per_m)} | {r.rss / MIB:.0f} | {r.rss_proc / MIB:.0f} | "
                       f"{' | '.join(lat)} | {_f(r.recovery, '.1f')} | {r.lost} | {r.dups} | {r.bad_keys} |")
    return out


def ratio_table(results: Results) -> list[str]:
    """Each tailship agent against each other agent of the same scenario."""
    out = ["| scenario | agent | against | lines/s ratio | CPU per line ratio | lines per CPU-s ratio |",
           "|---|---|---|---|---|---|"]
    for scenario, by_agent in results.items():
        for name, r in by_agent.items():
            if not name.startswith("tailship"):
                continue
            for other, o in by_agent.items():
                if other == name or (other.startswith("tailship") and name != "tailship"):
                    continue
                out.append(f"| {scenario} | {name} | {other} | {_ratio(r.lines_per_s, o.lines_per_s)} | "
                           f"{_ratio(r.cpu_per_m, o.cpu_per_m)} | "
                           f"{_ratio(r.lines_per_cpu_s, o.lines_per_cpu_s)} |")
    return out


@dataclass
class Target:
    what: str
    figure: str
    met: bool | None  # None: not measured in this run


def targets(results: Results, rev: str | None, old_go: str | None) -> list[Target]:
    """Issue 16's targets, each computed from this run's figures."""
    out: list[Target] = []

    def get(scenario: str, agent: str | None) -> Run | None:
        return results.get(scenario, {}).get(agent) if agent else None

    for fmt in ("cri", "docker"):
        t, g, old = (get(f"null-{fmt}", a) for a in ("tailship", "go", old_go))
        if t and g:
            ratio = t.cpu_per_m / g.cpu_per_m
            fig = f"{t.cpu_per_m:.2f} vs {g.cpu_per_m:.2f} CPU-s per M lines = {ratio:.2f}×"
            if t and old:
                fig += f" (against {old_go}: {t.cpu_per_m / old.cpu_per_m:.2f}×)"
            out.append(Target(f"file → null, {fmt}: CPU per line ≤ 1.0× go", fig, ratio <= 1.0))
        else:
            out.append(Target(f"file → null, {fmt}: CPU per line ≤ 1.0× go", "not run", None))
    for fmt, want in (("cri", 2.0), ("docker", 1.6)):
        t, old_t = get(f"null1-{fmt}", "tailship"), get(f"null1-{fmt}", rev)
        what = f"one worker → null, {fmt}: lines per CPU-s ≥ {want}× {rev or 'tailship@REV'}"
        if t and old_t:
            ratio = t.lines_per_cpu_s / old_t.lines_per_cpu_s
            out.append(Target(what, f"{t.lines_per_cpu_s:,.0f} vs {old_t.lines_per_cpu_s:,.0f} = "
                                    f"{ratio:.2f}×", ratio >= want))
        else:
            out.append(Target(what, "not run (--tailship-rev)", None))
    for fmt in ("cri", "docker"):
        t, g = get(f"kafka-{fmt}", "tailship"), get(f"kafka-{fmt}", "go")
        if t and g:
            lr, cr = t.lines_per_s / g.lines_per_s, t.cpu_per_m / g.cpu_per_m
            out.append(Target(f"file → Kafka, {fmt}: lines/s ≥ 1.0× go",
                              f"{t.lines_per_s:,.0f} vs {g.lines_per_s:,.0f} = {lr:.2f}×", lr >= 1.0))
            out.append(Target(f"file → Kafka, {fmt}: CPU per line ≤ 1.0× go",
                              f"{t.cpu_per_m:.2f} vs {g.cpu_per_m:.2f} = {cr:.2f}×", cr <= 1.0))
        else:
            out.append(Target(f"file → Kafka, {fmt}: lines/s and CPU per line against go", "not run", None))
    peaks = [(r.rss_proc, s) for s, by in results.items() for a, r in by.items() if a == "tailship"]
    if peaks:
        peak, where = max(peaks)
        out.append(Target("peak RSS ≤ 100 MiB per worker, every scenario",
                          f"largest tailship process {peak / MIB:.0f} MiB ({where})", peak <= 100 * MIB))
    lat = get("latency", "tailship")
    if lat and lat.latencies:
        p99 = pct(lat.latencies, 0.99) * 1000
        out.append(Target("latency setting, 10k lines/s: p99 write → consumed ≤ 42 ms, nothing lost",
                          f"p99 {p99:.0f} ms, {lat.lost} lost", p99 <= 42 and lat.lost == 0))
    else:
        out.append(Target("latency setting: p99 ≤ 42 ms", "not run", None))
    return out


def targets_table(ts: list[Target]) -> list[str]:
    out = ["| target | figure | |", "|---|---|---|"]
    for t in ts:
        out.append(f"| {t.what} | {t.figure} | {'—' if t.met is None else 'met' if t.met else 'missed'} |")
    return out


def write(path: Path, header: list[str], results: Results, rev: str | None, old_go: str | None,
          profiles: list[str], notes: list[str]) -> None:
    found = [a for a in OTHERS if shutil.which(a)]
    lines = [*header, "", "## Targets (issue 16)", "", *targets_table(targets(results, rev, old_go)), "",
             "## Throughput (files read with `--once`)", "",
             "CPU-s per M lines is net of start-up (the headline: the cost of the work itself); gross "
             "includes it. ⚠ marks a run whose start-up is 5 % or more of its CPU (raise `--lines`).",
             "", *throughput_table(results), "",
             "## Ratios", "", *ratio_table(results)]
    if "latency" in results or "stall" in results:
        lines += ["", "## Following a file written at a fixed rate", "",
                  "The wall time is the writer's fixed-rate run, so lines/s is the offered rate, not "
                  "capacity; CPU counts from the writer's first line to the agent's exit.", "",
                  *follow_table(results)]
    lines += profiles
    lines += ["", "## Notes", "", *notes,
              "Other agents on PATH: " + (", ".join(found) if found else
                                          "none found (fluent-bit, vector, filebeat); not compared")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def chart(results: Results, path: Path) -> None:
    """CPU-s per M lines and lines/s of every throughput scenario, a bar per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in results if s not in ("latency", "stall")]
    if not scen:
        return
    agents: list[str] = []
    for s in scen:
        agents += [a for a in results[s] if a not in agents]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(agents)
    panels: tuple[tuple[Any, str, str], ...] = (
        (axes[0], "cpu_per_m", "CPU-s per M lines (net, lower is better)"),
        (axes[1], "lines_per_s", "lines/s (net)"))
    for ax, metric, label in panels:
        for i, agent in enumerate(agents):
            vals = [getattr(results[s][agent], metric) if agent in results[s] else 0 for s in scen]
            ax.bar([x + i * width for x in range(len(scen))], vals, width=width, label=agent)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(scen))], scen, rotation=20)
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def stamp() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
