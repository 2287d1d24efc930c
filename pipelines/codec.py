"""zstd with reusable contexts, and NDJSON framing of a batch (one join, no per-record Python work).

Output files are concatenations of complete zstd frames, one per batch (a valid .zst stream for
`zstdcat`). Frames carry their content size and a checksum, so a frame torn by a crash is told
apart from a complete one: `split_frames` returns the complete frames and where they end.
"""

from __future__ import annotations

from itertools import chain

import zstandard

from pipelines.records import Batch

_READ_CHUNK = 1 << 20  # compressed bytes handed to a decompressor at once (bounds copying)


class ZstdCodec:
    """One compressor and one decompressor context, reused for every call (not thread-safe)."""

    def __init__(self, level: int = 3) -> None:
        self.level = level
        self._c = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data: bytes) -> bytes:
        """One complete zstd frame; frames can be concatenated into a valid .zst stream."""
        return self._c.compress(data)

    def decompress(self, data: bytes) -> bytes:
        """All frames of `data` (a concatenation of frames), decompressed; ValueError if one is torn."""
        frames, end = split_frames(data, self._d)
        if end != len(data):
            raise ValueError(f"zstd data truncated or corrupt at byte {end} of {len(data)}")
        return b"".join(frames)


def split_frames(data: bytes, dctx: zstandard.ZstdDecompressor | None = None) -> tuple[list[bytes], int]:
    """The decompressed content of each complete, valid frame, and the byte offset where they end.

    Reading stops at the first frame that is cut short or fails its checksum (a crash mid-write,
    or zeros a file system left after it); everything from there on is not returned.
    """
    dctx = dctx or zstandard.ZstdDecompressor()
    view = memoryview(data)
    frames: list[bytes] = []
    pos = 0
    while pos < len(view):
        try:
            content, used = _one_frame(dctx, view[pos:])
        except zstandard.ZstdError:
            break
        if used < 0:
            break
        frames.append(content)
        pos += used
    return frames, pos


def _one_frame(dctx: zstandard.ZstdDecompressor, view: memoryview) -> tuple[bytes, int]:
    """(content, compressed size) of the frame at the start of `view`; size -1 if it is incomplete."""
    obj = dctx.decompressobj()
    parts: list[bytes] = []
    pos = 0
    while not obj.eof and pos < len(view):
        chunk = view[pos:pos + _READ_CHUNK]
        pos += len(chunk)
        parts.append(obj.decompress(chunk))
    if not obj.eof:
        return b"", -1
    return b"".join(parts), pos - len(obj.unused_data)


def encode_ndjson(batch: Batch) -> bytes:
    """Every record of the batch, one per line, newline-terminated; b"" for an empty batch."""
    # one join over all records plus a final b"" (which yields the trailing newline): one copy
    records = chain.from_iterable(seg.records for seg in batch.segments)
    return b"\n".join(chain(records, (b"",)))
