"""The Elasticsearch sink (`sink.py`) and its options (`config.py`)."""

from pipelines.sinks.elasticsearch.config import ElasticsearchSettings
from pipelines.sinks.elasticsearch.sink import (
    ElasticsearchSink,
    IndexNames,
    _with_ecs,
    client_options,
    redact_url,
)

__all__ = ["ElasticsearchSettings", "ElasticsearchSink", "IndexNames", "_with_ecs", "client_options",
           "redact_url"]
