"""Typed settings: what a validated configuration turns into.

`agent.config` builds these from TOML (or from the `tailship tail` command line) after checking
every key; the rest of the agent reads only these objects, never raw config. Field metadata drives
validation: `choices`, `min`/`max`, `help`. Option names carry their units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def opt(default: Any = None, *, help: str, factory: Any = None, **rules: Any) -> Any:  # noqa: A002
    meta = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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
class KafkaSettings:
    bootstrap_servers: list[str] = opt(factory=lambda: ["127.0.0.1:9092"], help="host:port of brokers")
    topic: str = opt("logs", help="topic, or a template over kubernetes fields: logs-{kubernetes.namespace}")
    fallback_topic: str = opt("logs", help="topic when a template field is missing")
    key: str = opt("trace_id", help='message key: "trace_id", "none" or "field:<dotted.path>"')
    compression: str = opt("zstd", choices=("none", "gzip", "lz4", "zstd"),
                           help="Kafka-native record-batch compression")
    compression_level: int = opt(1, min=1, max=22, help="zstd level (aiokafka alone would use 3)")
    acks: str = opt("all", choices=("all", "1", "0"), help="acknowledgements the leader waits for")
    idempotence: bool = opt(True, help="idempotent producer (needs acks = all)")
    linger_ms: int = opt(5, min=0, help="producer linger after a batch is handed over")
    max_batch_bytes: int = opt(1 << 20, min=1024, help="largest record batch sent to one partition")
    max_record_bytes: int = opt(1000000, min=1024,
                                help="larger records go to the dead-letter file (broker message.max.bytes)")
    request_timeout_ms: int = opt(30000, min=1000, help="produce and metadata request timeout")
    security_protocol: str = opt("PLAINTEXT", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                                 help="how to talk to the brokers")
    tls_ca_file: str = opt("", help="PEM file of CAs that sign the brokers' certificates")
    tls_cert_file: str = opt("", help="client certificate (PEM) for mutual TLS")
    tls_key_file: str = opt("", help="client private key (PEM) for mutual TLS")
    tls_verify_hostname: bool = opt(True, help="check the broker certificate's host name")
    sasl_mechanism: str = opt("PLAIN", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                              help="SASL mechanism (SASL_* protocols)")
    sasl_username: str = opt("", help="SASL user name")
    sasl_password: str = opt("", help="SASL password: use ${ENV_VAR}, or sasl_password_file")
    sasl_password_file: str = opt("", help="file holding the SASL password")


@dataclass(slots=True)
class ElasticsearchSettings:
    urls: list[str] = opt(factory=lambda: ["http://127.0.0.1:9200"],
                          help="node URLs (http:// or https://); requests are spread over them")
    index: str = opt("logs-{kubernetes.namespace}-%Y.%m.%d",
                     help="index: a template over kubernetes fields and the event time (strftime codes)")
    fallback_index: str = opt("logs-unknown-%Y.%m.%d", help="index when a template field is missing")
    op_type: str = opt("index", choices=("index", "create"),
                       help='"index" overwrites by _id; "create" (data streams) keeps the first copy')
    id_mode: str = opt("file_offset", choices=("file_offset", "none"),
                       help="document _id from (file identity, offset), so a re-send never duplicates")
    trace_fields: str = opt("both", choices=("plain", "ecs", "both"),
                            help="trace_id/span_id (plain), trace.id/span.id (ecs), or both")
    compression: bool = opt(False, help="gzip the bulk request body")
    request_timeout_secs: float = opt(30.0, min=1, help="bulk and start-up request timeout")
    username: str = opt("", help="basic auth user")
    password: str = opt("", help="basic auth password: use ${ENV_VAR}, or password_file")
    password_file: str = opt("", help="file holding the basic auth password")
    api_key: str = opt("", help="API key (base64 id:key): use ${ENV_VAR}, or api_key_file")
    api_key_file: str = opt("", help="file holding the API key")
    tls_ca_file: str = opt("", help="PEM file of CAs that sign the nodes' certificates")
    tls_verify: bool = opt(True, help="verify the nodes' certificates and host names")


@dataclass(slots=True)
class SinkSettings:
    type: str = opt("file", choices=("file", "stdout", "null", "kafka", "elasticsearch"),
                   help="which sink")
    path: str = opt("", help="file sink: output directory (default <data_dir>/out)")
    compression_level: int = opt(3, min=1, max=19, help="file sink: zstd level")
    rotate_bytes: int = opt(64 << 20, min=1024,
                            help="file sink: start a new file after this many uncompressed bytes")
    max_in_flight: int = opt(1, min=1, max=64,
                             help="batches sent concurrently (above 1, batches may arrive out of order)")
    retry_initial_ms: int = opt(100, min=1, help="first retry delay; doubles up to retry_max_ms")
    retry_max_ms: int = opt(10000, min=1, help="longest retry delay")
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)


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
                                    help="/readyz answers 503 once the sink has failed for this long")


@dataclass(slots=True)
class MetricRule:
    name: str = field(metadata={"help": "metric name after the prefix; counters get _total appended"})
    type: str = opt("counter", choices=("counter", "histogram"), help="what the rule computes")
    help: str = opt("", help="the metric's HELP text")
    field: str = opt("", help="histogram: the numeric record field observed (dotted path)")
    buckets: list[float] = opt(factory=lambda: [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                                                2500.0, 5000.0, 10000.0],
                               help="histogram: upper bounds of the buckets")
    labels: list[str] = opt(factory=list, help="record fields (dotted paths) whose values label the series")
    match_field: str = opt("", help="only records whose field (dotted path) passes the tests below")
    equals: str = opt("", help="match_field equals this (compared as text)")
    one_of: list[str] = opt(factory=list, help="match_field is one of these (compared as text)")
    exists: bool = opt(False, help="match_field is present")
    message_regex: str = opt("", help="only records whose message (message, else msg) matches this regex")
    max_series: int = opt(1000, min=1, help="label sets kept; more are folded into __overflow__")


@dataclass(slots=True)
class LogMetricsSettings:
    enabled: bool = opt(True, help="derive metrics from log records")
    prefix: str = opt("logs_", help="prefix of every derived metric name")
    defaults: bool = opt(True, help="built-in rules: lines by namespace and level, lines with trace context")
    host_label: bool = opt(False, help="label every derived series with host (host.name)")
    ship_to: str = opt("", help="also ship snapshots as records to this sink URL (kafka://, "
                                "elasticsearch://, file:, stdout); empty: only /metrics")
    ship_interval_secs: float = opt(60.0, min=1, help="how often a snapshot is shipped")
    rules: list[MetricRule] = opt(factory=list, help="user rules: [[log_metrics.rules]] tables")


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
    buffer: BufferSettings = field(default_factory=BufferSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log_metrics: LogMetricsSettings = field(default_factory=LogMetricsSettings)
