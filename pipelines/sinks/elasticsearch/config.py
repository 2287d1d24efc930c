"""The Elasticsearch sink's options and its URL form
(`elasticsearch[+https]://HOST:PORT[,HOST:PORT]/INDEX`). No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.options import opt


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
    def check(self, path: str) -> list[tuple[str, str]]:
        """Problems between options: (key path, what). None so far."""
        return []


def from_url(rest: str, https: bool) -> dict[str, Any]:
    """`//HOST:PORT[,HOST:PORT]/INDEX` → the sink table it stands for."""
    hosts, _, index = rest.removeprefix("//").partition("/")
    if not rest.startswith("//") or not hosts or not index:
        raise ValueError("elasticsearch sink URL needs nodes and an index: elasticsearch://HOST:PORT/INDEX")
    http = "https" if https else "http"
    return {"type": "elasticsearch", "elasticsearch": {
        "urls": [f"{http}://{h}" for h in hosts.split(",")], "index": index, "fallback_index": index}}
