"""kill -9 while a file grows: the shared part of the crash tests of every sink."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path


def live_writer(path: Path, total: int, per_sec: int, stop: threading.Event) -> None:
    """Appends `live <n>` lines in small bursts at a bounded rate (a container writing)."""
    n = 0
    with open(path, "a", buffering=1) as f:
        while n < total and not stop.is_set():
            burst = min(per_sec // 50, total - n)
            f.write("".join(f"live {i}\n" for i in range(n, n + burst)))
            n += burst
            time.sleep(0.02)


def kill_while_writing(cmd: list[str], live: Path, total: int, *, seed: int,
                       pause: tuple[float, float], per_sec: int = 8000, min_kills: int = 3) -> int:
    """Start `cmd`, kill -9 it after a random pause, start it again, ... while `live` grows to
    `total` lines (and at least `min_kills` times); returns how many times it was killed."""
    stop = threading.Event()
    writer = threading.Thread(target=live_writer, args=(live, total, per_sec, stop), daemon=True)
    writer.start()
    rnd = random.Random(seed)
    kills = 0
    try:
        while writer.is_alive() or kills < min_kills:
            p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(*pause))
            p.kill()
            p.wait(timeout=30)
            kills += 1
    finally:
        stop.set()
        writer.join(timeout=30)
    return kills
