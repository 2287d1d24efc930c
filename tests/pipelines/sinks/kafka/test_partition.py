"""Partitioning compatible with the Java client: murmur2 vectors from Kafka's own unit tests,
agreement with aiokafka's independent implementation, and the keyless rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.sinks.kafka.partition import KeyPartitioner, murmur2, murmur2_many, partition_for

# Apache Kafka's UtilsTest.testMurmur2: key → Utils.murmur2(key) (a Java int)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key,expected", JAVA_VECTORS.items())
def test_murmur2_equals_java(key, expected):
    assert murmur2(key) == expected


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=1000))
def test_agrees_with_aiokafka_default_partitioner(key, n):
    from aiokafka.partitioner import murmur2 as theirs

    assert murmur2(key) & 0xFFFFFFFF == theirs(key)
    assert partition_for(key, n) == (theirs(key) & 0x7FFFFFFF) % n


@given(st.lists(st.binary(max_size=40), max_size=60))
def test_batch_hash_equals_the_scalar_one(keys):
    """murmur2_many (all keys of one length hashed at once) gives murmur2 of each key, for mixed
    lengths, every tail length and groups both below and above the scalar threshold."""
    assert murmur2_many(keys) == [murmur2(k) & 0xFFFFFFFF for k in keys]


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=300))
def test_batch_hash_of_many_keys_of_one_length(n, count):
    keys = [bytes((i * 7 + j * 13 + 5) % 256 for j in range(n)) for i in range(count)]
    assert murmur2_many(keys) == [murmur2(k) & 0xFFFFFFFF for k in keys]


def test_java_vectors_hashed_together():
    keys = [k for k in JAVA_VECTORS for _ in range(10)]  # ten of each: above the scalar threshold
    assert murmur2_many(keys) == [JAVA_VECTORS[k] & 0xFFFFFFFF for k in keys]


@pytest.mark.parametrize("n", [1, 3, 7])
def test_keyed_partitions_and_keyless_rotation_per_batch(n):
    p = KeyPartitioner()
    keys = [b"foobar", None, b"%032x" % 5, None] + [b"%032x" % i for i in range(40)]
    seen = []
    for _ in range(4):
        parts = p.partitions(keys, n)
        assert [q for k, q in zip(keys, parts, strict=True) if k is not None] == [
            partition_for(k, n) for k in keys if k is not None]
        seen.append({q for k, q in zip(keys, parts, strict=True) if k is None})  # one partition for a batch
        p.next_batch()
    assert [len(s) for s in seen] == [1, 1, 1, 1]
    assert [next(iter(s)) for s in seen] == [i % n for i in range(4)]
    assert p.partitions(keys, n)[0] == (-790332482 & 0x7FFFFFFF) % n
