"""The file sink: rotating zstd-compressed NDJSON files, readable with `zstdcat`.

Each batch is appended as one complete zstd frame and fsynced before `send` returns: the
acknowledgement means durable. Concatenated frames are a valid .zst stream. Every start opens a new
file, and so does the attempt after a failed write, so a torn frame (crash mid-write) is always
the last thing in its file; `read_ndjson_zst` returns the complete records before it.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import zstandard

from pipelines.codec import ZstdCodec, encode_ndjson
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch

SUFFIX = ".ndjson.zst"


class FileSink:
    name = "file"

    def __init__(self, directory: str, compression_level: int = 3,
                 rotate_bytes: int = 64 << 20) -> None:
        self.dir = Path(directory)
        self.codec = ZstdCodec(compression_level)
        self.rotate_bytes = rotate_bytes
        self._fd: int | None = None
        self._path: Path | None = None
        self._written = 0
        self._seq = 0
        self._closed = True
        self._ok = True

    async def start(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise FatalSinkError(self.name, f"output directory {str(self.dir)!r} is not writable: "
                                 f"{exc.strerror or exc}") from exc
        self._closed = False

    async def send(self, batch: Batch) -> None:
        if self._closed:
            raise FatalSinkError(self.name, "send after close")
        data = encode_ndjson(batch)
        if not data:
            return
        frame = self.codec.compress(data)
        await asyncio.to_thread(self._write, frame, len(data))

    def _write(self, frame: bytes, raw_len: int) -> None:
        try:
            if self._fd is None or self._written >= self.rotate_bytes:
                self._open_next()
            assert self._fd is not None
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self._written += raw_len
            self._ok = True
        except OSError as exc:
            self._ok = False
            name = self._path.name if self._path else str(self.dir)
            self._close_fd()  # the next attempt starts a new file: no data after a torn frame
            raise RetriableSinkError(self.name, f"write to {name} failed: {exc.strerror or exc}") from exc

    def _open_next(self) -> None:
        self._close_fd()
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._path = self.dir / f"tailship-{stamp}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._written = 0
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new name survives a crash
        finally:
            os.close(dfd)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    async def close(self, timeout_secs: float) -> None:
        self._closed = True
        self._close_fd()

    def healthy(self) -> bool:
        return self._ok and not self._closed


def read_ndjson_zst(path: str | os.PathLike[str]) -> list[bytes]:
    """Complete records of one output file; a torn final frame (crash mid-write) is ignored."""
    data = Path(path).read_bytes()
    out = bytearray()
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    try:
        while chunk := reader.read(1 << 20):
            out += chunk
    except zstandard.ZstdError:
        pass  # torn frame at the end
    text = bytes(out)
    end = text.rfind(b"\n")
    return text[:end].split(b"\n") if end >= 0 else []


def read_dir(directory: str | os.PathLike[str]) -> list[bytes]:
    """Records of every output file in a directory, files in name (= creation) order."""
    files = sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX))
    return [rec for f in files for rec in read_ndjson_zst(f)]
