"""The Kafka sink: aiokafka's batch API (records appended through its C record builder),
Kafka-native compression, acks=all + idempotence, trace-id keys with Java-compatible partitioning.

Delivery of one tailship batch: records are grouped by (topic, partition) in order, each group is
cut into record batches of at most `max_batch_bytes`, all are handed to the producer at once and
awaited. Groups acknowledged before a retriable failure are remembered, so the sender's retry of
the batch only re-sends what is missing (no duplicates from partial success). Records larger than
`max_record_bytes`, and record batches the broker rejects for their content (too large, invalid
topic), go to the dead-letter file with the reason. An unreachable bootstrap or refused
credentials at start is a FatalSinkError naming the brokers and the cause; credentials refused
later drop the producer, so the next attempt connects anew with `sasl_password_file` read again
(a rotated secret heals when the daemon tries again). Which aiokafka error
leads to a retry, a dead letter or a FatalSinkError is the table in errors.py.

One refused topic never holds back the others. A topic that does not exist (the brokers answer
but do not create it) or whose ACL denies writes is remembered as refused (refusals.py) for
`refused_topic_recheck_secs`: its records go to the dead-letter file (missing_destination,
not_authorized) and their batch is acknowledged, while every other topic of the batch is sent.
After that time the topic is asked for again (a short metadata wait, or the next produce
request), so a topic created or an ACL granted later receives new records without a restart.
New topics of a batch are looked up concurrently: aiokafka waits up to `request_timeout_ms` for a
topic the broker might be creating, and one such wait per topic in a row would pass the delivery
deadline.

(Over 400 lines: the send path — grouping, chunking, the C append, acknowledgement bookkeeping
across retries, dead letters — shares one batch's state; the options, codec, errors, partitioner
and aiokafka internals already live beside it in this folder.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError, UnknownTopicOrPartitionError

from pipelines import layout
from pipelines.deadletter import DeadLetter, DestinedEntry, Reason
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.refusals import Refusal, Refusals
from pipelines.secrets import add_secret
from pipelines.sinks.kafka import aiokafka_internals as internals
from pipelines.sinks.kafka.config import KafkaSettings
from pipelines.sinks.kafka.damping import Damper
from pipelines.sinks.kafka.errors import Action, action, dead_reason, describe
from pipelines.sinks.kafka.partition import KeyPartitioner
from pipelines.sinks.template import FieldTemplate

log = logging.getLogger("tailship.kafka")

Group = tuple[str, int]  # topic, partition
Header = tuple[str, bytes]
# markers in a batch's `done`, with the segment's index: its oversized records, or all its
# records (its topic refused or invalid), are already in the dead-letter file
_OVERSIZED: Group = ("", -1)
_WHOLE: Group = ("", -2)
_RECHECK_WAIT_SECS = 2.0  # how long a refused topic's metadata is waited for when asked again
_RESTART_AFTER = 5  # failed deliveries in a row before the producer is replaced


class Records:
    """The records of one (topic, partition) in order, as parallel lists, and where they come from
    (segments with the indices taken from each, in the same order). Headers are made only as the
    records are appended to a record batch (measured cheaper than a list per record kept for the
    whole delivery)."""

    __slots__ = ("keys", "values", "paths", "trace_ids", "span_ids", "_from")

    def __init__(self) -> None:
        self.keys: list[bytes | None] = []
        self.values: list[bytes] = []
        self.paths: list[Header] = []  # the `log.file.path` header of each record
        self.trace_ids: list[bytes | None] = []
        self.span_ids: list[bytes | None] = []
        self._from: list[tuple[Segment, Sequence[int]]] = []

    def add(self, seg: Segment, indices: Sequence[int], keys: list[bytes | None],
            trace_ids: list[bytes | None], span_ids: list[bytes | None], path: Header) -> None:
        if len(indices) == len(seg.records):
            self.values.extend(seg.records)
        else:
            records = seg.records
            self.values.extend([records[i] for i in indices])
        self.keys.extend(keys)
        self.trace_ids.extend(trace_ids)
        self.span_ids.extend(span_ids)
        self.paths.extend([path] * len(keys))
        self._from.append((seg, indices))

    def origins(self, start: int, end: int) -> Iterator[tuple[Segment, int]]:
        """(segment, index in it) of records start..end."""
        pos = 0
        for seg, indices in self._from:
            for i in indices[max(start - pos, 0):max(end - pos, 0)]:
                yield seg, i
            pos += len(indices)


def _fill(builder: Any, recs: Records, start: int) -> int:
    """Append records from `start` on until the builder is full; how many it took.

    Straight to aiokafka's C record builder when aiokafka_internals allows it (skipping a Python
    method per record), else through the builder's public append."""
    append = internals.direct_append(builder)
    n = 0
    for key, value, path, t, s in islice(zip(recs.keys, recs.values, recs.paths, recs.trace_ids,
                                             recs.span_ids, strict=True), start, None):
        headers: list[Any] = ([path, ("trace_id", t), ("span_id", s)]
                              if t is not None and s is not None
                              else [path] if t is None and s is None
                              else [path, ("trace_id", t)] if t is not None
                              else [path, ("span_id", s)])
        if append is not None:
            if append(n, None, key, value, headers) is None:
                break
        elif builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            break
        n += 1
    if append is not None:
        internals.set_record_count(builder, n)
    return n


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def valid_topic(name: str) -> bool:
    """Kafka's rule for topic names."""
    return bool(_TOPIC.fullmatch(name)) and name not in (".", "..")


def _field(record: bytes, path: list[str]) -> bytes | None:
    v: Any = orjson.loads(record)
    for part in path:
        v = v.get(part) if isinstance(v, dict) else None
    if v is None:
        return None
    return v.encode() if isinstance(v, str) else orjson.dumps(v)


def _secret(s: KafkaSettings) -> str | None:
    if s.sasl_password_file:
        try:
            secret = Path(s.sasl_password_file).read_text().strip()
            add_secret(secret)
            return secret
        except OSError as exc:
            raise FatalSinkError("kafka", f"cannot read sasl_password_file "
                                 f"{s.sasl_password_file!r}: {exc.strerror}") from exc
    return s.sasl_password or None


def producer_options(s: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer arguments from settings (secrets included, never logged)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_servers, "client_id": "tailship",
        "acks": "all" if s.acks == "all" else int(s.acks),
        "enable_idempotence": s.idempotence, "linger_ms": s.linger_ms,
        "max_batch_size": s.max_batch_bytes, "request_timeout_ms": s.request_timeout_ms,
        "compression_type": None if s.compression == "none" else s.compression,
        "security_protocol": s.security_protocol,
        "max_request_size": max(s.max_batch_bytes, s.max_record_bytes) + 65536,
    }
    if "SSL" in s.security_protocol:
        ctx = ssl.create_default_context(cafile=s.tls_ca_file or None)
        ctx.check_hostname = s.tls_verify_hostname
        if s.tls_cert_file:
            ctx.load_cert_chain(s.tls_cert_file, s.tls_key_file or None)
        opts["ssl_context"] = ctx
    if s.security_protocol.startswith("SASL"):
        opts.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.sasl_username,
                    sasl_plain_password=_secret(s))
    return opts


class KafkaSink:
    name = "kafka"

    def __init__(self, settings: KafkaSettings, data_dir: str, name: str = "kafka",
                 dead: DeadLetter | None = None) -> None:
        self.name = name
        self.s = settings
        self.topics = FieldTemplate(settings.topic, settings.fallback_topic)
        self.partitioner = KeyPartitioner()
        self.dead = dead or DeadLetter(layout.dead_letter_file(data_dir, name), name)
        self.key_path = settings.key[6:].split(".") if settings.key.startswith("field:") else None
        self._producer: Any = None
        self._partitions: dict[str, int] = {}
        self._done: dict[int, set[tuple[Group, int]]] = {}  # batch seq → chunks already acked
        # batch seq → chunks handed to the producer, with their futures: a retry waits for a chunk
        # still pending there instead of sending it again (which would store it twice)
        self._pending: dict[int, dict[tuple[Group, int], asyncio.Future[Any]]] = {}
        self._ok = True
        self._closed = False
        self._stalls = 0  # failed deliveries in a row
        self.refused = Refusals(name, settings.refused_topic_recheck_secs)
        self._damper: Damper | None = None
        self.where = ",".join(settings.bootstrap_servers)

    async def start(self) -> None:
        if self.s.compression == "zstd":
            internals.install_zstd_level(self.s.compression_level)
        await self._connect(FatalSinkError)
        self._partitions.clear()

    async def _connect(self, error: type[FatalSinkError] | type[RetriableSinkError]) -> None:
        """A new producer (the password file read again); a failure to reach the brokers is
        raised as `error`, refused credentials as a FatalSinkError."""
        from aiokafka import AIOKafkaProducer

        try:
            self._producer = AIOKafkaProducer(**producer_options(self.s))
            self._damper = internals.damp_metadata_retries(self._producer, initial=0.1)
            if self.s.idempotence:
                internals.keep_batches(self._producer)
            await self._producer.start()
        except (KafkaError, OSError, ssl.SSLError) as exc:
            await self._stop_quietly()
            cls = FatalSinkError if action(exc) is Action.FATAL else error
            raise cls(self.name, f"cannot connect to Kafka at {self.where}: {describe(exc)}") from exc

    async def _restart(self, why: str) -> None:
        """Replace a producer that stopped making progress (aiokafka does not always recover from a
        broker restart). Chunks already acknowledged stay remembered, so only the rest is re-sent."""
        log.warning("Kafka at %s: %s; restarting the producer", self.where, why)
        await self._drop_producer()
        await self._connect(RetriableSinkError)

    async def _drop_producer(self) -> None:
        """Stop the producer (the next send connects anew). Chunks already acknowledged stay
        remembered."""
        old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 5)
            except Exception:  # noqa: BLE001 - the old producer is abandoned either way
                pass
        self._partitions.clear()
        self._pending.clear()  # the old producer's futures will never resolve
        self._stalls = 0

    async def _stop_quietly(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
                pass
            self._producer = None

    def deadline(self) -> float:
        """How long one delivery may take before the producer is deemed stuck: a produce request
        that aiokafka retries internally is expired after request_timeout_ms, so twice that plus the
        linger is ample for a healthy producer."""
        return 2 * self.s.request_timeout_ms / 1000 + self.s.linger_ms / 1000 + 1

    async def send(self, batch: Batch) -> None:
        if self._closed:
            raise FatalSinkError(self.name, "send after close")
        if self._producer is None:  # a restart failed: the brokers were unreachable
            await self._connect(RetriableSinkError)
        done = self._done.setdefault(batch.seq, set())
        task = asyncio.ensure_future(self._deliver(batch, done))
        try:
            while not (await asyncio.wait({task}, timeout=self.deadline()))[0]:
                self._ok = False
                if self._unreachable():
                    # the brokers are down: the producer waits for them with its batches and
                    # their sequence numbers; re-sending now would store copies
                    log.warning("Kafka at %s unreachable for %.0fs or more; waiting for it with "
                                "the batch in the producer", self.where, self.deadline())
                    continue
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await task
                await self._restart(f"no acknowledgement within {self.deadline():.0f}s")
                raise RetriableSinkError(self.name, f"Kafka at {self.where}: no acknowledgement "
                                         f"within {self.deadline():.0f}s; producer restarted")
            failures = task.result()
        except KafkaError as exc:
            failures = [self._failure(exc)]
        finally:
            if not task.done():
                task.cancel()
        if failures:
            self._ok = False
            if isinstance(failures[0], RetriableSinkError):
                self._stalls += 1
                if self._stalls >= _RESTART_AFTER:
                    await self._restart(f"{self._stalls} failed deliveries in a row")
            else:  # refused: the next attempt connects anew, with the credentials read again
                await self._drop_producer()
            raise failures[0]
        self._done.pop(batch.seq, None)
        self._pending.pop(batch.seq, None)
        self.partitioner.next_batch()
        self._ok = True
        self._stalls = 0

    def _unreachable(self) -> bool:
        """The last metadata update failed: no broker answers."""
        return self._damper is not None and self._damper.failures > 0

    async def _deliver(self, batch: Batch, done: set[tuple[Group, int]]) -> list[Exception]:
        groups = await self._group(batch, done)
        handed = self._pending.setdefault(batch.seq, {})
        failures: list[Exception] = []
        refused: list[tuple[Group, int, int, int, Refusal]] = []
        pending = [(chunk_id, fut)
                   async for chunk_id, fut in self._submit(groups, done, handed, failures, refused)]
        if refused:  # record batches of topics refused since they were grouped
            entries: list[DestinedEntry] = []
            counts: dict[str, int] = {}
            for group, _, start, end, r in refused:
                entries.extend((r.reason, r.detail, seg.path, seg.offsets[i], seg.records[i], group[0])
                               for seg, i in groups[group].origins(start, end))
                counts[group[0]] = counts.get(group[0], 0) + end - start
            self._dead_letter(entries, counts)
            done.update((group, chunk) for group, chunk, _, _, _ in refused)
        if failures:  # the producer did not take a record batch: the rest waits for the retry
            return failures
        return await self._collect(pending, groups, done)

    async def _look_up(self, topics: Iterator[str]) -> None:
        """Partition counts of the topics neither known nor refused now, asked for concurrently;
        the first error (brokers unreachable) is raised once every lookup has ended."""
        todo = {t for t in topics if t not in self._partitions and self.refused.get(t) is None}
        results = await asyncio.gather(*map(self._topic_partitions, todo), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                raise res

    async def _topic_partitions(self, topic: str) -> None:
        """Learn the topic's partition count, or refuse the topic (missing, not authorized)."""
        try:
            if self.refused.seen(topic):  # missing a while ago: a created topic shows at once
                parts = await asyncio.wait_for(self._producer.partitions_for(topic),
                                               min(_RECHECK_WAIT_SECS, self.s.request_timeout_ms / 1000))
            else:
                parts = await self._producer.partitions_for(topic)
        except (UnknownTopicOrPartitionError, TimeoutError) as exc:
            if not await internals.reachable(self._producer):
                raise RetriableSinkError(self.name, f"no metadata for topic {topic!r}: "
                                         f"Kafka at {self.where} unreachable") from exc
            self.refused.refuse(topic, Reason.MISSING_DESTINATION,
                                f"topic {topic!r} does not exist on Kafka at {self.where} and the "
                                f"broker did not create it")
            return
        except TopicAuthorizationFailedError as exc:
            self._refuse(topic, exc)
            return
        if not parts:
            raise RetriableSinkError(self.name, f"topic {topic!r} has no partitions yet")
        self._partitions[topic] = len(parts)
        self.refused.accepted(topic)

    def _refuse(self, topic: str, exc: BaseException) -> None:
        self.refused.refuse(topic, Reason.NOT_AUTHORIZED, f"Kafka at {self.where} refused writes "
                            f"to topic {topic!r}: {describe(exc)}")

    def _dead_letter(self, entries: list[DestinedEntry], topics: dict[str, int]) -> None:
        """Write dead letters (one fsync); `topics`: records of each refused topic among them,
        counted towards its warning."""
        if entries:
            self.dead.write(entries)
        for topic, n in topics.items():
            self.refused.dead_lettered(topic, n, str(self.dead.path))

    async def _group(self, batch: Batch, done: set[tuple[Group, int]]) -> dict[Group, Records]:
        """The batch's records by (topic, partition); what Kafka cannot take (oversized records,
        invalid or refused topics) goes to the dead-letter file first, once per batch."""
        groups: dict[Group, Records] = {}
        dead: list[DestinedEntry] = []
        refused: dict[str, int] = {}  # records dead-lettered per refused topic
        marks: list[tuple[Group, int]] = []  # added to `done` once `dead` is written
        limit = self.s.max_record_bytes
        topics = [self.topics.resolve(seg.meta) for seg in batch.segments]
        await self._look_up(t for t in topics if valid_topic(t))
        for n, (seg, topic) in enumerate(zip(batch.segments, topics, strict=True)):
            if (_WHOLE, n) in done:
                continue
            fit: Sequence[int] = range(len(seg.records))
            oversized = max(map(len, seg.records), default=0) > limit
            if oversized:
                fit = [i for i in fit if len(seg.records[i]) <= limit]
                if (_OVERSIZED, n) not in done:
                    dead.extend((Reason.TOO_LARGE,
                                 f"record of {len(rec)} bytes exceeds max_record_bytes ({limit})",
                                 seg.path, seg.offsets[i], rec, topic)
                                for i, rec in enumerate(seg.records) if len(rec) > limit)
                    marks.append((_OVERSIZED, n))
            refusal = self.refused.get(topic)
            if not valid_topic(topic) or (refusal is not None and topic not in self._partitions):
                reason, detail = ((Reason.INVALID_DESTINATION, f"invalid Kafka topic name {topic!r}")
                                  if refusal is None else (refusal.reason, refusal.detail))
                dead.extend((reason, detail, seg.path, seg.offsets[i], seg.records[i], topic)
                            for i in fit)
                if refusal is not None:
                    refused[topic] = refused.get(topic, 0) + len(fit)
                marks.append((_WHOLE, n))
                continue
            nparts = self._partitions.get(topic)
            if nparts is None:  # forgotten meanwhile: another delivery replaced the producer
                raise RetriableSinkError(self.name, f"Kafka at {self.where}: producer replaced while "
                                         f"topic {topic!r} was looked up")
            keys, tids, sids = self._keys(seg, fit)
            path = ("log.file.path", seg.path.encode())
            parts = self.partitioner.partitions(keys, nparts)
            for part in dict.fromkeys(parts):
                recs = groups.get((topic, part))
                if recs is None:
                    recs = groups[(topic, part)] = Records()
                if len(parts) == 0 or parts.count(part) == len(parts):  # all in one partition
                    recs.add(seg, fit, keys, tids, sids, path)
                    continue
                sel = [j for j, p in enumerate(parts) if p == part]
                recs.add(seg, [fit[j] for j in sel], [keys[j] for j in sel], [tids[j] for j in sel],
                         [sids[j] for j in sel], path)
        self._dead_letter(dead, refused)
        done.update(marks)
        cannot = [d for d in dead if d[0] in (Reason.TOO_LARGE, Reason.INVALID_DESTINATION)]
        if cannot:
            log.warning("%d record(s) Kafka cannot take written to %s: %s", len(cannot),
                        self.dead.path, cannot[0][1])
        return groups

    def _keys(self, seg: Segment, fit: Sequence[int]
              ) -> tuple[list[bytes | None], list[bytes | None], list[bytes | None]]:
        """Message keys, trace ids and span ids (encoded) of the records `fit` of `seg`."""
        whole = len(fit) == len(seg.records)
        tids = [None if t is None else t.encode()
                for t in (seg.trace_ids if whole else [seg.trace_ids[i] for i in fit])]
        sids = [None if t is None else t.encode()
                for t in (seg.span_ids if whole else [seg.span_ids[i] for i in fit])]
        if self.key_path is not None:
            keys = [_field(seg.records[i], self.key_path) for i in fit]
        elif self.s.key == "trace_id":
            keys = tids
        else:
            keys = [None] * len(tids)
        return keys, tids, sids

    def _chunks(self, recs: Records) -> Iterator[tuple[int, Any, int, int]]:
        """Record batches of one group: (chunk index, builder, first record, end record)."""
        start = 0
        chunk = 0
        while start < len(recs.values):
            builder = self._producer.create_batch()
            end = start + _fill(builder, recs, start)
            builder.close()
            yield chunk, builder, start, end
            start = end
            chunk += 1

    async def _submit(self, groups: dict[Group, Records], done: set[tuple[Group, int]],
                      pending: dict[tuple[Group, int], asyncio.Future[Any]],
                      failures: list[Exception],
                      refused: list[tuple[Group, int, int, int, Refusal]]) -> Any:
        """Hands each record batch not yet acknowledged to the producer; stops at the first the
        producer does not take (its queue for the partition stayed full), adding to `failures`.
        Record batches of a topic refused now are not sent but added to `refused`."""
        for group, items in groups.items():
            for chunk, builder, start, end in self._chunks(items):
                if (group, chunk) in done:
                    continue
                fut = pending.get((group, chunk))
                refusal = self.refused.get(group[0]) if fut is None else None
                if refusal is not None:
                    refused.append((group, chunk, start, end, refusal))
                    continue
                if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
                    try:
                        fut = await self._producer.send_batch(builder, group[0], partition=group[1])
                    except KafkaError as exc:
                        if isinstance(exc, TopicAuthorizationFailedError):
                            self._refuse(group[0], exc)  # the retry dead-letters its records
                        failures.append(self._failure(exc, group))
                        return
                    pending[(group, chunk)] = fut
                yield ((group, chunk, start, end), fut)

    async def _collect(self, pending: list[Any], groups: dict[Group, Records],
                       done: set[tuple[Group, int]]) -> list[Exception]:
        failures: list[Exception] = []
        # shielded: a cancelled wait (shutdown, a producer restart) must not cancel the producer's
        # own futures, which a retry waits for again
        results = await asyncio.gather(*(asyncio.shield(f) for _, f in pending), return_exceptions=True)
        for ((group, chunk, start, end), _), res in zip(pending, results, strict=True):
            if not isinstance(res, BaseException):
                done.add((group, chunk))
                continue
            if action(res) is Action.DEAD_LETTER:
                rejected = list(groups[group].origins(start, end))
                reason = (f"{type(res).__name__} from Kafka at {self.where} for topic {group[0]!r} "
                          f"partition {group[1]}: {describe(res)}")
                entries = [(dead_reason(res), reason, seg.path, seg.offsets[i], seg.records[i],
                            group[0]) for seg, i in rejected]
                if isinstance(res, TopicAuthorizationFailedError):  # the topic's ACL, not content
                    self._refuse(group[0], res)
                    self._dead_letter(entries, {group[0]: len(entries)})
                else:
                    self.dead.write(entries)
                    log.warning("%d record(s) rejected by Kafka (%s) written to %s",
                                len(rejected), type(res).__name__, self.dead.path)
                done.add((group, chunk))
                continue
            failures.append(self._failure(res, group))
        return failures

    def _failure(self, exc: BaseException, group: Group | None = None) -> Exception:
        """The SinkError for `exc` (errors.py's table; a DEAD_LETTER error that is not about one
        record batch is retried), naming the brokers, the topic and partition when known, and the
        cause."""
        at = "" if group is None else f" (topic {group[0]!r}, partition {group[1]})"
        if action(exc) is Action.FATAL:
            return FatalSinkError(self.name, f"Kafka at {self.where} refused{at}: {describe(exc)}")
        return RetriableSinkError(self.name, f"Kafka at {self.where}{at}: {describe(exc)}")

    async def close(self, timeout_secs: float) -> None:
        self._closed = True
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), timeout_secs)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001
                log.warning("kafka producer did not stop cleanly: %s", exc)
            self._producer = None

    def healthy(self) -> bool:
        return self._ok and self._producer is not None
