"""Choosing a sink: from settings (`sink.type`) or from a CLI URL."""

from __future__ import annotations

import os
from typing import Any

from agent.settings import SinkSettings
from pipelines.sinks.base import Sink
from pipelines.sinks.file import FileSink
from pipelines.sinks.null import NullSink
from pipelines.sinks.stdout import StdoutSink

SUPPORTED = ("stdout", "null", "file:DIR", "kafka://HOST:PORT[,HOST:PORT]/TOPIC")
PLANNED = ("elasticsearch",)


def build_sink(settings: SinkSettings, data_dir: str) -> Sink:
    if settings.type == "null":
        return NullSink()
    if settings.type == "stdout":
        return StdoutSink()
    if settings.type == "file":
        path = settings.path or os.path.join(data_dir, "out")
        return FileSink(path, settings.compression_level, settings.rotate_bytes)
    if settings.type == "kafka":
        from pipelines.sinks.kafka import KafkaSink  # aiokafka is imported only when used

        return KafkaSink(settings.kafka, data_dir)
    raise ValueError(f"unknown sink type {settings.type!r}")


def parse_sink_url(url: str) -> dict[str, Any]:
    """`stdout`, `null`, `file:DIR` or `file://DIR` → the `[sink]` table it stands for."""
    if url in ("stdout", "-"):
        return {"type": "stdout"}
    if url == "null":
        return {"type": "null"}
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "file":
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ValueError("file sink URL needs a directory: file:DIR")
        return {"type": "file", "path": path}
    if sep and scheme == "kafka" and rest.startswith("//"):
        hosts, _, topic = rest[2:].partition("/")
        if not hosts or not topic:
            raise ValueError("kafka sink URL needs brokers and a topic: kafka://HOST:PORT/TOPIC")
        return {"type": "kafka", "kafka": {"bootstrap_servers": hosts.split(","), "topic": topic,
                                           "fallback_topic": topic}}
    if sep and scheme in PLANNED:
        raise ValueError(f"sink {scheme!r} is not available yet; supported: {', '.join(SUPPORTED)}")
    raise ValueError(f"unsupported sink URL {url!r}; supported: {', '.join(SUPPORTED)}")
