"""The `manyfiles` scenario: one worker following 10,000 idle container files, then 100 of them
written to.

    python -m bench --scenarios manyfiles [--quick] [--files N] [--agent-root DIR]

A kubelet tree of N containers (`containers/*.log` links to `pods/<ns>_<pod>_<uid>/app/0.log`,
one CRI line each) is followed by `tailship tail --to null --workers 1`. Once every line is
acknowledged, the agent's CPU (% of one core, user + sys from the kernel) and RSS are measured
over an idle window; then 100 of the files get 100 lines a second each, and the same figures are
taken while they are written, and every written line must be acknowledged (`lost` otherwise).
Figures are measurements, not pass marks: the run fails (exit 1) only when a line was lost.
`--agent-root` runs the agent from another checkout (to compare with main). Writes
bench/results/<date>-<host>-manyfiles.md (with `--quick`, bench/work/results/: not committed).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

WRITERS = 100
RATE = 100  # lines a second per written file


@dataclass
class Figures:
    files: int
    start_secs: float = 0.0     # until every initial line was acknowledged
    idle_cpu: float = 0.0       # % of one core
    idle_rss: int = 0
    busy_cpu: float = 0.0
    busy_rss: int = 0
    peak_rss: int = 0
    written: int = 0
    lost: int = 0
    stop_secs: float = 0.0      # from SIGTERM to exit


def make_tree(root: Path, files: int) -> None:
    (root / "containers").mkdir(parents=True)
    for i in range(files):
        d = root / "pods" / f"ns{i % 50}_app-{i}_{i:08x}-0000-4000-8000-000000000000" / "app"
        d.mkdir(parents=True)
        (d / "0.log").write_text(f"2026-11-24T10:00:00.000000000Z stdout F idle file {i} seq=0\n")
        (root / "containers" / f"app-{i}_ns{i % 50}_app-{i:064x}.log").symlink_to(d / "0.log")


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except (urllib.error.URLError, OSError):
        return None
    return None


def wait_sent(port: int, want: int, within: float) -> int:
    deadline = time.monotonic() + within
    sent = 0
    while time.monotonic() < deadline:
        sent = int(metric(port, "tailship_records_sent_total") or 0)
        if sent >= want:
            break
        time.sleep(0.5)
    return sent


def cpu_rss(p: psutil.Process, secs: float) -> tuple[float, int]:
    """% of one core over `secs`, and RSS at the end."""
    c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
    time.sleep(secs)
    c1, t1 = sum(p.cpu_times()[:2]), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0), int(p.memory_info().rss)


def write_lines(files: list[Path], secs: float, stop: threading.Event, count: list[int]) -> None:
    """RATE lines a second to each file, in 10 slices a second."""
    per_slice = RATE // 10
    t0 = time.monotonic()
    n = 0
    while not stop.is_set() and time.monotonic() - t0 < secs:
        for f in files:
            with open(f, "a") as fh:
                fh.write("".join(f"2026-11-24T10:00:01.000000000Z stdout F busy seq={n + k}\n"
                                 for k in range(per_slice)))
        n += per_slice
        count[0] += per_slice * len(files)
        time.sleep(max(0.0, t0 + n / RATE - time.monotonic()))


def run(work: Path, files: int, idle_secs: float, busy_secs: float, agent_root: Path) -> Figures:
    tree = work / "manyfiles"
    make_tree(tree, files)
    from tests.conftest import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "agent", "tail", str(tree / "containers" / "*.log"), "--to", "null",
           "--workers", "1", "--format", "cri", "--no-progress", "--data-dir", str(work / "mf-data"),
           "--metrics-listen", f"127.0.0.1:{port}"]
    fig = Figures(files)
    t0 = time.monotonic()
    with open(work / "manyfiles.err", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=agent_root, stderr=err)
    p = psutil.Process(proc.pid)
    try:
        sent = wait_sent(port, files, 600)
        fig.start_secs = time.monotonic() - t0
        if sent < files:
            raise SystemExit(f"bench manyfiles: {sent} of {files} initial lines after 600 s")
        time.sleep(5)  # the first scans' leftovers settle
        fig.idle_cpu, fig.idle_rss = cpu_rss(p, idle_secs)
        written = [0]
        stop = threading.Event()
        targets = sorted((tree / "pods").glob("*/app/0.log"))[:WRITERS]
        w = threading.Thread(target=write_lines, args=(targets, busy_secs, stop, written))
        w.start()
        fig.busy_cpu, fig.busy_rss = cpu_rss(p, busy_secs)
        stop.set()
        w.join()
        fig.written = written[0]
        sent = wait_sent(port, files + fig.written, 120)
        fig.lost = max(0, files + fig.written - sent)
        with open(f"/proc/{proc.pid}/status") as f:
            fig.peak_rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    finally:
        t1 = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fig.stop_secs = time.monotonic() - t1
    return fig


def report(fig: Figures, out: Path, cmdline: str, agent_root: Path, idle: float, busy: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    path = out / f"{now:%Y-%m-%d}-{os.uname().nodename}-manyfiles.md"
    commit = subprocess.run(["git", "-C", str(agent_root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    mib = 1 << 20
    path.write_text(
        f"# tailship manyfiles, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"`{cmdline}` — agent at {commit or agent_root}, one worker, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}\n\n"
        f"| phase | files | CPU % of a core | RSS MiB |\n|---|---|---|---|\n"
        f"| idle ({idle:.0f} s, after all read) | {fig.files:,} | {fig.idle_cpu:.1f} | "
        f"{fig.idle_rss / mib:.0f} |\n"
        f"| {WRITERS} files × {RATE} lines/s ({busy:.0f} s) | {fig.files:,} | {fig.busy_cpu:.1f} | "
        f"{fig.busy_rss / mib:.0f} |\n\n"
        f"Start to every initial line acknowledged: {fig.start_secs:.1f} s. "
        f"Peak RSS {fig.peak_rss / mib:.0f} MiB. Stop (SIGTERM to exit): {fig.stop_secs:.1f} s. "
        f"Lines written while busy: {fig.written:,}; lost: {fig.lost}.\n")
    return path


def main(args: list[str], quick: bool, work: Path, out: Path, files: int, agent_root: Path) -> int:
    idle, busy = (10.0, 10.0) if quick else (30.0, 30.0)
    fig = run(work, files, idle, busy, agent_root)
    cmdline = "python -m bench " + " ".join(args)
    md = report(fig, out, cmdline, agent_root, idle, busy)
    print(md.read_text())
    print(f"report: {md}", file=sys.stderr)
    return 1 if fig.lost else 0
