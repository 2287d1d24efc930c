"""Kafka helpers shared by the benchmark runner and the Kafka tests."""

from __future__ import annotations


async def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Create `topic` with `partitions` partitions and replication factor 1."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
