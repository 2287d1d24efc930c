"""Partitioning compatible with the Java client: murmur2 vectors from Kafka's own unit tests,
agreement with aiokafka's independent implementation, and the keyless rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.sinks.kafka.partition import KeyPartitioner, murmur2, partition_for

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


def test_keys_cached_keyless_rotate_per_batch():
    p = KeyPartitioner(limit=2)
    assert p(b"foobar", 3) == (-790332482 & 0x7FFFFFFF) % 3
    seen = []
    for _ in range(4):
        seen.append({p(None, 3) for _ in range(10)})  # one partition for a whole batch
        p.next_batch()
    assert [len(s) for s in seen] == [1, 1, 1, 1]
    assert [next(iter(s)) for s in seen] == [0, 1, 2, 0]
    for i in range(5):  # the cache stays bounded and answers stay right
        assert p(b"k%d" % i, 7) == partition_for(b"k%d" % i, 7)
    assert len(p._cache) <= 2
