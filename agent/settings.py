"""Typed settings: what a validated configuration turns into.

`agent.config` builds these from TOML (or from the `tailship tail` command line) after checking
every key; the rest of the agent reads only these objects, never raw config. Field metadata drives
validation: `choices`, `min`/`max`, `help`. Option names carry their units.

The options of the data path live beside it and are composed here: a sink's in
`pipelines/sinks/` (`SinkSettings` and each type's sub-table), routes in `pipelines/routes.py`,
log metrics in `pipelines/logmetrics_settings.py`, metric sources in `agent/metricsources/settings.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.metricsources.settings import HostMetricsSettings, PrometheusScrapeSettings
from pipelines.deadletter import DeadLetterSettings
from pipelines.logmetrics_settings import LogMetricsSettings, MetricRule
from pipelines.options import opt
from pipelines.routes import RouteCondition, RouteSettings, RoutingSettings
from pipelines.sinks.config import SinkSettings
from pipelines.sinks.elasticsearch.config import ElasticsearchSettings
from pipelines.sinks.kafka.config import KafkaSettings

__all__ = ["Settings", "SourceSettings", "ParseSettings", "TraceSettings", "MultilineSettings",
           "BatchSettings", "BufferSettings", "DeadLetterSettings", "MetricsSettings", "SinkSettings",
           "KafkaSettings",
           "ElasticsearchSettings", "LogMetricsSettings", "MetricRule", "RouteCondition", "RouteSettings",
           "RoutingSettings", "PrometheusScrapeSettings", "HostMetricsSettings", "opt"]


@dataclass(slots=True)
class SourceSettings:
    include: list[str] = opt(factory=lambda: ["/var/log/containers/*.log"],
                             help="glob patterns of files to tail (symlinks are followed)")
    exclude: list[str] = opt(factory=list, help="glob patterns of files never to tail")
    read_from: str = opt("head", choices=("head", "tail"),
                         help="where to start in files present at start without a checkpoint")
    ignore_older_secs: float = opt(0.0, min=0, help="skip files not modified for this long (0 = off)")
    scan_interval_secs: float = opt(1.0, min=0.05, help="how often to look for new files")
    poll_interval_ms: int = opt(250, min=1, help="how often an idle file is checked for new data")
    inotify: bool = opt(True, help="wake on changes reported by inotify (Linux); polls stay as fallback")
    read_chunk_bytes: int = opt(1 << 20, min=4096, help="bytes read from a file at once")
    read_budget_bytes: int = opt(4 << 20, min=4096,
                                 help="bytes one file may read before yielding to others")
    max_line_bytes: int = opt(1 << 20, min=1024,
                              help="longest record kept; longer ones are truncated and flagged")
    partial_line_timeout_secs: float = opt(5.0, min=0,
                                           help="emit a last line without newline after this long")
    fingerprint_bytes: int = opt(256, min=16, max=65536,
                                 help="bytes at the head of a file that make up its fingerprint")
    format: str = opt("auto", choices=("auto", "docker", "cri", "text"),
                      help="container log format; auto detects it per file")


@dataclass(slots=True)
class ParseSettings:
    json: bool = opt(True, help="turn a JSON-object payload into record fields")
    target: str = opt("", help="key to put parsed fields under; empty merges them at top level")


@dataclass(slots=True)
class TraceSettings:
    enabled: bool = opt(True, help="find and normalize trace_id / span_id")
    inherit_window_ms: int = opt(1000, min=0,
                                 help="continuation lines within this window inherit the trace context")


@dataclass(slots=True)
class MultilineSettings:
    preset: str = opt("none", choices=("none", "java", "python", "go", "auto"),
                      help="merge stack-trace lines into the record before them")
    max_lines: int = opt(500, min=1, help="most lines merged into one record")
    max_bytes: int = opt(1 << 20, min=1024, help="most bytes merged into one record")
    timeout_ms: int = opt(1000, min=1, help="emit a merged record after waiting this long")


@dataclass(slots=True)
class BatchSettings:
    max_records: int = opt(2000, min=1, help="a batch closes at this many records")
    max_bytes: int = opt(2 << 20, min=1024, help="a batch closes at this many bytes")
    linger_ms: int = opt(200, min=0, help="a batch closes this long after its first record")
    memory_limit_bytes: int = opt(64 << 20, min=1 << 20,
                                  help="in-flight bytes before tailers stop reading")
    when_full: str = opt("block", choices=("block", "drop_newest"),
                         help="at memory_limit_bytes: stop reading (block) or drop new records")





@dataclass(slots=True)
class BufferSettings:
    type: str = opt("memory", choices=("memory", "disk"),
                    help="memory: in-flight batches only; disk: batches go through files first")
    path: str = opt("", help="disk buffer directory (default <data_dir>/buffer)")
    max_size_bytes: int = opt(1 << 30, min=1 << 20, help="undelivered bytes the disk buffer may hold")
    ack: str = opt("on_write", choices=("on_write", "on_delivery"),
                   help="a batch counts as acknowledged once on disk, or once the sink took it")


@dataclass(slots=True)
class MetricsSettings:
    listen: str = opt("127.0.0.1:2021", help='host:port of /metrics, /healthz and /readyz ("" = off)')
    ready_failing_secs: float = opt(30.0, min=0,
                                    help="/readyz answers 503 once a sink has had records pending and "
                                         "nothing acknowledged for this long")
    header_timeout_secs: float = opt(5.0, min=0.01, help="a request's line and headers must arrive "
                                     "within this, else the connection is closed")
    body_timeout_secs: float = opt(5.0, min=0.01, help="a request's body (the endpoints take none; up "
                                   "to 64 KiB is read and ignored) must arrive within this")
    write_timeout_secs: float = opt(10.0, min=0.01, help="a client must take the response within this")
    max_connections: int = opt(64, min=2, help="connections open at once; at the cap a new one "
                               "replaces the oldest (so /healthz is always answered)")




@dataclass(slots=True)
class Settings:
    data_dir: str = opt("/var/lib/tailship", help="checkpoints and dead letters live here")
    host_name: str = opt("", help="host.name of every record (default: $NODE_NAME or the hostname)")
    shutdown_timeout_secs: float = opt(30.0, min=0, help="how long a stop waits for acknowledgements")
    checkpoint_interval_secs: float = opt(0.2, min=0.01,
                                          help="checkpoints are persisted after acks, at most this often")
    workers: int = opt(0, min=0, max=256,
                       help="worker processes sharing the files; 0 = one per CPU available")
    worker_stuck_secs: float = opt(60.0, min=1,
                                   help="a worker not answering for this long is restarted")
    source: SourceSettings = field(default_factory=SourceSettings)
    parse: ParseSettings = field(default_factory=ParseSettings)
    trace: TraceSettings = field(default_factory=TraceSettings)
    multiline: MultilineSettings = field(default_factory=MultilineSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    sinks: dict[str, SinkSettings] = opt(factory=dict, help="several named sinks: [sinks.<name>] tables "
                                         "(instead of [sink]); each has the options of [sink]")
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    deadletter: DeadLetterSettings = field(default_factory=DeadLetterSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log_metrics: LogMetricsSettings = field(default_factory=LogMetricsSettings)
    prometheus_scrape: PrometheusScrapeSettings = field(default_factory=PrometheusScrapeSettings)
    host_metrics: HostMetricsSettings = field(default_factory=HostMetricsSettings)

    def sink_tables(self) -> dict[str, SinkSettings]:
        """The sinks by name: the `[sinks.<name>]` tables, else the one `[sink]`, named by its type."""
        return dict(self.sinks) if self.sinks else {self.sink.type: self.sink}
