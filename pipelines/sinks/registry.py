"""Sink types: a type name maps to its options' sub-table, its factory and its URL form.

Building a sink does no I/O; `start()` does (and fails with the target named). A new sink type is
a module (its options beside it) and one entry in `SINK_TYPES`; the options class is also a field
of `SinkSettings` so that `[sink.<type>]` tables validate.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines import layout
from pipelines.deadletter import DeadLetterReport, DeadLetterSettings
from pipelines.sinks.base import Sink
from pipelines.sinks.config import TYPES, SinkContext, SinkSettings
from pipelines.sinks.elasticsearch import config as es_config
from pipelines.sinks.kafka import config as kafka_config


@dataclass(frozen=True)
class SinkType:
    name: str
    build: Callable[[SinkSettings, SinkContext], Sink]
    url: str                                               # the URL form, for messages
    from_url: Callable[[str], dict[str, Any]] | None = None  # "//rest" after "<scheme>:" → table


def _lazy(module: str, cls: str) -> Any:
    """The sink class, imported when first built (aiokafka only where Kafka is used)."""
    return getattr(importlib.import_module(module), cls)


def _file(s: SinkSettings, ctx: SinkContext) -> Sink:
    path = s.path or layout.out_dir(ctx.data_dir)
    sink: Sink = _lazy("pipelines.sinks.file", "FileSink")(
        path, s.compression_level, s.rotate_bytes, ctx.worker,
        retention_bytes=s.retention_bytes, retention_secs=s.retention_secs)
    return sink


def _file_url(rest: str) -> dict[str, Any]:
    path = rest[2:] if rest.startswith("//") else rest
    if not path:
        raise ValueError("file sink URL needs a directory: file:DIR")
    return {"type": "file", "path": path}


def _named(sink: Sink, name: str) -> Sink:
    sink.name = name
    return sink


SINK_TYPES: dict[str, SinkType] = {t.name: t for t in (
    SinkType("file", _file, "file:DIR", _file_url),
    SinkType("stdout", lambda s, ctx: _lazy("pipelines.sinks.stdout", "StdoutSink")(), "stdout"),
    SinkType("null", lambda s, ctx: _lazy("pipelines.sinks.null", "NullSink")(), "null"),
    SinkType("kafka", lambda s, ctx: _lazy("pipelines.sinks.kafka", "KafkaSink")(
        s.kafka, ctx.data_dir, ctx.name, dead=ctx.dead_letter()),
        "kafka://HOST:PORT[,HOST:PORT]/TOPIC", kafka_config.from_url),
    SinkType("elasticsearch", lambda s, ctx: _lazy("pipelines.sinks.elasticsearch", "ElasticsearchSink")(
        s.elasticsearch, ctx.data_dir, ctx.name, dead=ctx.dead_letter()),
        "elasticsearch[+https]://HOST:PORT[,HOST:PORT]/INDEX",
        lambda rest: es_config.from_url(rest, https=False)),
)}
assert tuple(SINK_TYPES) == TYPES
SUPPORTED = ("stdout", "null", "file:DIR", "file://DIR", SINK_TYPES["kafka"].url,
             SINK_TYPES["elasticsearch"].url)


def build_sink(settings: SinkSettings, data_dir: str, worker: int | None = None,
               name: str | None = None, *, deadletter: DeadLetterSettings | None = None,
               report: DeadLetterReport | None = None) -> Sink:
    """The sink `settings.type` names, called `name` (default: its type); the file sink writes
    to `<data_dir>/out` unless `path` is set (`worker`: the index of a worker process, which names
    its own files there). `deadletter`: the sink's share of the dead-letter cap; `report` counts
    its dead letters."""
    kind = SINK_TYPES.get(settings.type)
    if kind is None:
        raise ValueError(f"unknown sink type {settings.type!r}; supported: {', '.join(TYPES)}")
    ctx = SinkContext(name or settings.type, data_dir, worker, deadletter, report)
    return _named(kind.build(settings, ctx), name or settings.type)


def parse_sink_url(url: str) -> dict[str, Any]:
    """`stdout`, `null`, `file:DIR`, `kafka://...`, `elasticsearch://...` → the sink table it
    stands for."""
    if url in ("stdout", "-"):
        return {"type": "stdout"}
    if url == "null":
        return {"type": "null"}
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "elasticsearch+https":
        return es_config.from_url(rest, https=True)
    kind = SINK_TYPES.get(scheme) if sep else None
    if kind is not None and kind.from_url is not None:
        return kind.from_url(rest)
    raise ValueError(f"unsupported sink URL {url!r}; supported: {', '.join(SUPPORTED)}")
