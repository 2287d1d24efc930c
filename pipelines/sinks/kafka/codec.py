"""zstd at a chosen level for Kafka record batches.

aiokafka compresses a record batch by calling the module-level `zstd_encode` of its record
builder modules (C and pure Python), which always uses level 3 through cramjam. Level 1 costs
about half as much CPU for the same ratio on log lines (shared/PERF-NOTES.md), so the Kafka sink
swaps in an encoder with a reused python-zstandard context at the configured level. The frames are
standard zstd: every consumer decodes them (tests decode through aiokafka's own cramjam path).
The swap itself (process-wide, once per level) is aiokafka_internals.install_zstd_level.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import zstandard


def make_encoder(level: int) -> Callable[..., bytes]:
    local = threading.local()  # a ZstdCompressor is not safe to share between threads

    def zstd_encode(payload: bytes | bytearray | memoryview, level_arg: int | None = None) -> bytes:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        return c.compress(payload)

    return zstd_encode

