"""The state directory before any reading starts: usable, no disk buffer a different worker
count would strand, checkpoints in the store of the process that now reads their file. Where
things live in it is `pipelines.layout`."""

from __future__ import annotations

import os
from pathlib import Path

from agent.filesource.checkpoints import repartition
from agent.filesource.discovery import owner
from agent.settings import Settings
from pipelines import layout
from pipelines.errors import TailshipError


class StartupError(TailshipError):
    """The agent cannot start (data directory unusable, sink unreachable)."""


def prepare_data_dir(path: str) -> None:
    """Create the data directory and prove it is writable, or fail with a clear cause."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(f"data directory {path!r} is not usable: {exc.strerror or exc}") from exc


def check_buffers(s: Settings, workers: int) -> None:
    """A disk buffer written with another `workers` would never be read again (each worker reads
    its own): refuse to start, naming it, rather than leave its records behind."""
    if s.buffer.type != "disk":
        return
    # one process: <buffer.path> or <data_dir>/buffer; worker k: <buffer.path>/worker-k or
    # <data_dir>/worker-k/buffer (see worker_settings)
    candidates = [(layout.buffer_root(s.data_dir, s.buffer.path), 1)]
    for k, wd in layout.worker_dirs(s.buffer.path or s.data_dir):
        candidates.append((str(wd if s.buffer.path else wd / "buffer"), k + 1))
    for d, written_by in candidates:
        expected = written_by == 1 if workers <= 1 else (written_by > 1 and written_by <= workers)
        if expected:
            continue
        held = sum(p.stat().st_size for p in _buffer_segments(d))
        if held:
            raise StartupError(
                f"the disk buffer {d} holds {held} bytes written with "
                f"{'workers = 1' if written_by == 1 else f'at least {written_by} workers'}, which "
                f"workers = {workers} would never deliver: start once more with the earlier "
                f"`workers` until it is empty, or remove it (its records are lost then)")


def _buffer_segments(d: str) -> list[Path]:
    """The disk-buffer files of one process: in `d` (one sink) or in a directory per sink below
    it (`layout.buffer_dir`); not those of worker directories below it (`buffer.path` set)."""
    if not os.path.isdir(d):
        return []
    sinks = [p for p in Path(d).iterdir() if p.is_dir() and not p.name.startswith(layout.WORKER_PREFIX)]
    return [f for folder in [Path(d), *sinks] for f in folder.glob("seg-*.tsb")]


def prepare_state(s: Settings, workers: int) -> None:
    """Before any reading starts: the data directory usable, no disk buffer of another worker
    count left behind, checkpoints in the store of the process that now reads their file."""
    prepare_data_dir(s.data_dir)
    check_buffers(s, workers)
    repartition(s.data_dir, workers, owner)
