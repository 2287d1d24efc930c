"""zstd with reusable contexts, and NDJSON framing of a batch (one join, no per-record Python work)."""

from __future__ import annotations

import io

import zstandard

from pipelines.records import Batch


class ZstdCodec:
    def __init__(self, level: int = 3) -> None:
        self.level = level
        self._c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data: bytes) -> bytes:
        """One complete zstd frame; frames can be concatenated into a valid .zst stream."""
        return self._c.compress(data)

    def decompress(self, data: bytes) -> bytes:
        """All frames of `data` (a concatenation of frames), decompressed."""
        with self._d.stream_reader(io.BytesIO(data), read_across_frames=True) as r:
            return r.read()


def encode_ndjson(batch: Batch) -> bytes:
    """Every record of the batch, one per line, newline-terminated."""
    parts = [b"\n".join(seg.records) for seg in batch.segments if seg.records]
    return b"\n".join(parts) + b"\n" if parts else b""
