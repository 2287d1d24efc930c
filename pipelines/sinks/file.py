"""The file sink: rotating zstd-compressed NDJSON files, readable with `zstdcat`.

Each batch is appended as one complete zstd frame and fsynced before `send` returns: the
acknowledgement means durable. Concatenated frames are a valid .zst stream. Files are named
`tailship-<UTC yyyymmddTHHMMSS>-<seq>.ndjson.zst` (`-w<i>-<seq>` for worker i when several worker
processes share the directory); the sequence number continues from the highest one already in
the directory, so name order is creation order even within one second (per worker).

A file is never appended to after a failure: every start opens a new file, and so does the
attempt after a failed write. A torn frame (crash or full disk mid-write) is therefore always the
last thing in its file, and `read_ndjson_zst` returns every complete frame before it.

Retention keeps the directory bounded: once this writer's files (those named with its tag) take
more than `retention_bytes` on disk, or are older than `retention_secs` (by their last write),
the oldest are deleted, whole, never the file being written; each pass is logged and counted
(`pruned_files`, `pruned_bytes`, served as tailship_file_sink_pruned_*_total). It runs at start,
after each rotation and at most once a minute after a write. With several worker processes each
prunes its own files with its share of `retention_bytes` (`agent.supervisor.worker`).

Encoding, compression (which releases the GIL) and the blocking writes run on one writer thread
per sink: batches are written in the order `send` was called, the event loop never waits for
fsync, and `close` cannot close the file under a write that is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pipelines.codec import ZstdCodec, encode_ndjson, split_frames
from pipelines.durable import fsync_dir, write_all
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch

log = logging.getLogger("tailship.sinks.file")

SUFFIX = ".ndjson.zst"
_NAME = re.compile(r"tailship-\d{8}T\d{6}-((?:w\d+-)?)(\d+)" + re.escape(SUFFIX))
T = TypeVar("T")
PRUNE_EVERY_SECS = 60.0  # retention is checked at least this often while batches are written


class FileSink:
    name = "file"

    def __init__(self, directory: str, compression_level: int = 3,
                 rotate_bytes: int = 64 << 20, worker: int | None = None, *,
                 retention_bytes: int = 0, retention_secs: float = 0.0) -> None:
        self.dir = Path(directory)
        # worker processes sharing a directory each number their own files: `-w<i>-<seq>`
        self.tag = "" if worker is None else f"w{worker}-"
        self.rotate_bytes = rotate_bytes
        self.path: Path | None = None     # the file being written, None between files
        self._codec = ZstdCodec(compression_level)  # used on the writer thread only
        self._writer: ThreadPoolExecutor | None = None
        self._fd: int | None = None
        self._written = 0                 # uncompressed bytes in the current file
        self._seq = 0
        self._closed = True
        self._ok = True
        self.retention_bytes = retention_bytes  # 0: no bound
        self.retention_secs = retention_secs    # 0: no bound
        self.pruned_files = 0
        self.pruned_bytes = 0
        self._pruned_at = 0.0                   # monotonic time of the last retention pass

    # -- the Sink interface (event loop) --------------------------------------------------------

    async def start(self) -> None:
        self._writer = self._writer or ThreadPoolExecutor(1, thread_name_prefix="tailship-file-sink")
        await self._on_writer(self._prepare)
        self._closed = False
        self._ok = True

    async def send(self, batch: Batch) -> None:
        if self._closed:
            raise FatalSinkError(self.name, "send before start or after close")
        await self._on_writer(self._write_batch, batch)

    async def close(self, timeout_secs: float) -> None:
        """Close the current file once the write in progress (if any) has ended."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is None:
            return
        done = asyncio.wrap_future(writer.submit(self._close_file))
        writer.shutdown(wait=False)  # the queued close still runs
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_secs)
        except TimeoutError:
            log.warning("file sink: a write to %s is still running after %.1f s; the file is closed "
                        "when it ends", self.path, timeout_secs)

    def healthy(self) -> bool:
        return self._ok and not self._closed

    async def _on_writer(self, fn: Callable[..., T], *args: object) -> T:
        assert self._writer is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    # -- the writer thread ----------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            self._seq = max(self._seq, last_seq(self.dir, self.tag))
            self._prune()
        except OSError as exc:
            raise FatalSinkError(self.name, f"output directory {str(self.dir)!r} is not writable: "
                                 f"{exc.strerror or exc}") from exc

    def _write_batch(self, batch: Batch) -> None:
        data = encode_ndjson(batch)
        if not data:
            return
        frame = self._codec.compress(data)
        try:
            if self._fd is None:
                self._open_next()
            assert self._fd is not None
            write_all(self._fd, frame)
            os.fsync(self._fd)
        except OSError as exc:
            self._ok = False
            failed = self.path
            self._close_file()  # the retry starts a new file: nothing follows a torn frame
            raise RetriableSinkError(self.name, f"write to {failed} failed: "
                                     f"{exc.strerror or exc}") from exc
        self._ok = True
        self._written += len(data)
        if self._written >= self.rotate_bytes:
            self._close_file()  # full: closed now, so readers see it finished; the next batch opens one
            self._prune()
        elif time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECS:
            self._prune()  # files age while nothing rotates

    def _prune(self) -> None:
        """Delete this writer's oldest files beyond `retention_bytes` or `retention_secs`; a
        failure is logged, never raised (the batch was written: retention must not refuse it)."""
        self._pruned_at = time.monotonic()
        if not (self.retention_bytes or self.retention_secs):
            return
        try:
            doomed = over_retention(self.dir, self.tag, self.retention_bytes, self.retention_secs,
                                    keep=self.path if self._fd is not None else None)
        except OSError as exc:
            log.warning("file sink: cannot list %s for retention: %s", self.dir, exc.strerror or exc)
            return
        files = nbytes = 0
        for path, size in doomed:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("file sink: cannot delete %s (retention): %s", path, exc.strerror or exc)
                continue
            files, nbytes = files + 1, nbytes + size
        if files:
            self.pruned_files += files
            self.pruned_bytes += nbytes
            log.info("file sink: deleted the %d oldest file(s) (%d bytes) in %s (retention_bytes %d, "
                     "retention_secs %g)", files, nbytes, self.dir, self.retention_bytes, self.retention_secs)

    def _open_next(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        while True:
            self._seq += 1
            self.path = self.dir / f"tailship-{stamp}-{self.tag}{self._seq:06d}{SUFFIX}"
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue  # another writer in the same directory took this name
        self._written = 0
        fsync_dir(self.dir)  # the new name survives a crash

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        except OSError as exc:  # the data was fsynced (or the write already failed): only log
            log.warning("file sink: closing %s: %s", self.path, exc.strerror or exc)


def over_retention(directory: Path, tag: str, max_bytes: int, max_secs: float,
                   keep: Path | None) -> list[tuple[Path, int]]:
    """The output files named with `tag` to delete, oldest first, with their sizes: those last
    written more than `max_secs` ago, then the oldest until the rest (`keep`, the file being
    written, included and never chosen) take at most `max_bytes` on disk. 0 means no bound."""
    files = []
    for name in os.listdir(directory):
        m = _NAME.fullmatch(name)
        if m and m.group(1) == tag:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(directory / name)
                files.append((int(m.group(2)), directory / name, st.st_size, st.st_mtime))
    files.sort()  # by sequence number: creation order
    total = sum(size for _, _, size, _ in files)
    now = time.time()
    doomed = []
    for _, path, size, mtime in files:
        if path == keep:
            continue
        old = max_secs > 0 and now - mtime > max_secs
        if old or (max_bytes > 0 and total > max_bytes):
            doomed.append((path, size))
            total -= size
    return doomed


def last_seq(directory: str | os.PathLike[str], tag: str = "") -> int:
    """The highest sequence number of the output files in `directory` named with `tag` (0 if none)."""
    seqs = (_NAME.fullmatch(name) for name in os.listdir(directory))
    return max((int(m.group(2)) for m in seqs if m and m.group(1) == tag), default=0)


def read_ndjson_zst(path: str | os.PathLike[str]) -> list[bytes]:
    """The records of every complete frame of one output file; a torn final frame is left out."""
    frames, _ = split_frames(Path(path).read_bytes())
    content = b"".join(frames)
    return content.split(b"\n")[:-1] if content else []


def read_dir(directory: str | os.PathLike[str]) -> list[bytes]:
    """Records of every output file in a directory, files in name (= creation) order."""
    files = sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX))
    return [rec for f in files for rec in read_ndjson_zst(f)]
