"""The Kafka sink's options, their cross-checks and its URL form (`kafka://HOST:PORT/TOPIC`).

Validated by `agent.config` from the field metadata; `check` adds what one field alone cannot
say. No I/O here: the sink connects in `start()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.options import opt


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
    refused_topic_recheck_secs: float = opt(30.0, min=0.1,
                                            help="a missing or write-denied topic's records go to "
                                                 "dead letters this long before it is asked for again")
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
    def check(self, path: str) -> list[tuple[str, str]]:
        """Problems between options: (key path, what)."""
        if self.idempotence and self.acks != "all":
            # aiokafka refuses an idempotent producer unless every replica acknowledges
            return [(f"{path}.acks", f"expected 'all' while {path}.idempotence = true (or set that "
                                     f"to false), got {self.acks!r}")]
        return []


def from_url(rest: str) -> dict[str, Any]:
    """`//HOST:PORT[,HOST:PORT]/TOPIC` → the sink table it stands for."""
    hosts, _, topic = rest.removeprefix("//").partition("/")
    if not rest.startswith("//") or not hosts or not topic:
        raise ValueError("kafka sink URL needs brokers and a topic: kafka://HOST:PORT/TOPIC")
    return {"type": "kafka", "kafka": {"bootstrap_servers": hosts.split(","), "topic": topic,
                                       "fallback_topic": topic}}
