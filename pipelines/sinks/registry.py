"""Choosing a sink: from settings (`sink.type`) or from a CLI URL (`tailship tail --to URL`).

Building a sink does no I/O; `start()` does (and fails with the target named).
"""

from __future__ import annotations

import os
from typing import Any

from agent.settings import SinkSettings
from pipelines.sinks.base import Sink
from pipelines.sinks.file import FileSink
from pipelines.sinks.null import NullSink
from pipelines.sinks.stdout import StdoutSink

SUPPORTED = ("stdout", "null", "file:DIR", "file://DIR", "kafka://HOST:PORT[,HOST:PORT]/TOPIC",
             "elasticsearch[+https]://HOST:PORT[,HOST:PORT]/INDEX")
TYPES = ("file", "stdout", "null", "kafka", "elasticsearch")


def build_sink(settings: SinkSettings, data_dir: str, worker: int | None = None) -> Sink:
    """The sink `settings.type` names; the file sink writes to `<data_dir>/out` unless `path` is
    set (`worker`: the index of a worker process, which names its own files there)."""
    if settings.type == "null":
        return NullSink()
    if settings.type == "stdout":
        return StdoutSink()
    if settings.type == "file":
        path = settings.path or os.path.join(data_dir, "out")
        return FileSink(path, settings.compression_level, settings.rotate_bytes, worker)
    if settings.type == "kafka":
        from pipelines.sinks.kafka import KafkaSink  # aiokafka is imported only when used

        return KafkaSink(settings.kafka, data_dir)
    if settings.type == "elasticsearch":
        from pipelines.sinks.elasticsearch import ElasticsearchSink

        return ElasticsearchSink(settings.elasticsearch, data_dir)
    raise ValueError(f"unknown sink type {settings.type!r}; supported: {', '.join(TYPES)}")


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
    if sep and scheme in ("elasticsearch", "elasticsearch+https") and rest.startswith("//"):
        hosts, _, index = rest[2:].partition("/")
        if not hosts or not index:
            raise ValueError("elasticsearch sink URL needs nodes and an index: "
                             "elasticsearch://HOST:PORT/INDEX")
        http = "https" if scheme.endswith("https") else "http"
        return {"type": "elasticsearch", "elasticsearch": {
            "urls": [f"{http}://{h}" for h in hosts.split(",")], "index": index, "fallback_index": index}}
    raise ValueError(f"unsupported sink URL {url!r}; supported: {', '.join(SUPPORTED)}")
