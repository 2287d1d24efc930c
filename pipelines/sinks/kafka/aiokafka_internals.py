"""Every place where the Kafka sink reaches into aiokafka's internals, in one module.

Written for aiokafka 0.14.0 (`WRITTEN_FOR`; pinned in pyproject.toml). aiokafka promises nothing
about these names from one release to the next, so:

- at first use the installed version is compared with WRITTEN_FOR; on another version a warning
  is logged once, and the sink takes aiokafka's public path where there is one;
- each use first checks that the internal it needs is there (getattr, type and call signature)
  and otherwise falls back the same way, with a warning for a real aiokafka object;
- tests/test_kafka_internals.py fails when the installed aiokafka is not WRITTEN_FOR or
  `missing()` reports an internal gone, so an upgrade turns CI red instead of leaving the sink
  silently slower or wrong. Check every row below against the new aiokafka, then change
  WRITTEN_FOR.

    internal (aiokafka 0.14.0)             used for                        without it
    ─────────────────────────────────────  ──────────────────────────────  ─────────────────────────
    record.default_records.zstd_encode,    zstd at the configured level    public path: aiokafka's
    record._crecords.default_records       (install_zstd_level; the        own zstd at level 3
    .zstd_encode: module globals the       encoder is codec.py's)          (more CPU per batch)
    record batch builders call
    BatchBuilder._builder (the C record    records appended straight to    public path:
    builder), _relative_offset, _closed,   the C record builder            BatchBuilder.append per
    _key_serializer, _value_serializer     (direct_append, used by _fill   record (more CPU per
                                           in __init__.py)                 record)
    AIOKafkaClient._metadata_update        a pause after a failed          none: one core busy while
    (producer.client)                      metadata update, and the        the brokers are down, and
                                           "brokers unreachable" signal    a stuck delivery restarts
                                           (damp_metadata_retries;         the producer even then
                                           Damper in damping.py)
    MessageAccumulator._batch_ttl          idempotent batches wait for a   none: batches expire while
    (producer._message_accumulator)        leader without expiring         no leader, and their
                                           (keep_batches)                  re-send stores copies
    AIOKafkaClient.fetch_all_metadata      "does a broker answer now?"     none: a missing topic is
    (public name, not documented)          (reachable)                     retried, never fatal

The three without a public path are still used on another aiokafka version when they pass the
checks above (doing without them has the known costs in the last column); the version warning
says they are unverified there.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import aiokafka
from aiokafka.client import AIOKafkaClient
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record import default_records as py_records
from aiokafka.util import NO_EXTENSIONS

from pipelines.sinks.kafka.codec import make_encoder
from pipelines.sinks.kafka.damping import Damper

WRITTEN_FOR = "0.14.0"

log = logging.getLogger("tailship.kafka")
_warned: set[str] = set()
_lock = threading.Lock()
_zstd_level: int | None = None  # the level installed in aiokafka's record builders


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


def version_ok() -> bool:
    """The installed aiokafka is the one this module was written for (warns once if not)."""
    if aiokafka.__version__ == WRITTEN_FOR:
        return True
    _warn_once("version", "aiokafka %s is installed, but the Kafka sink's use of aiokafka internals "
               "was written for %s (pipelines/sinks/kafka/aiokafka_internals.py): taking aiokafka's "
               "public path where there is one", aiokafka.__version__, WRITTEN_FOR)
    return False


def _c_records() -> ModuleType | None:
    """aiokafka's C record builder module, None in a pure-Python build."""
    try:
        from aiokafka.record._crecords import default_records
    except ImportError:
        return None
    return default_records


def _encoder_modules() -> list[ModuleType] | None:
    """The modules whose `zstd_encode` the record builders call; None when one lacks it."""
    mods = [py_records]
    c = _c_records()
    if c is not None:
        mods.append(c)
    elif not NO_EXTENSIONS:
        return None  # aiokafka would use a C builder this module does not know
    return mods if all(callable(getattr(m, "zstd_encode", None)) for m in mods) else None


def install_zstd_level(level: int) -> bool:
    """Make aiokafka's record builders compress zstd record batches at `level` (process-wide: all
    Kafka sinks of a process share the level). False when that cannot be done safely: aiokafka
    then compresses at its own level."""
    global _zstd_level
    with _lock:
        if _zstd_level == level:
            return True
        mods = _encoder_modules()
        if not version_ok() or mods is None:
            _warn_once("zstd", "Kafka compression_level %d not applied: aiokafka compresses zstd at "
                       "its own level (aiokafka %s)", level, aiokafka.__version__)
            return False
        encoder = make_encoder(level)
        for mod in mods:
            mod.zstd_encode = encoder  # type: ignore[attr-defined]
        _zstd_level = level
        return True


def _raw_append(builder: Any) -> Callable[..., Any] | None:
    raw = getattr(builder, "_builder", None)
    if (type(raw) is py_records.DefaultRecordBatchBuilder
            and getattr(builder, "_relative_offset", None) == 0
            and getattr(builder, "_key_serializer", 0) is None
            and getattr(builder, "_value_serializer", 0) is None
            and getattr(builder, "_closed", None) is False):
        return raw.append  # type: ignore[union-attr,no-any-return]
    return None


def direct_append(builder: Any) -> Callable[..., Any] | None:
    """The `append(offset, timestamp, key, value, headers)` of the C record builder inside a
    producer BatchBuilder that has no records yet, no serializers and is open (what the sink's
    create_batch gives); None otherwise (another aiokafka version, a test's stand-in): then use
    `builder.append`. After appending n records this way, call `set_record_count(builder, n)`:
    the idempotent producer's sequence numbers follow BatchBuilder's record count.

    BatchBuilder.append with no serializers is exactly that C append plus the count, in a Python
    call per record."""
    if not version_ok():
        return None
    append = _raw_append(builder)
    if append is None and isinstance(builder, BatchBuilder):
        _warn_once("append", "aiokafka's BatchBuilder is not as the Kafka sink expects: records are "
                   "appended through BatchBuilder.append (aiokafka %s)", aiokafka.__version__)
    return append


def set_record_count(builder: Any, n: int) -> None:
    """Record that `n` records were appended through `direct_append`."""
    builder._relative_offset = n


def _update_usable(update: Any) -> bool:
    """A coroutine function taking (cluster_metadata, topics), as AIOKafkaClient._metadata_update."""
    if not inspect.iscoroutinefunction(update):
        return False
    params = list(inspect.signature(update).parameters.values())
    return len(params) == 2 and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)


def damp_metadata_retries(producer: Any, initial: float, cap: float = 1.0) -> Damper | None:
    """Install a `Damper` on an (unstarted) AIOKafkaProducer's client. None when the producer has
    no such client (another aiokafka version, a test's stand-in): nothing is changed."""
    client = getattr(producer, "client", None)
    update = getattr(client, "_metadata_update", None)
    if update is None or not _update_usable(update):
        if isinstance(client, AIOKafkaClient):
            _warn_once("damp", "aiokafka's client has no usable _metadata_update: no pause after a "
                       "failed metadata update (aiokafka %s)", aiokafka.__version__)
        return None
    version_ok()  # no public path: used anyway, the warning says it is unverified
    d = Damper(initial, cap)
    client._metadata_update = d.wrap(update)  # type: ignore[union-attr]
    return d


def keep_batches(producer: Any) -> bool:
    """Batches of an idempotent AIOKafkaProducer wait for a leader without expiring; False when
    there is nothing to change."""
    acc = getattr(producer, "_message_accumulator", None)
    if not isinstance(getattr(acc, "_batch_ttl", None), int | float):
        if acc is not None:
            _warn_once("ttl", "aiokafka's accumulator has no _batch_ttl: idempotent batches expire "
                       "while a partition has no leader (aiokafka %s)", aiokafka.__version__)
        return False
    version_ok()  # no public path: used anyway, the warning says it is unverified
    acc._batch_ttl = float("inf")  # type: ignore[union-attr]
    return True


async def reachable(producer: Any) -> bool:
    """A broker answers a metadata request now."""
    fetch = getattr(getattr(producer, "client", None), "fetch_all_metadata", None)
    if fetch is None:
        _warn_once("fetch", "aiokafka's client has no fetch_all_metadata: a missing topic is "
                   "retried, never reported (aiokafka %s)", aiokafka.__version__)
        return False
    try:
        await fetch()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable now"
        return False


def missing(producer: Any = None) -> list[str]:
    """The internals above that the installed aiokafka lacks or has in another shape (empty when
    all are as expected); given an AIOKafkaProducer (need not be started), also those of its
    client and accumulator."""
    out: list[str] = []
    if _encoder_modules() is None:
        out.append("record.default_records.zstd_encode or record._crecords.default_records"
                   ".zstd_encode (zstd level)")
    if _raw_append(BatchBuilder(1024, 0)) is None:
        out.append("BatchBuilder._builder (a DefaultRecordBatchBuilder), _relative_offset, _closed, "
                   "_key_serializer, _value_serializer (direct append)")
    update = getattr(AIOKafkaClient, "_metadata_update", None)
    if update is None or not _update_usable(functools.partial(update, None)):  # None: self
        out.append("AIOKafkaClient._metadata_update(cluster_metadata, topics) (metadata damping)")
    if not inspect.iscoroutinefunction(getattr(AIOKafkaClient, "fetch_all_metadata", None)):
        out.append("AIOKafkaClient.fetch_all_metadata (reachable)")
    if producer is not None:
        if not _update_usable(getattr(getattr(producer, "client", None), "_metadata_update", None)):
            out.append("AIOKafkaProducer.client._metadata_update (metadata damping)")
        acc = getattr(producer, "_message_accumulator", None)
        if not isinstance(getattr(acc, "_batch_ttl", None), int | float):
            out.append("AIOKafkaProducer._message_accumulator._batch_ttl (keep_batches)")
    return out
