"""tailship against a strong Go baseline doing the same job, on the same machine, in one command.

    python -m bench [--quick] [--rounds N] [--lines N] [--scenarios ...] [--agents SCEN=A,B ...]
                    [--tailship-rev REV] [--go-old-rev REV | --no-go-old] [--python PATH]
                    [--workers N] [--partitions N] [--profile] [--kafka HOST:PORT] [--out DIR]

Agents (bench/agents.py): `tailship` (this checkout, on `--python`, default this interpreter),
`tailship@REV` (tailship as it was at `--tailship-rev REV`, same interpreter: today's main against
the new code in one run), `go` (bench/go-baseline of this checkout) and `go@REV` (the baseline as
it was at `--go-old-rev`, default a1799ed, so a target never moves by weakening the baseline).
Each scenario runs its agents alternately (A B C, C B A, ...: medians of --rounds, default 3).

First a parity check: tailship and go write a 20,000-record sample (docker and CRI files) to
stdout and their trace ids, span ids, timestamps, streams and kubernetes fields are compared
record by record. Then the scenarios (default: all but manyfiles):
  null-docker, null-cri     files -> null sink (--once), one worker per CPU: the pipeline's cost.
                            Agents: tailship, go, go@old
  null1-docker, null1-cri   the same with one tailship worker (--workers 1): tailship, tailship@REV
  kafka-docker, kafka-cri   files -> Kafka (zstd, acks=all, idempotent, key = trace id, --once),
                            every line consumed back: lost, duplicated and wrongly keyed messages
                            counted; the broker's CPU is measured apart. Agents: tailship, go
  latency   10k lines/s written (kubelet-style rotation at 10 MiB) -> Kafka with the latency
            setting on both sides (batch linger --latency-linger-ms, default 10, Kafka linger
            --latency-kafka-linger-ms, default 5); write-to-consumed p50/p99/max. tailship, go
  stall     5k lines/s -> Kafka while the broker is stopped for 60 s: peak RSS, recovery time
            (from the broker's return, or the writer's end if later, to the last line consumed);
            one round (--stall-rounds). tailship, go
  manyfiles (alone, tailship only; see bench/manyfiles.py) 10,000 idle container files
`null` and `kafka` and `null1` name both formats. `--agents null=tailship,go` (repeatable; a
scenario or a family; agent names or the aliases tailship@rev and go@old) changes who runs where.

Throughput scenarios read --lines records (default 1,500,000, ~1.5 GB per format, so start-up is a
few percent of the CPU; a run where it is 5 % or more is marked) of ~1 KB lines (`bench.generate`:
JSON payloads with trace ids in several conventions, 16 KiB+ split lines, stack traces). Per agent
and scenario: CPU-seconds per million lines (the headline: user + sys of the process tree from the
kernel at the agent's exit, net of a start-up measured apart with the same sink, median of 3) and
lines per CPU-second; the gross CPU and the start-up beside them; lines/s and MB/s; the broker's
CPU-s per million lines; peak RSS of the largest process (a worker) and of the whole tree; latency
percentiles; lines lost / duplicated / wrongly keyed; ratios between the agents; the targets of
issue 16, each "met" or "missed" from the figures. `--profile` adds a py-spy profile of one tailship
worker per null scenario (bench/profile.py): the top functions by own time in the results file,
the raw profile gzipped beside it.

The real Kafka broker comes from scripts/services (or --kafka, except for stall). A run writes
`bench/results/<date>-<host>.md` (+ .png with matplotlib; the directory is committed to git);
`--quick` (a smoke run of a few minutes, used by tests) writes to bench/work/results/ (ignored by
git) unless --out is given. Exits 1 when a line was lost or wrongly keyed (duplicates are
reported, not failed: delivery is at-least-once).

Another interpreter: `PYTHON=python3.13 TAILSHIP_VENV=.venv-3.13 . scripts/venv.sh bench`, then
`python -m bench --python .venv-3.13/bin/python`.
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
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import kafka, report
from bench import profile as prof
from bench.agents import ROOT, Agent, Latency, go_version, make_agents, python_version
from bench.generate import Manifest, generate_tree, record_seq
from bench.measure import Broker, Watch, reap
from bench.report import Run

RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = ROOT / "bench" / "work" / "results"  # ignored by git: a smoke run dirties nothing
SERVICES_STATE = Path(os.environ.get("TAILSHIP_SERVICES_STATE", ROOT / ".services"))

FAMILIES = {"null": ["null-docker", "null-cri"], "null1": ["null1-docker", "null1-cri"],
            "kafka": ["kafka-docker", "kafka-cri"]}
ALL = [*FAMILIES["null"], *FAMILIES["null1"], *FAMILIES["kafka"], "latency", "stall"]
# who runs where by default: the old baselines where the targets need them (a full run in ~25 min)
DEFAULT_AGENTS = {"null": ["tailship", "go", "go@old"],
                  "null1": ["tailship", "tailship@rev"],
                  "kafka": ["tailship", "go"], "latency": ["tailship", "go"], "stall": ["tailship", "go"]}


def family(scenario: str) -> str:
    return scenario.split("-")[0]


def run_once(agent: Agent, cmd: list[str], scenario: str, lines: int, nbytes: int,
             workers: int = 0) -> tuple[Run, str, str]:
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=agent.path if agent.kind == "tailship" else ROOT, env=agent.env())
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    w = Watch(p.pid)
    cpu = reap(p)
    wall = time.monotonic() - t0
    w.stop()
    for t in readers:
        t.join(60)
    out, err = streams.get("out", b"").decode(), streams.get("err", b"").decode()
    if p.returncode != 0:
        raise SystemExit(f"bench: {agent.name} failed ({p.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return Run(agent.name, scenario, workers=workers, wall=wall, cpu=cpu, rss=w.peak,
               rss_proc=w.peak_proc, lines=lines, bytes=nbytes), out, err


def startup(agent: Agent, work: Path, to: str, workers: int) -> tuple[float, float]:
    """(CPU-s, wall s) an agent spends starting and stopping around a one-line file with the sink
    `to` (connecting, and for Kafka fetching metadata and a producer id), median of 3."""
    one = work / "startup" / "one.log"
    one.parent.mkdir(parents=True, exist_ok=True)
    one.write_text('{"log":"{\\"seq\\":0}\\n","stream":"stdout","time":"2026-11-24T10:00:00Z"}\n')
    runs = [run_once(agent, agent.command(str(one), to, once=True, data=work / f"data-{uuid.uuid4().hex[:6]}",
                                          workers=workers), "startup", 1, 0)[0] for _ in range(3)]
    return statistics.median(r.cpu for r in runs), statistics.median(r.wall for r in runs)


def acked(agent: Agent, out: str, err: str) -> int:
    if agent.kind == "tailship":
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
        self.finished = threading.Event()  # every line written (set before `written` is final)

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
            self.finished.set()


def services(*args: str) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "services"), *args], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: scripts/services {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r.stdout.strip()


def follow_run(agent: Agent, bootstrap: str, work: Path, rate: int, seconds: float, workers: int,
               partitions: int, stall: float = 0.0, latency: Latency | None = None) -> Run:
    """Fixed-rate writer -> agent (following) -> Kafka, a consumer measuring latency; with
    `stall`, the broker is stopped that long after a fifth of the run."""
    d = work / f"{agent.name}-follow-{uuid.uuid4().hex[:6]}"
    (d / "containers").mkdir(parents=True)
    log = d / "containers" / f"bench-0_load_app-{uuid.uuid4().hex * 2}.log"  # a kubelet name
    log.touch()
    topic = create_topic(bootstrap, partitions)
    cmd = agent.command(str(log), f"kafka://{bootstrap}/{topic}", once=False, data=d / "data",
                        workers=workers, latency=latency)
    errlog = open(d / "agent.err", "wb")  # noqa: SIM115 - a file, not a pipe nobody reads
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog,
                         cwd=agent.path if agent.kind == "tailship" else ROOT, env=agent.env())
    errlog.close()  # the child has its own descriptor
    w = Watch(p.pid)
    cpu0 = w.settle()  # started: only what follows is the work
    broker = Broker(bootstrap, SERVICES_STATE)
    b0 = broker.cpu()
    writer = RateWriter(log, rate, seconds)
    latencies: list[float] = []
    got = Consumed()
    wait = max(60.0, stall * 6) + seconds  # a timeout only: the consumer stops once it has every line

    def consumer() -> None:  # concurrently with the writer: latency is write -> consumed
        def expect() -> int:  # one more than written until the writer is done (also before it starts)
            return writer.written + (0 if writer.finished.is_set() else 1)
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
    b1 = broker.cpu()
    p.send_signal(signal.SIGTERM)
    cpu = reap(p, timeout=60)
    w.stop()
    # wall = the writer's run: lines/s is the offered rate; CPU is from the start of the writer
    # to the agent's exit (the drain included, the start-up not)
    run = Run(agent.name, "stall" if stall else "latency", workers=workers, wall=writer.elapsed or seconds,
              cpu=cpu - cpu0, rss=w.peak, rss_proc=w.peak_proc, lines=writer.written, bytes=writer.bytes,
              lost=writer.written - len(got.seqs), dups=got.dups, bad_keys=got.bad_keys,
              broker_cpu=None if stall else b1 - b0,  # a restarted broker is another process
              latencies=sorted(latencies))
    if stall:
        # from the broker's return, or the writer's end if later: the time to catch up
        run.recovery = done - max(restarted, t_written)
    return run


def parity(tailship: Agent, go: Agent, work: Path, lines: int = 20_000) -> str:
    """tailship and go on the same small tree (docker and CRI files) to stdout: are their records
    the same job done? Compares per record the ids, timestamp, stream and kubernetes fields (the
    app fields are the payload's own in both); span id apart (the baseline of a1799ed had none)."""
    tree = work / "parity"
    m = generate_tree(tree, seed=11, pods=4, lines=lines, fmt="mixed", avg_bytes=1024, long_every=2000,
                      stack_every=500, with_expected=False, clean=True)
    fmt_of = {f.link: f.format for f in m.files}
    include = str(tree / "containers" / "*.log")
    outs = {}
    for agent in (tailship, go):
        _, out, _ = run_once(agent, agent.command(include, "stdout", once=True,
                                                  data=work / f"data-{agent.name}-p"), "parity", lines, 0)
        recs = {}
        for line in out.splitlines():
            r = orjson.loads(line)
            recs[(r["log"]["file"]["path"], r["log"]["offset"])] = r
        outs[agent.name] = recs
    t, g = outs[tailship.name], outs[go.name]
    fields = ("trace_id", "@timestamp", "stream", "kubernetes")
    both = t.keys() & g.keys()
    parts = []
    for fmt in ("docker", "cri"):
        keys = [k for k in both if fmt_of.get(k[0]) == fmt]
        differ = sum(1 for k in keys if any(t[k].get(f) != g[k].get(f) for f in fields))
        spans = sum(1 for k in keys if t[k].get("span_id") != g[k].get("span_id"))
        parts.append(f"{fmt} {len(keys):,} records in both, {differ} whose {', '.join(fields)} differ, "
                     f"{spans} whose span_id differs")
    traced = sum(1 for r in t.values() if r.get("trace_id"))
    return (f"on {lines:,} records tailship and go wrote {len(t):,} / {len(g):,} records ({traced:,} with "
            f"a trace id); {len(t.keys() ^ g.keys())} records only one of them wrote; "
            + "; ".join(parts) + ".")


def scenario_agents(args: argparse.Namespace, agents: dict[str, Agent]) -> dict[str, list[Agent]]:
    """Scenario -> its agents in run order, from the defaults and --agents."""
    rev = next((n for n in agents if n.startswith("tailship@")), None)
    old = next((n for n in agents if n.startswith("go@")), None)
    alias = {"tailship@rev": rev, "go@old": old}
    chosen = {s: list(DEFAULT_AGENTS[family(s)]) for s in ALL}
    for spec in args.agents:
        target, sep, names = spec.partition("=")
        scen = FAMILIES.get(target, [target])
        if not sep or not set(scen) <= set(ALL):
            raise SystemExit(f"bench: --agents {spec!r}: SCENARIO=AGENT,AGENT with a scenario of "
                             f"{', '.join([*ALL, *FAMILIES])}")
        for s in scen:
            chosen[s] = names.split(",")
    out: dict[str, list[Agent]] = {}
    for s, names in chosen.items():
        resolved = [alias.get(n, n) for n in names]
        unknown = [n for n in resolved if n and n not in agents and n not in alias]
        if unknown and any(n in args.agents_named for n in unknown):
            raise SystemExit(f"bench: --agents names {', '.join(unknown)}; this run has "
                             f"{', '.join(agents)} (and the aliases tailship@rev, go@old)")
        out[s] = [agents[n] for n in resolved if n in agents]
    return out


Startups = dict[tuple[str, str, int], tuple[float, float]]  # (sink, agent, workers) -> (CPU-s, s)


def throughput(scenario: str, agents: list[Agent], tree: Path, m: Manifest, args: argparse.Namespace,
               work: Path, bootstrap: str, starts: Startups) -> list[Run]:
    """The rounds of a --once scenario, agents alternated; every run."""
    include = str(tree / "containers" / "*.log")
    workers = 1 if family(scenario) == "null1" else args.workers
    sink = "kafka" if family(scenario) == "kafka" else "null"
    broker = Broker(bootstrap, SERVICES_STATE) if sink == "kafka" else None
    runs: list[Run] = []
    for rnd in range(args.rounds):
        for agent in agents if rnd % 2 == 0 else agents[::-1]:
            key = (sink, agent.name, workers)
            if key not in starts:
                topic = create_topic(bootstrap, args.partitions) if sink == "kafka" else ""
                starts[key] = startup(agent, work, "null" if sink == "null" else f"kafka://{bootstrap}/{topic}",
                                      workers)
            topic = create_topic(bootstrap, args.partitions) if sink == "kafka" else ""
            to = "null" if sink == "null" else f"kafka://{bootstrap}/{topic}"
            cmd = agent.command(include, to, once=True, data=work / f"data-{uuid.uuid4().hex[:6]}",
                                workers=workers)
            b0 = broker.cpu() if broker else 0.0
            run, out, err = run_once(agent, cmd, scenario, m.total_records, m.total_bytes, workers)
            run.broker_cpu = broker.cpu() - b0 if broker else None
            run.startup_cpu, run.startup_wall = starts[key]
            if sink == "null":
                run.lost = m.total_records - acked(agent, out, err)
            else:
                got = asyncio.run(consume(bootstrap, topic, m.total_records, 600))
                run.lost = m.total_records - len(got.seqs)
                run.dups, run.bad_keys = got.dups, got.bad_keys
            runs.append(run)
            print(f"{scenario:13} {agent.name:18} round {rnd + 1}: {run.cpu_per_m:6.2f} CPU-s/M lines "
                  f"(gross {run.gross_cpu_per_m:.2f}, start-up {100 * run.startup_share:.1f} %) "
                  f"{run.lines_per_s:10,.0f} lines/s  RSS {run.rss >> 20} MiB (largest "
                  f"{run.rss_proc >> 20})  lost {run.lost}", file=sys.stderr)
    return runs


def profile_null(agent: Agent, tree: Path, scenario: str, work: Path, out: Path, name: str) -> list[str]:
    """A py-spy profile of one tailship worker reading `tree` to the null sink; report lines."""
    path = out / f"{name}-profile-{scenario}.txt.gz"
    out.mkdir(parents=True, exist_ok=True)
    cmd = agent.command(str(tree / "containers" / "*.log"), "null", once=True,
                        data=work / f"data-prof-{uuid.uuid4().hex[:6]}", workers=1)
    rc, err = prof.record(cmd, path, agent.path, agent.env())
    if rc != 0 or not path.exists():
        return ["", f"### Profile: {scenario}", "", f"py-spy failed ({rc}): {err[-500:]}"]
    rows, samples, idle = prof.summarize(prof.load(path))
    print(f"profile {scenario}: {samples:,} samples -> {path}", file=sys.stderr)
    return ["", f"### Profile: {scenario}, one tailship worker (`{path.name}`)", "",
            *prof.table(rows, samples, idle)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run of a few minutes (30,000 lines, 1 round, short follow scenarios); "
                         "writes to bench/work/results unless --out")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 3, quick 1)")
    ap.add_argument("--stall-rounds", type=int, default=1, help="rounds of the stall scenario (default 1)")
    ap.add_argument("--lines", type=int,
                    help="records per throughput workload (default 1,500,000; quick 30,000)")
    ap.add_argument("--scenarios", default=",".join(ALL),
                    help=f"comma-separated: {', '.join(ALL)}, the families null, null1, kafka; or manyfiles")
    ap.add_argument("--agents", action="append", default=[], metavar="SCENARIO=AGENT,...",
                    help="agents of a scenario or family (repeatable), e.g. kafka=tailship,go,tailship@rev")
    ap.add_argument("--tailship-rev", help="also run tailship as it was at this git revision")
    ap.add_argument("--go-old-rev", default="a1799ed", help="also run the Go baseline of this revision")
    ap.add_argument("--no-go-old", action="store_true", help="no old Go baseline")
    ap.add_argument("--python", default=sys.executable, help="interpreter tailship runs on (with its deps)")
    ap.add_argument("--kafka", help="bootstrap host:port (default: start one with scripts/services)")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of each benchmark topic")
    ap.add_argument("--latency-linger-ms", type=int, default=10,
                    help="latency scenario: batch linger of both agents "
                         "(tailship batch.linger_ms, Go -linger)")
    ap.add_argument("--latency-kafka-linger-ms", type=int, default=5,
                    help="latency scenario: Kafka producer linger "
                         "(tailship sink.kafka.linger_ms, Go -kafka-linger)")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy profile of one tailship worker per null scenario")
    ap.add_argument("--out", help="results directory (default bench/results; quick: bench/work/results)")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=0,
                    help="tailship's worker processes (default 0: one per CPU, as the agent does)")
    ap.add_argument("--files", type=int, default=10_000, help="manyfiles: idle container files")
    ap.add_argument("--agent-root", default=str(ROOT),
                    help="manyfiles: run the agent from this checkout (to compare with another)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else QUICK_RESULTS if args.quick else RESULTS
    if args.scenarios == "manyfiles":  # tailship alone: the Go baseline has no part in it
        from bench import manyfiles

        with tempfile.TemporaryDirectory(prefix="tailship-bench-") as scratch:
            return manyfiles.main(argv if argv is not None else sys.argv[1:], args.quick,
                                  Path(args.work or scratch), out, args.files, Path(args.agent_root))
    t_start = time.monotonic()
    load0 = os.getloadavg()
    args.rounds = args.rounds or (1 if args.quick else 3)
    lines = args.lines or (30_000 if args.quick else 1_500_000)
    scenarios: list[str] = []
    for s in args.scenarios.split(","):
        for x in FAMILIES.get(s, [s]):
            if x not in ALL:
                raise SystemExit(f"bench: unknown scenario {x!r} (one of {', '.join([*ALL, *FAMILIES])})")
            if x not in scenarios:
                scenarios.append(x)
    if args.kafka and "stall" in scenarios:
        raise SystemExit("bench: the stall scenario stops and restarts the broker of scripts/services; "
                         "it cannot be run against --kafka")
    args.agents_named = {n for spec in args.agents for n in spec.partition("=")[2].split(",")}
    # absolute (tailship@REV runs in another directory), the venv's link itself kept, not resolved
    if os.sep in args.python:
        args.python = os.path.abspath(args.python)
    else:
        args.python = shutil.which(args.python) or args.python
    interpreter = python_version(args.python)
    agents = make_agents(args.python, args.tailship_rev, None if args.no_go_old else args.go_old_rev)
    by_scenario = scenario_agents(args, agents)
    tmp = tempfile.TemporaryDirectory(prefix="tailship-bench-") if not args.work else None
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    needs_kafka = any(family(s) in ("kafka", "latency", "stall") for s in scenarios)
    bootstrap = args.kafka or (services("up", "kafka") if needs_kafka else "")
    name = f"{dt.datetime.now():%Y-%m-%d}-{platform.node() or 'host'}"
    par = parity(agents["tailship"], agents["go"], work)
    print(f"parity  {par}", file=sys.stderr)
    starts: Startups = {}
    results: report.Results = {}
    profiles: list[str] = []
    trees: dict[str, tuple[Path, Manifest]] = {}
    latency = Latency(args.latency_linger_ms, args.latency_kafka_linger_ms)
    for scenario in scenarios:
        agents_here = by_scenario[scenario]
        if not agents_here:
            print(f"{scenario}: no agent to run", file=sys.stderr)
            continue
        runs: dict[str, list[Run]] = {a.name: [] for a in agents_here}
        if family(scenario) in ("null", "null1", "kafka"):
            fmt = scenario.split("-")[1]
            if fmt not in trees:  # one tree per format (~1.5 GB each), generated once
                tree = work / f"tree-{fmt}"
                # 16 containers: a node runs dozens; tailship's workers take whole files
                trees[fmt] = (tree, generate_tree(tree, seed=7, pods=16, lines=lines, fmt=fmt, avg_bytes=1024,
                                                  long_every=2000, stack_every=500, with_expected=False,
                                                  clean=True))
            tree, m = trees[fmt]
            for run in throughput(scenario, agents_here, tree, m, args, work, bootstrap, starts):
                runs[run.agent].append(run)
            if args.profile and family(scenario) == "null" and "tailship" in runs:
                profiles += profile_null(agents["tailship"], tree, scenario, work, out, name)
        else:
            stall = scenario == "stall"
            rounds = args.stall_rounds if stall else args.rounds
            for rnd in range(rounds):
                for agent in agents_here if rnd % 2 == 0 else agents_here[::-1]:
                    if stall:
                        run = follow_run(agent, bootstrap, work, 5_000, 15 if args.quick else 75,
                                         args.workers, args.partitions, stall=5 if args.quick else 60)
                    else:
                        run = follow_run(agent, bootstrap, work, 10_000, 5 if args.quick else 30,
                                         args.workers, args.partitions, latency=latency)
                    runs[agent.name].append(run)
                    lat = f"p99 {report.pct(run.latencies, 0.99) * 1000:.0f} ms" if run.latencies else ""
                    print(f"{scenario:13} {agent.name:18} round {rnd + 1}: {run.cpu_per_m:6.2f} "
                          f"CPU-s/M lines RSS {run.rss >> 20} MiB {lat} lost {run.lost}", file=sys.stderr)
        results[scenario] = {a: report.median_run(rs) for a, rs in runs.items()}
    cmdline = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    minutes = (time.monotonic() - t_start) / 60
    load = f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    header = header_lines(args, agents, interpreter, cmdline.strip(), par, starts, lines, latency, minutes,
                          load)
    rev = next((n for n in agents if n.startswith("tailship@")), None)
    old = next((n for n in agents if n.startswith("go@")), None)
    md = out / f"{name}.md"
    report.write(md, header, results, rev, old, profiles, notes(agents))
    try:
        report.chart(results, out / f"{name}.png")
    except ImportError:
        pass
    print(md.read_text())
    print(f"report: {md} ({minutes:.1f} min)", file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    # lost or wrongly keyed lines fail the run; duplicates (at-least-once delivery after an
    # outage) are reported, not failed
    bad = sum(r.lost + r.bad_keys for by in results.values() for r in by.values())
    return 1 if bad else 0


def header_lines(args: argparse.Namespace, agents: dict[str, Agent], interpreter: str, cmdline: str,
                 par: str, starts: Startups, lines: int,
                 latency: Latency, minutes: float, load: str) -> list[str]:
    who = "; ".join(f"`{a.name}`: {a.source}" for a in agents.values())
    st = ", ".join(f"{a}{' (1 worker)' if w == 1 else ''} → {s} {c:.2f} CPU-s / {wall:.2f} s"
                   for (s, a, w), (c, wall) in sorted(starts.items()))
    return [f"# tailship vs the Go baseline — {report.stamp()}", "",
            f"- Command: `{cmdline}` ({minutes:.0f} minutes)",
            f"- Agents: {who}",
            f"- Interpreter (tailship): Python {interpreter}; {go_version()}",
            f"- Machine: {report.machine()}; load average (1 min) {load}: other work on the "
            "machine shares its cores",
            f"- Workload: {lines:,} records per throughput run (`bench.generate`, seed 7, 16 container "
            "files of one format, ~1 KB lines: JSON payloads with trace ids in several conventions, "
            "16 KiB+ split lines every 2,000 records, stack traces every 500)",
            f"- Rounds: {args.rounds} (agents alternated; medians), stall {args.stall_rounds}; tailship "
            f"workers: {args.workers or 'one per CPU'}; topics with {args.partitions} partition(s)",
            f"- Latency setting (both agents): batch linger {latency.batch_ms} ms, Kafka linger "
            f"{latency.kafka_ms} ms",
            f"- Start-up (one-line file, median of 3; subtracted from the throughput runs): {st or 'none'}",
            f"- Same job: {par}"]


def notes(agents: dict[str, Agent]) -> list[str]:
    out = ["CPU = user + sys of the agent's process tree from the kernel at its exit (wait4); broker "
           "CPU = the Kafka JVM's user + sys over the agent's run (it shares the cores); peak RSS = "
           "VmHWM sampled every 50 ms: the largest process (a worker, for tailship) and the sum over "
           "the tree.", "",
           "Kafka on both sides: zstd level 1, acks=all, idempotent, key = trace id. aiokafka keeps "
           "one produce request in flight per broker connection; franz-go's idempotent producer up "
           "to five.", ""]
    dropped = {a.name: sorted(a.dropped) for a in agents.values() if a.dropped}
    for name, flags in dropped.items():
        out.append(f"`{name}` lacks the flags {', '.join('-' + f for f in flags)}: not given to it.")
        out.append("")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
