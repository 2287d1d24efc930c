"""`python -m bench --profile`: where one tailship worker spends its time, checkable in the repo.

A profiled run is an extra run of tailship with one worker (`--workers 1`: the agent is then a
single process, the worker itself) under `py-spy record --format raw` (collapsed stacks: one line
per distinct stack, `frame;frame;... count`, leaf last), outside the measured rounds (sampling
takes CPU on the same cores). The raw profile is saved gzipped beside the results file, and the
functions with the most own time (samples where they are the leaf frame) are summarized in it,
with their inclusive share (samples where they are anywhere on the stack).

py-spy comes with the `bench` extra (`pip install -e '.[bench]'`); it attaches with ptrace, which
needs root or CAP_SYS_PTRACE (as in this project's CI and development machines).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE = 200  # samples a second
# Leaf frames of threads that wait and are not seen as idle by py-spy: a thread pool's worker
# waiting for work (`work_queue.get` blocks in C; a running work item shows `_WorkItem.run`
# below it). Their samples are left out and counted apart.
IDLE_LEAVES = frozenset({"_worker (futures/thread.py)"})

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Row:
    function: str
    own: float        # share of all samples where it is the leaf
    inclusive: float  # share of all samples where it is on the stack


def _key(frame: str) -> str:
    """`func (path/to/module.py:123)` → `func (module.py)`: one row per function, not per line."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    short = "/".join(path.split("/")[-2:]) if "/" in path else path
    return f"{m.group('func')} ({short})"


def summarize(raw: str, top: int = 15) -> tuple[list[Row], int, int]:
    """The `top` functions by own time in a py-spy raw profile, the number of samples, and the
    number of idle samples left out (`IDLE_LEAVES`)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_key(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1] in IDLE_LEAVES:
            idle += n
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    rows = [Row(f, c / total, incl[f] / total) for f, c in own.most_common(top)] if total else []
    return rows, total, idle


def table(rows: list[Row], samples: int, idle: int) -> list[str]:
    lines = [f"{samples:,} samples at {RATE} Hz ({idle:,} of idle pool threads left out); own time "
             "includes the C functions a function calls (orjson, zstd: no native frames).", "",
             "| function (module) | own % | inclusive % |", "|---|---|---|"]
    lines += [f"| `{r.function}` | {100 * r.own:.1f} | {100 * r.inclusive:.1f} |" for r in rows]
    return lines


def available() -> str | None:
    """The py-spy executable (beside the interpreter first), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(cmd: list[str], out: Path, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd` under py-spy, the raw profile gzipped to `out`; (exit code, py-spy's stderr)."""
    spy = available()
    if spy is None:
        raise SystemExit("bench: --profile needs py-spy (pip install -e '.[bench]')")
    raw = out.with_suffix("")  # name.txt.gz -> name.txt
    r = subprocess.run([spy, "record", "--format", "raw", "--rate", str(RATE), "--output", str(raw),
                        "--", *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if raw.exists():
        with open(raw, "rb") as src, gzip.open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
    return r.returncode, r.stderr


def load(path: Path) -> str:
    with gzip.open(path, "rt") as f:
        return f.read()
