"""The fault-injection harness: containers writing at a steady rate, the agent as a real process
(`tailship run --config`), a consumer reading back from the real destination, readiness polled
through the fault, and the figures each scenario prints and checks.

A scenario is

    with Scenario("kafka broker kill -9", writer, receiver, agent) as sc:
        sc.wait_flowing()
        with sc.fault():
            ... break the server ..., wait on a condition, ... repair it ...
        figures = sc.finish()           # stop writing, wait for the rest, stop the agent
    figures.check()                     # prints the row, asserts 0 lost

Figures (one row per scenario, printed with `pytest -s`):

* written: lines the writer appended (every line carries a unique `seq`).
* delivered: distinct `seq`s read back from the destination.
* duplicates: extra copies read back (Kafka: a record seen n times counts n - 1; Elasticsearch
  keeps one document per line by its deterministic `_id`, so the re-sent writes are counted from
  the documents' `_version` instead: a document written n times counts n - 1).
* lost: written - delivered, after waiting for the rest; must be 0.
* fault s: how long the fault lasted (the scenario's `fault()` block).
* first s: from the fault's end (the server serves again, the secret is updated, the topic is
  created: what the scenario's `fault()` block ends on) to the first arrival of a line the fault
  held back (written during the fault and not arrived by its end); "-" when it held none back.
* recovery s: from the fault's end until every line written before the fault's end had arrived
  (caught up). Arrival is when the consumer saw the line: Kafka at fetch time, Elasticsearch once
  a refresh (every second) made it searchable, so the figures include up to ~1 s of that.
* readiness: what /readyz answered from the fault's start until caught up, as the sequence of
  distinct answers with the time of each change after the fault's start (`down` = no answer).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import free_port

TAILSHIP = [sys.executable, "-m", "agent"]
RATE = int(os.environ.get("TAILSHIP_FAULT_RATE", "10000"))   # lines per second, all containers
TICK = 0.02                                                   # the writer's burst interval


# -- containers ------------------------------------------------------------------------------------

def kubelet_container(root: Path, namespace: str, pod: str = "writer-0") -> Path:
    """A container of `namespace` in the kubelet layout (its 0.log, and the containers/ link the
    agent tails, whose name gives the record's kubernetes.* fields); the real file."""
    uid = f"{abs(hash((namespace, pod))) % 10**8:08d}-0000-0000-0000-000000000000"
    real = root / "pods" / f"{namespace}_{pod}_{uid}" / "app" / "0.log"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"")
    link = root / "containers" / f"{pod}_{namespace}_app-{uid.replace('-', '')[:16] * 4}.log"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    return real


class Writer(threading.Thread):
    """Appends CRI lines (`<time> stdout F {"seq": n, ...}`) to `files` at `rate` lines/s in
    total, line n to files[n % len(files)], in bursts every 20 ms (a container's runtime writing).
    `written` is how many lines are on disk; `written_by(t)` how many were at time t."""

    def __init__(self, files: list[Path], rate: int = RATE, payload_bytes: int = 160) -> None:
        super().__init__(name="fault-writer", daemon=True)
        self.files = files
        self.rate = rate
        self.filler = "x" * max(0, payload_bytes - 40)
        self.written = 0
        self._marks: list[tuple[float, int]] = [(0.0, 0)]
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def file_of(self, seq: int) -> int:
        return seq % len(self.files)

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # surfaced by stop(): a dead writer must fail the test
            self.error = exc

    def _write(self) -> None:
        outs = [open(f, "ab") for f in self.files]  # noqa: SIM115 - closed below
        try:
            t0 = time.monotonic()
            while not self._halt.is_set():
                due = int((time.monotonic() - t0) * self.rate)
                n, end = self.written, min(due, self.written + self.rate)  # at most 1 s at once
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                lines: list[list[bytes]] = [[] for _ in outs]
                for seq in range(n, end):
                    lines[seq % len(outs)].append(
                        f'{stamp}.{seq % 10**9:09d}Z stdout F {{"seq": {seq}, "msg": "{self.filler}"}}\n'
                        .encode())
                for out, chunk in zip(outs, lines, strict=True):
                    if chunk:
                        out.write(b"".join(chunk))
                        out.flush()
                self.written = end
                self._marks.append((time.monotonic(), end))
                self._halt.wait(TICK)
        finally:
            for out in outs:
                out.close()

    def written_by(self, t: float) -> int:
        """Lines on disk at monotonic time t."""
        i = bisect.bisect_right(self._marks, (t, float("inf"))) - 1
        return self._marks[max(i, 0)][1]

    def wait_written(self, n: int, timeout: float = 60) -> None:
        """Until `n` lines are on disk (a fault lasts while the containers write that much)."""
        poll(lambda: self.written >= n, timeout, f"{n} lines written", lambda: f"({self.written})")

    def stop(self) -> int:
        self._halt.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}")
        return self.written


def poll(cond: Callable[[], bool], timeout: float, what: str,
         got: Callable[[], str] = lambda: "") -> None:
    """Poll `cond` every 50 ms until true; fail naming `what` (and `got()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} {got()}")
        time.sleep(0.05)


# -- reading back ----------------------------------------------------------------------------------

class Received:
    """What a receiver read back: first arrival time of each seq and how many copies arrived."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.copies: Counter[int] = Counter()
        self.lock = threading.Lock()

    def add(self, seqs: list[int], t: float) -> None:
        with self.lock:
            for s in seqs:
                self.copies[s] += 1
                self.first.setdefault(s, t)

    def count(self) -> int:
        return len(self.first)

    def any(self, cond: Callable[[int], bool]) -> bool:
        """Whether a seq for which `cond` holds has arrived."""
        with self.lock:
            return any(cond(s) for s in self.first)

    def wait_any(self, cond: Callable[[int], bool], timeout: float, what: str) -> None:
        """Until a seq for which `cond` holds has arrived."""
        poll(lambda: self.any(cond), timeout, what)

    def has_all(self, n: int, only: Callable[[int], bool] | None = None) -> bool:
        with self.lock:
            return all(s in self.first for s in range(n) if only is None or only(s))


class Receiver(threading.Thread):
    """Reads the destination back in a thread, into `self.got`, until `stop()`."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name=type(self).__name__)
        self.got = Received()
        self.stopping = threading.Event()
        self.errors: Counter[str] = Counter()

    def duplicates(self) -> int:
        return sum(c - 1 for c in self.got.copies.values())

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(30)


class KafkaReceiver(Receiver):
    """A group-less consumer of every topic matching `pattern` from the beginning; new topics
    are picked up within a second (metadata refreshed that often). A copy is a record at a new
    offset: a partition read again from its start is not counted twice."""

    def __init__(self, bootstrap: str, pattern: str) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.pattern = pattern

    def run(self) -> None:
        # the consumer logs an error per attempt while the broker is down: expected here
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        try:
            asyncio.run(self._consume())
        finally:
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, metadata_max_age_ms=1000,
                             max_partition_fetch_bytes=4 << 20, request_timeout_ms=5000,
                             retry_backoff_ms=100)
        c.subscribe(pattern=self.pattern)
        await c.start()
        read: dict[Any, int] = {}  # the highest offset read of each partition
        try:
            while not self.stopping.is_set():
                try:
                    batches = await c.getmany(timeout_ms=200, max_records=20000)
                except Exception as exc:  # the broker is down: the consumer reconnects by itself
                    self.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                now = time.monotonic()
                for tp, msgs in batches.items():
                    # a new topic matching the pattern reassigns every partition, which starts
                    # again from the earliest offset: records read before are not copies
                    seen = read.get(tp, -1)
                    self.got.add([orjson.loads(m.value)["seq"] for m in msgs if m.offset > seen], now)
                    if msgs:
                        read[tp] = max(seen, msgs[-1].offset)
        finally:
            await c.stop()


class EsReceiver(Receiver):
    """Polls `index` for documents by `_seq_no` (the shard's write order), so each poll reads
    only what was written since the last one; re-sent documents appear again (a re-write gets a
    new `_seq_no`), so copies counted here are writes, not documents. Single-shard indices (the
    harness creates the index so)."""

    def __init__(self, url: str, index: str) -> None:
        super().__init__()
        from elasticsearch import Elasticsearch

        self.index = index
        self.es = Elasticsearch(url, request_timeout=10, max_retries=0)

    def run(self) -> None:
        last = -1
        while not self.stopping.is_set():
            try:
                r = self.es.search(index=self.index, query={"range": {"_seq_no": {"gt": last}}},
                                   sort=[{"_seq_no": "asc"}], size=10000, source=["seq"],
                                   seq_no_primary_term=True, track_total_hits=False)
            except Exception as exc:  # the node is down, or the index not there yet
                self.errors[type(exc).__name__] += 1
                self.stopping.wait(0.2)
                continue
            hits = r["hits"]["hits"]
            if hits:
                self.got.add([h["_source"]["seq"] for h in hits], time.monotonic())
                last = hits[-1]["_seq_no"]
            if len(hits) < 10000:
                self.stopping.wait(0.2)

    def duplicates(self) -> int:
        """Re-sent writes of the final documents (`_version` - 1 each), plus any line stored as
        two documents."""
        self.es.indices.refresh(index=self.index)
        pit = self.es.open_point_in_time(index=self.index, keep_alive="2m")["id"]
        docs: Counter[int] = Counter()
        rewrites, after = 0, None
        try:
            while True:
                kw: dict[str, Any] = {"search_after": after} if after else {}
                r = self.es.search(size=10000, pit={"id": pit, "keep_alive": "2m"}, sort=["_shard_doc"],
                                   source=["seq"], version=True, track_total_hits=False, **kw)
                hits = r["hits"]["hits"]
                if not hits:
                    break
                for h in hits:
                    docs[h["_source"]["seq"]] += 1
                    rewrites += h["_version"] - 1
                after = hits[-1]["sort"]
        finally:
            self.es.close_point_in_time(id=pit)
        return rewrites + sum(c - 1 for c in docs.values())

    def stop(self) -> None:
        super().stop()
        self.es.close()


# -- the agent -------------------------------------------------------------------------------------

def toml_value(v: object) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return json.dumps(v) if isinstance(v, str) else str(v)


def agent_config(data: Path, root: Path, port: int, sink: dict[str, object]) -> str:
    """A `tailship run` config over the kubelet tree at `root`: one worker, fast scans and
    checkpoints, /readyz on `port` turning 503 after 2 s of a failing sink, one sink (`sink`:
    its options, dotted keys such as `kafka.topic`) retried at least every second."""
    options = "\n".join(f"{k} = {toml_value(v)}" for k, v in {"retry_max_ms": 1000, **sink}.items())
    return f"""
data_dir = "{data}"
workers = 1
checkpoint_interval_secs = 0.1
shutdown_timeout_secs = 20
[source]
include = ["{root}/containers/*.log"]
scan_interval_secs = 0.2
[metrics]
listen = "127.0.0.1:{port}"
ready_failing_secs = 2
[sink]
{options}
"""


class AgentProcess:
    """`tailship run --config` in a process (stderr to a file); /readyz polled every 0.2 s."""

    def __init__(self, tmp: Path, root: Path, **sink: object) -> None:
        """The agent tailing the tree at `root` into one sink of the options `sink` (see
        agent_config); its data directory, config and stderr under `tmp`."""
        self.port = free_port()
        self.cfg = tmp / "agent.toml"
        self.cfg.write_text(agent_config(tmp / "data", root, self.port, sink))
        self.errpath = tmp / "agent.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.readiness: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._poller = threading.Thread(target=self._poll_ready, name="readyz", daemon=True)

    def start(self) -> None:
        with open(self.errpath, "ab") as err:
            self.proc = subprocess.Popen([*TAILSHIP, "run", "--config", str(self.cfg)], stderr=err,
                                         stdout=subprocess.DEVNULL)
        self._poller.start()

    def _poll_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    status = str(r.status)
            except urllib.error.HTTPError as e:
                status = str(e.code)
            except OSError:
                status = "down"
            self.readiness.append((time.monotonic(), status))
            self._halt.wait(0.2)

    def wait_readiness(self, status: str, timeout: float = 60) -> None:
        """Until /readyz answers `status` (the agent noticed the fault, or got over it)."""
        def ok() -> bool:
            assert self.alive(), f"the agent exited:\n{self.stderr()}"
            return bool(self.readiness) and self.readiness[-1][1] == status
        poll(ok, timeout, f"/readyz {status}", lambda: f"(last {self.readiness[-1:]})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return self.errpath.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait; the exit code."""
        self._halt.set()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"the agent did not stop within {timeout}s:\n{self.stderr()}") from None
        self._poller.join(5)
        return code


# -- a scenario ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Figures:
    scenario: str
    written: int
    delivered: int
    duplicates: int
    lost: int
    fault_s: float
    first_s: float | None
    recovery_s: float
    readiness: str
    note: str = ""

    HEADER = ("| scenario | lines written | delivered | duplicates | lost | fault s | first s "
              "| recovery s | readiness during the fault |")

    def row(self) -> str:
        first = "-" if self.first_s is None else f"{self.first_s:.1f}"
        recovery = "never" if self.recovery_s == float("inf") else f"{self.recovery_s:.1f}"
        note = f" ({self.note})" if self.note else ""
        return (f"| {self.scenario}{note} | {self.written} | {self.delivered} | {self.duplicates} | "
                f"{self.lost} | {self.fault_s:.1f} | {first} | {recovery} | {self.readiness} |")

    def check(self) -> None:
        """Print the row (collected with `pytest -s`), then assert nothing was lost."""
        print(f"\nFAULT {self.HEADER}\nFAULT {self.row()}", flush=True)
        assert self.lost == 0, f"{self.lost} of {self.written} lines lost: {self.row()}"


def readiness_summary(samples: list[tuple[float, str]], start: float, end: float) -> str:
    """The /readyz answers from `start` to `end`: the one at `start`, then each change with its
    time after `start`, e.g. `200 → 503 +2.4s → 200 +9.0s`."""
    before = [status for t, status in samples if t <= start]
    out = before[-1:]
    last = out[0] if out else ""
    for t, status in samples:
        if start < t <= end and status != last:
            out.append(f"{status} +{t - start:.1f}s" if out else status)
            last = status
    return " → ".join(out) or "(not polled)"


class Scenario:
    """Runs writer, receiver and agent for one fault; `finish()` returns the figures.

    `affected(seq)` says which lines the fault concerns (all by default): the first/recovery
    figures are computed over those."""

    def __init__(self, name: str, writer: Writer, receiver: Receiver, agent: AgentProcess,
                 affected: Callable[[int], bool] | None = None) -> None:
        self.name = name
        self.writer = writer
        self.receiver = receiver
        self.agent = agent
        self.affected = affected or Scenario._all
        self.fault_start = self.fault_end = 0.0
        self.note = ""

    @staticmethod
    def _all(_seq: int) -> bool:
        return True

    def __enter__(self) -> Scenario:
        self.receiver.start()
        self.agent.start()
        self.writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.stop()
        if self.agent.alive():
            self.agent.stop()
        self.receiver.stop()

    def wait_flowing(self, lines: int = 20000, timeout: float = 60) -> None:
        """Until `lines` lines arrived at the destination (the agent started and ships)."""
        def ok() -> bool:
            assert self.agent.alive(), f"the agent exited:\n{self.agent.stderr()}"
            return self.receiver.got.count() >= lines
        poll(ok, timeout, f"{lines} lines delivered before the fault",
             lambda: f"(got {self.receiver.got.count()}, errors {dict(self.receiver.errors)})")

    @contextlib.contextmanager
    def fault(self) -> Iterator[None]:
        """The fault's window: from entering the block to leaving it (the repair's end)."""
        self.fault_start = time.monotonic()
        yield
        self.fault_end = time.monotonic()
        assert self.agent.alive(), f"the agent exited during the fault:\n{self.agent.stderr()}"

    def finish(self, after_lines: int = 20000, timeout: float = 120) -> Figures:
        """Write `after_lines` more after the fault, stop writing, wait until every line arrived
        (or the timeout), stop the agent (it must exit 0) and compute the figures."""
        self.writer.wait_written(self.writer.written_by(self.fault_end) + after_lines)
        written = self.writer.stop()
        with contextlib.suppress(AssertionError):  # what is missing is reported as lost below
            poll(lambda: self.receiver.got.has_all(written), timeout, "every line delivered")
        code = self.agent.stop()
        figures = self.figures(written)
        self.receiver.stop()
        assert code == 0, f"the agent exited {code}:\n{self.agent.stderr()}"
        return figures

    def figures(self, written: int) -> Figures:
        got = self.receiver.got
        delivered = sum(1 for s in got.first if s < written)
        before_end = self.writer.written_by(self.fault_end)
        during = range(self.writer.written_by(self.fault_start), before_end)
        held = [got.first[s] for s in during
                if self.affected(s) and s in got.first and got.first[s] > self.fault_end]
        arrivals = [got.first.get(s, float("inf")) for s in range(before_end) if self.affected(s)]
        caught_up = max(arrivals, default=self.fault_end)
        return Figures(
            scenario=self.name, written=written, delivered=delivered,
            duplicates=self.receiver.duplicates(), lost=written - delivered,
            fault_s=self.fault_end - self.fault_start,
            first_s=min(held) - self.fault_end if held else None,
            recovery_s=max(caught_up - self.fault_end, 0.0),
            readiness=readiness_summary(self.agent.readiness, self.fault_start,
                                        min(caught_up, time.monotonic())),
            note="; ".join(filter(None, [self.note, self._affected_duplicates()])))

    def _affected_duplicates(self) -> str:
        """With `affected` given: how many of the copies counted were of the lines the fault
        concerned (Kafka; a hint where duplicates come from)."""
        if self.affected is Scenario._all:
            return ""
        with self.receiver.got.lock:
            n = sum(c - 1 for s, c in self.receiver.got.copies.items() if self.affected(s))
        return f"{n} of the copies are of the affected lines"
