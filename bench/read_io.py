"""Does aiofiles pay on the hot read path? Reads a file in chunks both ways and splits lines.

    python -m bench.read_io FILE [--chunk-bytes 1048576] [--rounds 3]

Prints wall and CPU seconds (process CPU, which includes aiofiles' worker thread) per method.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiofiles


async def with_pread(path: str, chunk: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    pos = lines = 0
    try:
        while data := os.pread(fd, chunk, pos):
            pos += len(data)
            lines += len(data.split(b"\n")) - 1
            await asyncio.sleep(0)
    finally:
        os.close(fd)
    return lines


async def with_aiofiles(path: str, chunk: int) -> int:
    lines = 0
    async with aiofiles.open(path, "rb") as f:
        while data := await f.read(chunk):
            lines += len(data.split(b"\n")) - 1
    return lines


def measure(fn, path: str, chunk: int) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    n = asyncio.run(fn(path, chunk))
    return time.perf_counter() - w0, time.process_time() - c0, n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--chunk-bytes", type=int, default=1 << 20)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {"pread": [], "aiofiles": []}
    for _ in range(a.rounds):  # alternate, so machine noise hits both alike
        results["pread"].append(measure(with_pread, a.file, a.chunk_bytes))
        results["aiofiles"].append(measure(with_aiofiles, a.file, a.chunk_bytes))
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{name:9s} lines={runs[0][2]:,} wall={wall:.3f}s cpu={cpu:.3f}s "
              f"cpu/line={cpu / runs[0][2] * 1e6:.2f}us")


if __name__ == "__main__":
    main()
