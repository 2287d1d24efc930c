#!/usr/bin/env python3
"""Smoke check of the real services started by scripts/services (a standalone script, not a test).

    scripts/services start && python scripts/smoke_services.py            # services already up
    python scripts/smoke_services.py --manage                              # start, check, stop

Needs `aiokafka[zstd]==0.14.0` and `elasticsearch[async]>=8.14,<8.15` in the running Python.
Kafka: an idempotent producer (acks=all, zstd) sends keyed messages to a topic the broker creates
on first use (num.partitions=3), plus one batch through the batch API; a consumer group reads them
all back and commits; where the broker's data dir is local, the on-disk record batches are checked
to be zstd-compressed. Elasticsearch: index, refresh, search, bulk and count with
AsyncElasticsearch. Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICES = HERE / "services"


def service_env() -> dict[str, str]:
    """TAILSHIP_* addresses: from the environment, else from `scripts/services env`."""
    out = subprocess.run([sys.executable, str(SERVICES), "env"], capture_output=True, text=True,
                         check=True).stdout
    values = dict(re.findall(r"export (\w+)=(\S+)", out))
    values.update({k: v for k, v in os.environ.items() if k.startswith("TAILSHIP_")})
    return values


class SmokeFailure(Exception):
    pass


def expect(ok: object, what: str) -> None:
    if not ok:
        raise SmokeFailure(what)


def batch_codecs(data_dir: Path, topic: str) -> dict[int, int]:
    """Compression codec (attributes & 7; 4 = zstd) of every record batch of `topic` on disk."""
    codecs: dict[int, int] = {}
    for seg in data_dir.glob(f"{topic}-*/*.log"):
        buf = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(buf):
            length = struct.unpack_from(">i", buf, pos + 8)[0]
            codec = struct.unpack_from(">h", buf, pos + 21)[0] & 7
            codecs[codec] = codecs.get(codec, 0) + 1
            pos += 12 + length
    return codecs


async def check_kafka(bootstrap: str, n: int = 50) -> str:
    """Produce and consume; returns the topic name."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="zstd",
                                enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, key=f"k{i % 7}".encode(), value=f"message {i}".encode())
                for i in range(n)]
        metas = await asyncio.gather(*sent)
        partitions = await producer.partitions_for(topic)
        expect(len(partitions) == 3, f"auto-created topic has {len(partitions)} partitions, not 3")
        batch = producer.create_batch()
        for i in range(n, n + 10):
            meta = batch.append(key=None, value=f"message {i}".encode(), timestamp=None, headers=[])
            expect(meta is not None, "a 10-message batch filled up")
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    print(f"kafka: produced {n + 10} messages (idempotent, acks=all, zstd) to {topic} over "
          f"{len({m.partition for m in metas})} partitions in {time.monotonic() - t0:.2f}s")

    t0 = time.monotonic()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-group",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < n + 10 and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(m.value for m in msgs)
        await consumer.commit()
    finally:
        await consumer.stop()
    want = {f"message {i}".encode() for i in range(n + 10)}
    expect(len(got) == n + 10 and set(got) == want,
           f"consumed {len(got)} messages, {len(set(got) & want)} of the expected ones")
    print(f"kafka: consumed all {len(got)} back through a consumer group and committed in "
          f"{time.monotonic() - t0:.2f}s")
    return topic


def check_codecs(data_dir: Path, topic: str) -> None:
    if not data_dir.is_dir():
        print(f"kafka: {data_dir} not here (remote broker?): on-disk codec check skipped")
        return
    codecs = batch_codecs(data_dir, topic)
    expect(codecs and set(codecs) == {4}, f"record batch codecs on disk: {codecs} (4 = zstd)")
    print(f"kafka: {sum(codecs.values())} record batches on disk, all zstd-compressed")


async def check_elasticsearch(url: str) -> None:
    from elasticsearch import AsyncElasticsearch

    index = f"smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    es = AsyncElasticsearch(url, request_timeout=30)
    try:
        health = await es.cluster.health(wait_for_status="yellow", timeout="30s")
        nodes = await es.nodes.info()
        version = next(iter(nodes["nodes"].values()))["version"]
        # GET / and HEAD / come from scripts/services' root-info plugin (the integ-test-zip lacks them)
        expect(await es.ping(), "ping (HEAD /) failed: is the tailship-root plugin installed?")
        info = await es.info()
        expect(info["version"]["number"] == version and info["cluster_name"] == health["cluster_name"],
               f"GET / answered {info}")
        r = await es.index(index=index, id="1", refresh="wait_for",
                           document={"@timestamp": "2026-11-24T10:00:00Z", "message": "hello from tailship",
                                     "level": "info"})
        expect(r["result"] == "created", f"index answered {r}")
        hits = (await es.search(index=index, query={"match": {"message": "tailship"}}))["hits"]
        expect(hits["total"]["value"] == 1 and hits["hits"][0]["_source"]["level"] == "info",
               f"search found {hits}")
        ops: list[dict[str, object]] = []
        for i in range(20):
            ops += [{"create": {"_index": index}},
                    {"@timestamp": "2026-11-24T10:00:01Z", "message": f"bulk {i}"}]
        r = await es.bulk(operations=ops, refresh="wait_for")
        expect(not r["errors"], f"bulk errors: {r}")
        count = (await es.count(index=index))["count"]
        expect(count == 21, f"count is {count}, not 21")
        await es.indices.delete(index=index)
    finally:
        await es.close()
    print(f"elasticsearch: {version} ({health['cluster_name']}, {health['status']}): indexed, searched, "
          f"bulk-indexed and counted {count} documents in {time.monotonic() - t0:.2f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manage", action="store_true", help="start the services first, stop them after")
    ap.add_argument("--only", choices=["kafka", "elasticsearch"], help="check one service only")
    args = ap.parse_args()
    names = [args.only] if args.only else ["kafka", "elasticsearch"]
    if args.manage:
        subprocess.run([sys.executable, str(SERVICES), "start", *names], check=True)
    try:
        env = service_env()
        state = Path(env.get("TAILSHIP_SERVICES_STATE") or HERE.parent / ".services")
        if "kafka" in names:
            topic = asyncio.run(check_kafka(env["TAILSHIP_KAFKA_BOOTSTRAP"]))
            check_codecs(state / "kafka" / "data", topic)
        if "elasticsearch" in names:
            asyncio.run(check_elasticsearch(env["TAILSHIP_ES_URL"]))
    except SmokeFailure as e:
        print(f"smoke: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if args.manage:
            subprocess.run([sys.executable, str(SERVICES), "stop", *names], check=False)
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
