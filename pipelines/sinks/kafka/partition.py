"""Partitioning compatible with the Java client's default: murmur2 of the key, made positive,
modulo the partition count; records without a key stick to one partition per batch, moving on
round-robin from batch to batch."""

from __future__ import annotations

import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


_BLOCKS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 as Kafka computes it (signed result like Java's int)."""
    n = len(data)
    h = (_SEED ^ n) & _MASK
    nblocks = n >> 2
    unpack = _BLOCKS.get(nblocks)
    if unpack is None:
        unpack = _BLOCKS[nblocks] = struct.Struct(f"<{nblocks}I")
    for k in unpack.unpack_from(data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) ^ (k * _M)) & _MASK  # == ((h*M) & MASK) ^ ((k*M) & MASK): one mask fewer
    rest = n & 3
    tail = nblocks * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """Caches key → partition (records of one trace share a key); bounded."""

    def __init__(self, limit: int = 65536) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._limit = limit
        self._sticky = 0

    def __call__(self, key: bytes | None, partitions: int) -> int:
        if key is None:
            return self._sticky % partitions
        p = self._cache.get((key, partitions))
        if p is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            p = self._cache[(key, partitions)] = partition_for(key, partitions)
        return p

    def next_batch(self) -> None:
        """Keyless records move to the next partition with every batch."""
        self._sticky += 1
