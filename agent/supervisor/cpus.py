"""How many workers to run: `workers`, or with `workers = 0` one per CPU this process may use
(its affinity mask capped by the cgroup CPU quota of its container), at most AUTO_MAX_WORKERS.

Kept apart from the rest of the supervisor because `agent.cli` calls `resolve_workers` on every
run, also the single-process ones, and this needs nothing but the settings.
"""

from __future__ import annotations

import contextlib
import math
import os

from agent.settings import Settings

AUTO_MAX_WORKERS = 8              # workers = 0 on a big machine: each worker costs ~70 MiB at rest


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 `cpu.max`
    or v1 `cpu.cfs_quota_us`), rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _cgroup_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs granted by the cgroup CPU quota, None when there is none."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu.max")) as f:
            q, period = f.read().split()[:2]
        return None if q == "max" else int(q) / int(period)
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            q1 = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            p1 = int(f.read())
        return None if q1 <= 0 else q1 / p1
    return None


def resolve_workers(s: Settings) -> int:
    """`workers`, or one per CPU available (at most AUTO_MAX_WORKERS) when 0; always 1 for the
    stdout sink (lines written by several processes to one pipe could interleave)."""
    if any(t.type == "stdout" for t in s.sink_tables().values()):
        return 1
    return s.workers if s.workers > 0 else min(AUTO_MAX_WORKERS, available_cpus())
