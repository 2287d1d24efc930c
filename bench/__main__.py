"""tailship against a Go baseline doing the same job, on the same machine, in one command.

    python -m bench [--quick] [--rounds N] [--lines N] [--scenarios ...] [--kafka HOST:PORT] [--out DIR]

First a parity check: both agents write a 20,000-line sample to stdout and their trace ids,
timestamps, streams and kubernetes fields are compared line by line. Then the scenarios, each
run for tailship and the Go baseline alternately (A B B A ..., medians of --rounds, default 3):
  null     files -> null sink (--once): the pipeline's own cost
  kafka    files -> Kafka (zstd, acks=all, idempotent, key = trace id, --once); every line
           consumed back: lost, duplicated and wrongly keyed messages counted
  latency  10k lines/s written (kubelet-style rotation at 10 MiB) -> Kafka; write-to-consumed
           latency from the write time embedded in each line (p50/p99/max)
  stall    5k lines/s -> Kafka while the broker is stopped for 60 s: peak RSS, recovery time
           (from the broker's return, or the writer's end if later, to the last line consumed)
  manyfiles (alone, tailship only; see bench/manyfiles.py) 10,000 idle container files on one
           worker: CPU % of a core and RSS idle, then with 100 of them written at 100 lines/s
Per agent and scenario: lines/s, MB/s, CPU-seconds per million lines (user + sys from the
kernel at the agent's exit; --once scenarios net of a start-up measured with the same sink),
peak RSS (VmHWM), latency percentiles, lines lost / duplicated / wrongly keyed, and the
tailship/Go ratios. The real Kafka broker comes from scripts/services (or --kafka, except for
stall). Writes bench/results/<date>-<host>.md (+ .png with matplotlib) and exits 1 when a line
was lost or wrongly keyed (duplicates are reported, not failed: delivery is at-least-once).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench import kafka
from bench.generate import generate_tree, record_seq

ROOT = Path(__file__).resolve().parent.parent
GO_DIR = ROOT / "bench" / "go-baseline"
CACHE = Path(os.environ.get("TAILSHIP_BENCH_CACHE", Path.home() / ".cache" / "tailship-bench"))
OTHERS = ("fluent-bit", "vector", "filebeat")


@dataclass
class Run:
    agent: str
    scenario: str
    wall: float = 0.0
    cpu: float = 0.0
    rss: int = 0      # peak RSS of the agent's whole process tree (the sum of the processes' peaks)
    rss_proc: int = 0  # the largest single process's peak RSS (a worker's, with worker processes)
    lines: int = 0
    bytes: int = 0
    lost: int = 0
    dups: int = 0  # lines delivered more than once
    bad_keys: int = 0  # Kafka messages whose key is not their trace id
    latencies: list[float] = field(default_factory=list)
    recovery: float | None = None
    startup_cpu: float = 0.0  # CPU-s of starting and stopping on nothing; `cpu` includes it
    startup_wall: float = 0.0  # seconds of the same; `wall` includes it

    @property
    def work_cpu(self) -> float:
        return max(0.0, self.cpu - self.startup_cpu)

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


def _hwm(p: psutil.Process) -> int:
    """Peak RSS of a process so far (VmHWM, bytes); its current RSS where /proc lacks it."""
    try:
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(p.memory_info().rss)


class Watch:
    """CPU (user+sys) and peak RSS of a process and its children, sampled every 50 ms. The peak
    is the kernel's high-water mark (VmHWM), so a peak between two samples is not missed."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.p = psutil.Process(proc.pid)
        self.peak = 0
        self.peak_proc = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _sample(self) -> None:
        try:
            procs = [self.p, *self.p.children(recursive=True)]
            hwms = [_hwm(p) for p in procs]
            cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
        except psutil.Error:
            return
        self.peak = max(self.peak, sum(hwms))
        self.peak_proc = max(self.peak_proc, max(hwms))
        self.cpu = max(self.cpu, cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.05)

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._t.join()

    def settle(self, timeout: float = 20.0) -> float:
        """Wait until the process has started (its CPU stops growing); its CPU so far."""
        deadline = time.monotonic() + timeout
        last = -1.0
        time.sleep(0.5)
        while time.monotonic() < deadline:
            self._sample()
            if self.cpu - last < 0.01:
                break
            last = self.cpu
            time.sleep(0.25)
        return self.cpu


def build_go() -> Path:
    binary = CACHE / "go-baseline"
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    r = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GO_DIR, capture_output=True,
                       text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: building the Go baseline failed:\n{r.stderr[-3000:]}")
    return binary


WORKERS = 0  # tailship's --workers (0: one per CPU); set from the command line


def agent_cmd(agent: str, go: Path, include: str, to: str, once: bool, data: Path) -> list[str]:
    if agent == "tailship":
        return [sys.executable, "-m", "agent", "tail", include, "--to", to, "--data-dir", str(data),
                "--workers", str(WORKERS), "--no-progress", *(["--once"] if once else [])]
    return [str(go), "-include", include, "-to", to, *(["-once"] if once else [])]


def reap(p: subprocess.Popen[bytes], timeout: float | None = None) -> float:
    """Wait for `p` (killed after `timeout`); user+sys CPU-s of it and its descendants from the
    kernel's accounting (wait4), exact where sampling misses the end. (Not its ru_maxrss: that
    counts the forked runner's pages before exec; peaks come from `Watch`.)"""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            p.kill()
            deadline = None
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    return float(ru.ru_utime + ru.ru_stime)


def run_once(agent: str, cmd: list[str], scenario: str, lines: int, nbytes: int) -> tuple[Run, str, str]:
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    w = Watch(p)
    cpu = reap(p)
    wall = time.monotonic() - t0
    w.stop()
    rss, rss_proc = w.peak, w.peak_proc
    for t in readers:
        t.join(60)
    out, err = streams.get("out", b"").decode(), streams.get("err", b"").decode()
    if p.returncode != 0:
        raise SystemExit(f"bench: {agent} failed ({p.returncode}): {err[-2000:]}")
    return Run(agent, scenario, wall=wall, cpu=cpu, rss=rss, rss_proc=rss_proc, lines=lines,
               bytes=nbytes), out, err


def startup(agent: str, go: Path, work: Path, to: str) -> tuple[float, float]:
    """(CPU-s, wall s) an agent spends starting and stopping around a one-line file with the sink
    `to` (connecting, and for Kafka fetching metadata and a producer id), median of 3."""
    one = work / "startup" / "one.log"
    one.parent.mkdir(parents=True, exist_ok=True)
    one.write_text('{"log":"{\\"seq\\":0}\\n","stream":"stdout","time":"2026-11-24T10:00:00Z"}\n')
    runs = [run_once(agent, agent_cmd(agent, go, str(one), to, True, work / f"data-{uuid.uuid4().hex[:6]}"),
                     "startup", 1, 0)[0] for _ in range(3)]
    return statistics.median(r.cpu for r in runs), statistics.median(r.wall for r in runs)


def acked(agent: str, out: str, err: str) -> int:
    if agent == "tailship":
        for line in err.splitlines():
            if "acknowledged" in line:
                return int(line.split(" records in ")[0].rsplit(" ", 1)[1].replace(",", ""))
        return 0
    return int(orjson.loads(out.strip().splitlines()[-1])["acked"])


@dataclass
class Consumed:
    seqs: set[int] = field(default_factory=set)  # distinct sequence numbers
    numbered: int = 0  # messages with a sequence number (numbered - len(seqs) = duplicates)
    bad_keys: int = 0  # messages whose key is not their record's trace_id

    @property
    def dups(self) -> int:
        return self.numbered - len(self.seqs)


async def consume(bootstrap: str, topic: str, expect: int | Any, within: float,
                  latencies: list[float] | None = None) -> Consumed:
    """What was read from the topic (and write-to-consume latencies). `expect` is a number of
    distinct lines, or a callable giving the number so far (the writer still writing)."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await c.start()
    got = Consumed()
    seqs = got.seqs
    try:
        deadline = time.monotonic() + within
        while len(seqs) < (expect() if callable(expect) else expect) and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=20000)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    tid = rec.get("trace_id")
                    if (m.key or None) != (tid.encode() if isinstance(tid, str) else None):
                        got.bad_keys += 1
                    seq = record_seq(rec)
                    if seq is None:
                        continue  # a stack-trace line without a number of its own
                    seqs.add(seq)
                    got.numbered += 1
                    if latencies is not None and "wts" in rec:
                        latencies.append(now - float(rec["wts"]))
    finally:
        await c.stop()
    return got


def create_topic(bootstrap: str, partitions: int) -> str:
    """A new topic with a fresh name; its name."""
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    asyncio.run(kafka.create_topic(bootstrap, topic, partitions))
    return topic


class RateWriter(threading.Thread):
    """Appends docker json-file lines at a fixed rate; each payload has `seq` and `wts`. Rotates
    like the kubelet (containerLogMaxSize 10 MiB, containerLogMaxFiles 5): at `rotate_bytes` the
    file is renamed to `<name>.<timestamp>` and a new one created; the oldest beyond 4 go."""

    def __init__(self, path: Path, rate: int, seconds: float, rotate_bytes: int = 10 << 20) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.seconds, self.rotate_bytes = path, rate, seconds, rotate_bytes
        self.written = 0
        self.rotations = 0
        self.bytes = 0
        self.elapsed = 0.0
        self.stop_evt = threading.Event()

    def _rotate(self) -> None:
        self.rotations += 1
        self.path.rename(self.path.with_name(f"{self.path.name}.{dt.datetime.now():%Y%m%d-%H%M%S}-"
                                             f"{self.rotations:04d}"))
        old = sorted(self.path.parent.glob(self.path.name + ".*"))
        for p in old[:-4]:
            p.unlink()

    def run(self) -> None:
        pad = "x" * 880
        t0 = time.monotonic()
        t_end = t0 + self.seconds
        tick = 0.02
        size = 0
        f = open(self.path, "ab")  # noqa: SIM115 - reopened at each rotation
        try:
            next_t = time.monotonic()
            while time.monotonic() < t_end and not self.stop_evt.is_set():
                n = max(1, int(self.rate * tick))
                now = time.time()
                ts = dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z")
                chunk = []
                for _ in range(n):
                    payload = orjson.dumps({"seq": self.written, "wts": now, "level": "info",
                                            "trace_id": uuid.uuid4().hex, "msg": pad}).decode()
                    chunk.append(orjson.dumps({"log": payload + "\n", "stream": "stdout", "time": ts}))
                    self.written += 1
                data = b"\n".join(chunk) + b"\n"
                f.write(data)
                f.flush()
                size += len(data)
                self.bytes += len(data)
                if size >= self.rotate_bytes:
                    f.close()
                    self._rotate()
                    f = open(self.path, "ab")  # noqa: SIM115
                    size = 0
                next_t += tick
                time.sleep(max(0.0, next_t - time.monotonic()))
        finally:
            f.close()
        self.elapsed = time.monotonic() - t0


def services(*args: str) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "services"), *args], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: scripts/services {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r.stdout.strip()


def follow_run(agent: str, go: Path, bootstrap: str, work: Path, rate: int, seconds: float,
               stall: float = 0.0) -> Run:
    """Fixed-rate writer -> agent (following) -> Kafka, a consumer measuring latency; with
    `stall`, the broker is stopped that long after a fifth of the run."""
    d = work / f"{agent}-follow-{uuid.uuid4().hex[:6]}"
    (d / "containers").mkdir(parents=True)
    log = d / "containers" / f"bench-0_load_app-{uuid.uuid4().hex * 2}.log"  # a kubelet name
    log.touch()
    topic = create_topic(bootstrap, 1)
    cmd = agent_cmd(agent, go, str(log), f"kafka://{bootstrap}/{topic}", False, d / "data")
    errlog = open(d / "agent.err", "wb")  # noqa: SIM115 - a file, not a pipe nobody reads
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, cwd=ROOT)
    errlog.close()  # the child has its own descriptor
    w = Watch(p)
    cpu0 = w.settle()  # started: only what follows is the work
    writer = RateWriter(log, rate, seconds)
    latencies: list[float] = []
    got = Consumed()
    wait = max(60.0, stall * 6) + seconds  # a timeout only: the consumer stops once it has every line

    def consumer() -> None:  # concurrently with the writer: latency is write -> consumed
        def expect() -> int:
            return writer.written + (1 if writer.is_alive() else 0)
        nonlocal got
        got = asyncio.run(consume(bootstrap, topic, expect, wait, latencies=None if stall else latencies))

    reader = threading.Thread(target=consumer, daemon=True)
    reader.start()
    writer.start()
    restarted = 0.0
    if stall:
        time.sleep(seconds / 5)
        services("down", "kafka")
        time.sleep(stall)
        again = services("up", "kafka")
        if again != bootstrap:  # e.g. TAILSHIP_KAFKA_PORT changed since a broker was started
            raise SystemExit(f"bench: the broker came back at {again}, not at {bootstrap}")
        restarted = time.monotonic()
    writer.join()
    t_written = time.monotonic()
    reader.join(wait + 30)
    done = time.monotonic()
    p.send_signal(signal.SIGTERM)
    cpu = reap(p, timeout=60)
    w.stop()
    rss, rss_proc = w.peak, w.peak_proc
    # wall = the writer's run: lines/s is the offered rate; CPU is from the start of the writer
    # to the agent's exit (the drain included, the start-up not)
    run = Run(agent, "stall" if stall else "latency", wall=writer.elapsed or seconds, cpu=cpu - cpu0,
              rss=rss, rss_proc=rss_proc, lines=writer.written, bytes=writer.bytes,
              lost=writer.written - len(got.seqs),
              dups=got.dups, bad_keys=got.bad_keys,
              latencies=sorted(latencies))
    if stall:
        # from the broker's return, or the writer's end if later: the time to catch up
        run.recovery = done - max(restarted, t_written)
    return run


def parity(go: Path, work: Path, lines: int = 20_000) -> str:
    """Both agents on the same small tree to stdout: are their records the same job done? Compares
    per line the trace id, timestamp, stream and kubernetes fields (the app fields are the
    payload's own in both)."""
    tree = work / "parity"
    generate_tree(tree, seed=11, pods=4, lines=lines, fmt="mixed", avg_bytes=1024, long_every=2000,
                  stack_every=500, with_expected=False, clean=True)
    include = str(tree / "containers" / "*.log")
    outs = {}
    for agent in ("tailship", "go"):
        _, out, _ = run_once(agent, agent_cmd(agent, go, include, "stdout", True, work / f"data-{agent}-p"),
                             "parity", lines, 0)
        recs = {}
        for line in out.splitlines():
            r = orjson.loads(line)
            recs[(r["log"]["file"]["path"], r["log"]["offset"])] = r
        outs[agent] = recs
    t, g = outs["tailship"], outs["go"]
    fields = ("trace_id", "@timestamp", "stream", "kubernetes")
    differ = sum(1 for k in t.keys() & g.keys() if any(t[k].get(f) != g[k].get(f) for f in fields))
    traced = sum(1 for r in t.values() if r.get("trace_id"))
    return (f"on {lines:,} lines both agents wrote {len(t):,} / {len(g):,} records ({traced:,} with a "
            f"trace id); {len(t.keys() ^ g.keys())} records only one of them wrote, {differ} whose "
            f"{', '.join(fields)} differ.")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def median_run(runs: list[Run]) -> Run:
    m = Run(runs[0].agent, runs[0].scenario)
    m.wall = statistics.median(r.wall for r in runs)
    m.cpu = statistics.median(r.cpu for r in runs)
    m.rss = int(statistics.median(r.rss for r in runs))
    m.rss_proc = int(statistics.median(r.rss_proc for r in runs))
    m.lines = runs[0].lines
    m.bytes = runs[0].bytes
    m.startup_cpu, m.startup_wall = runs[0].startup_cpu, runs[0].startup_wall
    m.lost = max(r.lost for r in runs)
    m.dups = max(r.dups for r in runs)
    m.bad_keys = max(r.bad_keys for r in runs)
    m.latencies = sorted(x for r in runs for x in r.latencies)
    rec = [r.recovery for r in runs if r.recovery is not None]
    m.recovery = statistics.median(rec) if rec else None
    return m


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    mem = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {psutil.cpu_count()} CPUs available, {mem:.0f} GiB RAM; Linux "
            f"{platform.release()}; Python {platform.python_version()} ({sys.executable}); {go}")


def report(results: dict[str, dict[str, Run]], args: argparse.Namespace, out: Path, cmdline: str) -> Path:
    lines = [f"# tailship vs the Go baseline — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}", "", f"Command: `{cmdline}`", "",
             f"Rounds: {args.rounds} (A B alternating; medians). Workload: ~1 KB docker/CRI lines "
             "from `bench.generate` (JSON payloads, trace ids in several conventions, some 16 KiB+ "
             "lines and stack traces). CPU = user+sys of the agent's process tree (the kernel's "
             "accounting at exit).", "",
             "null and kafka read pre-written files with `--once`; their lines/s and CPU are net of "
             "start-up, measured apart (a one-line file, median of 3): "
             + ", ".join(f"{s} {a} {c:.2f} CPU-s / {w:.2f} s" for (s, a), (c, w) in
                         sorted(getattr(args, "startups", {}).items())) + ". "
             "latency and stall follow a file written at a fixed rate (kubelet-style rotation at 10 MiB); "
             "their CPU counts from the first written line to the agent's exit.", "",
             f"Same job: {getattr(args, 'parity', 'not checked')}", "",
             f"tailship workers: {WORKERS or 'one per CPU'} (`--workers`). Peak RSS: the sum of the "
             "peaks of the agent's processes; largest process: the peak of the biggest one (a "
             "worker's, for tailship with workers).", "",
             "| scenario | agent | lines/s | MB/s | CPU-s per M lines | peak RSS MiB | largest process "
             "MiB | p50 ms | p99 ms | max ms | recovery s | lost | dup | bad key | tailship/Go lines/s | "
             "tailship/Go CPU per line |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, by_agent in results.items():
        go = by_agent.get("go")
        for agent, r in by_agent.items():
            ratio_l = ratio_c = ""
            if agent == "tailship" and go is not None and go.lines_per_s:
                ratio_l = f"{r.lines_per_s / go.lines_per_s:.2f}"
                ratio_c = f"{r.cpu_per_m / go.cpu_per_m:.2f}" if go.cpu_per_m else "n/a"
            lat = [pct(r.latencies, q) * 1000 for q in (0.5, 0.99, 1.0)] if r.latencies else []
            fmt_lat = [f"{x:.0f}" for x in lat] if lat else ["", "", ""]
            mbs = r.bytes / r.work_wall / 1e6
            lines.append(f"| {scenario} | {agent} | {r.lines_per_s:,.0f} | {mbs:.1f} | "
                         f"{r.cpu_per_m:.2f} | {r.rss / 2**20:.0f} | {r.rss_proc / 2**20:.0f} | "
                         f"{' | '.join(fmt_lat)} | "
                         f"{'' if r.recovery is None else f'{r.recovery:.1f}'} | {r.lost} | {r.dups} | "
                         f"{r.bad_keys if scenario != 'null' else ''} | {ratio_l} | "
                         f"{ratio_c} |")
    found = [a for a in OTHERS if shutil.which(a)]
    lines += ["", "Other agents on PATH: " + (", ".join(found) if found else
                                             "none found (fluent-bit, vector, filebeat); not compared"),
              "", "For latency and stall the wall time is the writer's fixed-rate run, so lines/s is "
              "the offered rate, not capacity; compare CPU, RSS, latency, recovery and losses there."]
    out.mkdir(parents=True, exist_ok=True)
    name = f"{dt.datetime.now():%Y-%m-%d}-{platform.node() or 'host'}"
    md = out / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    try:
        chart(results, out / f"{name}.png")
    except ImportError:
        pass
    return md


def chart(results: dict[str, dict[str, Run]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in ("null", "kafka") if s in results]
    if not scen:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    panels = ((axes[0], "lines_per_s", "lines/s"), (axes[1], "cpu_per_m", "CPU-s per M lines"))
    for ax, metric, label in panels:
        for i, agent in enumerate(("tailship", "go")):
            vals = [getattr(results[s][agent], metric) if agent in results[s] else 0 for s in scen]
            ax.bar([x + i * 0.4 for x in range(len(scen))], vals, width=0.4, label=agent)
        ax.set_xticks([x + 0.2 for x in range(len(scen))], scen)
        ax.set_title(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under 3 minutes) for CI smoke use")
    ap.add_argument("--rounds", type=int, help="A/B rounds per scenario (default 3, quick 1)")
    ap.add_argument("--lines", type=int, help="records in the throughput workload")
    ap.add_argument("--scenarios", default="null,kafka,latency,stall")
    ap.add_argument("--kafka", help="bootstrap host:port (default: start one with scripts/services)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=0,
                    help="tailship's worker processes (default 0: one per CPU, as the agent does)")
    ap.add_argument("--files", type=int, default=10_000, help="manyfiles: idle container files")
    ap.add_argument("--agent-root", default=str(ROOT),
                    help="manyfiles: run the agent from this checkout (to compare with another)")
    args = ap.parse_args(argv)
    if args.scenarios == "manyfiles":  # tailship alone: the Go baseline has no part in it
        import tempfile

        from bench import manyfiles

        with tempfile.TemporaryDirectory(prefix="tailship-bench-") as tmp:
            return manyfiles.main(argv if argv is not None else sys.argv[1:], args.quick,
                                  Path(args.work or tmp), Path(args.out), args.files,
                                  Path(args.agent_root))
    args.rounds = args.rounds or (1 if args.quick else 3)
    global WORKERS
    WORKERS = args.workers
    lines = args.lines or (30_000 if args.quick else 200_000)
    scenarios = args.scenarios.split(",")
    if args.kafka and "stall" in scenarios:
        raise SystemExit("bench: the stall scenario stops and restarts the broker of scripts/services; "
                         "it cannot be run against --kafka")
    go = build_go()
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="tailship-bench-") if not args.work else None
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    bootstrap = args.kafka or (services("up", "kafka") if {"kafka", "latency", "stall"} & set(scenarios)
                               else "")
    tree = work / "tree"
    # 16 containers: a node runs dozens; tailship's workers take whole files, Go's pool takes lines
    m = generate_tree(tree, seed=7, pods=16, lines=lines, fmt="mixed", avg_bytes=1024, long_every=2000,
                      stack_every=500, with_expected=False, clean=True)
    include = str(tree / "containers" / "*.log")
    results: dict[str, dict[str, Run]] = {}
    total_bytes = m.total_bytes
    args.parity = parity(go, work)
    print(f"parity  {args.parity}", file=sys.stderr)
    starts: dict[tuple[str, str], tuple[float, float]] = {}  # (scenario, agent) -> (CPU-s, s)
    for scenario in {"null", "kafka"} & set(scenarios):
        to = "null" if scenario == "null" else f"kafka://{bootstrap}/{create_topic(bootstrap, 1)}"
        for a in ("tailship", "go"):
            starts[scenario, a] = startup(a, go, work, to)
    args.startups = starts
    for scenario in scenarios:
        runs: dict[str, list[Run]] = {"tailship": [], "go": []}
        for rnd in range(args.rounds):
            for agent in ("tailship", "go") if rnd % 2 == 0 else ("go", "tailship"):
                if scenario in ("null", "kafka"):
                    topic = create_topic(bootstrap, 1) if scenario == "kafka" else ""
                    to = "null" if scenario == "null" else f"kafka://{bootstrap}/{topic}"
                    run, out, err = run_once(agent, agent_cmd(agent, go, include, to, True,
                                                              work / f"data-{uuid.uuid4().hex[:6]}"),
                                             scenario, m.total_records, total_bytes)
                    run.startup_cpu, run.startup_wall = starts[scenario, agent]
                    if scenario == "null":
                        run.lost = m.total_records - acked(agent, out, err)
                    else:
                        got = asyncio.run(consume(bootstrap, topic, m.total_records, 300))
                        run.lost = m.total_records - len(got.seqs)
                        run.dups, run.bad_keys = got.dups, got.bad_keys
                elif scenario == "latency":
                    run = follow_run(agent, go, bootstrap, work, 10_000, 5 if args.quick else 30)
                elif scenario == "stall":
                    run = follow_run(agent, go, bootstrap, work, 5_000, 15 if args.quick else 75,
                                     stall=5 if args.quick else 60)
                else:
                    raise SystemExit(f"bench: unknown scenario {scenario!r}")
                runs[agent].append(run)
                print(f"{scenario:8} {agent:8} round {rnd + 1}: {run.lines_per_s:10,.0f} lines/s "
                      f"{run.cpu_per_m:6.2f} CPU-s/M lines  RSS {run.rss >> 20:4d} MiB "
                      f"(largest process {run.rss_proc >> 20} MiB)  lost {run.lost}",
                      file=sys.stderr)
        results[scenario] = {a: median_run(rs) for a, rs in runs.items()}
    cmdline = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    md = report(results, args, Path(args.out), cmdline.strip())
    print(md.read_text())
    print(f"report: {md}", file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    # lost or wrongly keyed lines fail the run; duplicates (at-least-once delivery after an
    # outage) are reported, not failed
    bad = sum(r.lost + r.bad_keys for by in results.values() for r in by.values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
