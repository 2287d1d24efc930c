"""What `python -m bench` measures of a process: CPU from the kernel, peak RSS, the broker's CPU.

CPU is user + sys of the agent's whole process tree, from the kernel's accounting when the agent
is reaped (wait4 counts every descendant that was waited for), so nothing between two samples is
missed. Peak RSS is each process's high-water mark (VmHWM), sampled every 50 ms: the largest
single process (a worker, for tailship with workers) and the sum over the tree.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil


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

    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)
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


class Broker:
    """The Kafka broker's CPU (user + sys, its JVM's threads) between two points: it shares the
    machine's cores with the agent, so its work for each agent is reported beside the agent's.

    The broker is the process listening on the bootstrap port (found through /proc by psutil),
    else the pid in scripts/services' pid file. Without either (a remote broker) it reads 0."""

    def __init__(self, bootstrap: str, state: Path | None = None) -> None:
        self.pid = self._find(bootstrap, state)

    @staticmethod
    def _find(bootstrap: str, state: Path | None) -> int | None:
        port = int(bootstrap.rsplit(":", 1)[1]) if ":" in bootstrap else 0
        try:
            for c in psutil.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                    return c.pid
        except (psutil.Error, OSError):
            pass
        if state is not None:
            try:
                return int((state / "kafka" / "pid").read_text().strip())
            except (OSError, ValueError):
                return None
        return None

    def cpu(self) -> float:
        if self.pid is None:
            return 0.0
        try:
            t = psutil.Process(self.pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0
