"""Where things live under `data_dir`: the one place that spells out the on-disk layout.

    <data_dir>/                      one process (workers = 1)
        checkpoints.json             read positions (agent.checkpoints)
        buffer/                      disk buffer (buffer.type = "disk"); several sinks:
            <sink>/seg-*.tsb         one directory per sink
        deadletter/                  records a sink can never accept, with the reason
            <sink>.ndjson            (pipelines.deadletter): the segment written to,
            <sink>.<n>.ndjson        sealed segments, oldest = smallest n
            .lock                    held (shared) by a running agent, (exclusively) by a replay
        out/                         the file sink's output (unless sink.path is set)
        log_metrics/                 state of the log-metrics shipper's own sink
        worker-<i>/                  worker process i (workers > 1): its own checkpoints.json,
                                     buffer/ and deadletter/ as above; output still goes to the
                                     shared out/, in files named per worker
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS = "checkpoints.json"
WORKER_PREFIX = "worker-"


def worker_dir(data_dir: str, index: int, workers: int) -> str:
    """The state directory of worker `index` (the data directory itself for one process)."""
    return data_dir if workers <= 1 else os.path.join(data_dir, f"{WORKER_PREFIX}{index}")


def worker_dirs(data_dir: str) -> list[tuple[int, Path]]:
    """(index, path) of every `worker-<i>` directory present, by index."""
    found = []
    for p in Path(data_dir).glob(f"{WORKER_PREFIX}*"):
        k = p.name.removeprefix(WORKER_PREFIX)
        if k.isdigit() and p.is_dir():
            found.append((int(k), p))
    return sorted(found)


def checkpoints_file(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / CHECKPOINTS


def buffer_root(data_dir: str, configured: str = "") -> str:
    """The disk buffer's directory: `buffer.path`, else `<data_dir>/buffer`."""
    return configured or os.path.join(data_dir, "buffer")


def buffer_dir(root: str, sink: str, several: bool) -> str:
    """One sink's disk buffer: the root itself for the one-sink form (`[sink]`), else a
    directory per sink below it."""
    return os.path.join(root, sink) if several else root


def dead_letter_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "deadletter"


def dead_letter_file(data_dir: str | os.PathLike[str], sink: str) -> Path:
    """The segment of `sink`'s dead letters being written (the sealed ones lie beside it)."""
    return dead_letter_dir(data_dir) / f"{sink}.ndjson"


def out_dir(data_dir: str) -> str:
    """The file sink's default output directory."""
    return os.path.join(data_dir, "out")


def log_metrics_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "log_metrics")
