"""Pieces of the Elasticsearch sink that need no server: bulk body, index names, ids, options,
and the error paths a real node cannot be made to produce on demand (a fake client stands in).
What proves the sink works against Elasticsearch is tests/integration/test_elasticsearch.py."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.settings import ElasticsearchSettings
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.sinks.elasticsearch import (
    ElasticsearchSink,
    IndexNames,
    _with_ecs,
    client_options,
    redact_url,
)


def seg(records: list[dict[str, Any]], meta: dict[str, Any] | None = None, key: str = "fk",
        tids: list[str | None] | None = None) -> Segment:
    s = Segment(file_key=key, path="/var/log/containers/x.log", meta=meta or {})
    for i, r in enumerate(records):
        s.records.append(orjson.dumps(r))
        s.offsets.append(i * 100)
        s.trace_ids.append(tids[i] if tids else None)
        s.span_ids.append(None)
    return s


def batch(*segs: Segment) -> Batch:
    b = Batch(seq=1)
    for s in segs:
        b.add(s)
    return b


def sink(tmp_path: Path, **kw: Any) -> ElasticsearchSink:
    return ElasticsearchSink(dataclasses.replace(ElasticsearchSettings(), **kw), str(tmp_path))


def parse_body(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    lines = body.split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    return [(orjson.loads(lines[i]), orjson.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


def test_bulk_body_actions_ids_and_index_names(tmp_path):
    """Index from the file's namespace and each record's @timestamp day; ids from (file, offset)."""
    k = sink(tmp_path)
    a = seg([{"message": "a", "@timestamp": "2026-11-23T23:59:59.9Z"},
             {"message": "b", "@timestamp": "2026-11-24T00:00:00Z"}],
            meta={"kubernetes": {"namespace": "Shop"}})
    b = seg([{"message": "c", "@timestamp": "2026-11-24T01:00:00Z"}], key="other")
    body, items = k._body(batch(a, b), set())
    pairs = parse_body(body)
    assert [p[0]["index"]["_index"] for p in pairs] == ["logs-shop-2026.11.23", "logs-shop-2026.11.24",
                                                        "logs-unknown-2026.11.24"]
    assert [p[1]["message"] for p in pairs] == ["a", "b", "c"]
    ids = [p[0]["index"]["_id"] for p in pairs]
    assert ids[0].endswith("-0") and ids[1].endswith("-64") and ids[2].endswith("-0")
    assert ids[0].rsplit("-", 1)[0] == ids[1].rsplit("-", 1)[0] != ids[2].rsplit("-", 1)[0]
    assert [n for _, _, n in items] == [0, 1, 2]
    again, _ = sink(tmp_path)._body(batch(a, b), set())
    assert again == body  # deterministic: a re-send after a crash overwrites the same documents
    rest, items = k._body(batch(a, b), {0, 2})
    assert [p[1]["message"] for p in parse_body(rest)] == ["b"] and [n for _, _, n in items] == [1]


def test_create_mode_and_no_ids(tmp_path):
    k = sink(tmp_path, op_type="create", id_mode="none", index="plain")
    body, _ = k._body(batch(seg([{"message": "a"}])), set())
    assert parse_body(body)[0][0] == {"create": {"_index": "plain"}}


def test_hour_codes_and_records_without_timestamp(tmp_path):
    names = IndexNames("x-%Y.%m.%d.%H", "fb")
    s = seg([{"@timestamp": "2026-01-02T03:04:05Z"}, {"message": "no time"}, {"@timestamp": "garbage!"}])
    got = [orjson.loads(p + b"}}")["index"]["_index"] for p in names.action_prefixes(s, b"index")]
    assert got[0] == "x-2026.01.02.03"
    assert got[1].startswith("x-2") and got[2].startswith("x-2")  # the current hour, not a crash


@pytest.mark.parametrize("mode,expect", [
    ("plain", {"message": "m", "trace_id": "t" * 32}),
    ("both", {"message": "m", "trace_id": "t" * 32, "trace.id": "t" * 32}),
    ("ecs", {"message": "m", "trace.id": "t" * 32}),
])
def test_trace_field_modes(tmp_path, mode, expect):
    k = sink(tmp_path, trace_fields=mode, index="i")
    body, _ = k._body(batch(seg([{"message": "m", "trace_id": "t" * 32}], tids=["t" * 32])), set())
    assert parse_body(body)[0][1] == expect


def test_with_ecs_never_duplicates_a_key():
    rec = orjson.dumps({"trace.id": "abc", "trace_id": "abc"})
    assert _with_ecs(rec, "abc", None, replace=False) == rec


def test_redact_url_and_options_keep_secrets_out_of_messages(tmp_path):
    assert redact_url("https://elastic:s3cret@es.example:9243/x") == "https://es.example:9243/x"
    assert redact_url("http://h:9200") == "http://h:9200"
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    s = dataclasses.replace(ElasticsearchSettings(), urls=["https://u:p@h:9243"], username="elastic",
                            password_file=str(pw), api_key="a2V5", tls_ca_file="/ca.pem", tls_verify=False)
    opts = client_options(s)
    assert opts["basic_auth"] == ("elastic", "from-file") and opts["api_key"] == "a2V5"
    assert opts["ca_certs"] == "/ca.pem" and opts["verify_certs"] is False and opts["max_retries"] == 0
    k = ElasticsearchSink(s, str(tmp_path))
    assert k.where == "https://h:9243"
    missing = dataclasses.replace(s, password_file=str(tmp_path / "nope"))
    with pytest.raises(FatalSinkError, match="cannot read password_file"):
        client_options(missing)


class FakeClient:
    """Answers each bulk with the next entry of `answers`: an exception or a response body."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.bodies: list[bytes] = []

    async def bulk(self, *, operations: bytes, filter_path: str) -> Any:
        self.bodies.append(operations)
        a = self.answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return type("R", (), {"body": a})()

    async def close(self) -> None:
        pass


def api_error(status: int, etype: str = "x", reason: str = "y") -> Exception:
    from elastic_transport import ApiResponseMeta, HttpHeaders
    from elasticsearch import ApiError

    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=None)  # type: ignore[arg-type]
    return ApiError(f"{status}", meta=meta, body={"error": {"type": etype, "reason": reason}})


def run_sends(k: ElasticsearchSink, client: FakeClient, b: Batch, attempts: int) -> list[str]:
    """`attempts` sends of the same batch; the error of each failed one ("" for success)."""

    async def go() -> list[str]:
        k._client = client
        out = []
        for _ in range(attempts):
            try:
                await k.send(b)
                out.append("")
            except (RetriableSinkError, FatalSinkError) as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    return asyncio.run(asyncio.wait_for(go(), 30))


def item(status: int, etype: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status}
    if etype:
        body["error"] = {"type": etype, "reason": f"{etype} happened"}
    return {"index": body}


def test_item_outcomes_retry_only_pending_and_dead_letter_content_errors(tmp_path):
    k = sink(tmp_path, index="i")
    b = batch(seg([{"message": f"m{i}"} for i in range(4)]))
    client = FakeClient([
        {"errors": True, "items": [item(201), item(429, "es_rejected_execution_exception"),
                                   item(400, "document_parsing_exception"), item(503, "unavailable")]},
        {"errors": False, "items": [item(201), item(200)]},
    ])
    errors = run_sends(k, client, b, 2)
    assert errors[0].startswith("RetriableSinkError") and "1 document(s) rejected with 429" in errors[0]
    assert "1 document(s) rejected with 503" in errors[0] and errors[1] == ""
    assert [p[1]["message"] for p in parse_body(client.bodies[1])] == ["m1", "m3"]
    [dead] = [orjson.loads(x) for x in (tmp_path / "deadletter" / "elasticsearch.ndjson").read_bytes()
              .splitlines()]
    assert dead["reason"] == "rejected"
    assert dead["detail"] == "400 document_parsing_exception: document_parsing_exception happened"
    assert dead["offset"] == 200 and orjson.loads(dead["record"]) == {"message": "m2"}
    assert k._done == {}  # nothing kept after the batch completed


def test_whole_request_failures(tmp_path):
    from elastic_transport import ConnectionError as TransportConnectionError

    k = sink(tmp_path, index="i")
    b = batch(seg([{"message": "m"}]))
    client = FakeClient([TransportConnectionError("Connection refused"), api_error(503),
                         api_error(429), api_error(401), api_error(413)])
    errors = run_sends(k, client, b, 5)
    assert errors[0].startswith("RetriableSinkError") and "cannot reach Elasticsearch" in errors[0]
    assert errors[1].startswith("RetriableSinkError") and "answered 503" in errors[1]
    assert errors[2].startswith("RetriableSinkError") and "answered 429" in errors[2]
    assert errors[3].startswith("FatalSinkError") and "refused the credentials (401)" in errors[3]
    assert errors[4].startswith("FatalSinkError") and "lower batch.max_bytes" in errors[4]
    assert not k.healthy()


def test_item_count_mismatch_is_retried_not_trusted(tmp_path):
    k = sink(tmp_path, index="i")
    client = FakeClient([{"errors": False, "items": []}])
    [err] = run_sends(k, client, batch(seg([{"message": "m"}])), 1)
    assert err.startswith("RetriableSinkError") and "answered 0 bulk items for 1 documents" in err


def test_a_dead_letter_the_disk_refuses_keeps_its_document_pending(tmp_path, monkeypatch):
    """The dead-letter write fails (full disk): the batch is retried, the refused document is
    sent again and dead-lettered once the disk takes it; nothing is marked done before."""
    k = sink(tmp_path, index="i")
    b = batch(seg([{"message": "m0"}, {"message": "m1"}]))
    client = FakeClient([
        {"errors": True, "items": [item(201), item(400, "document_parsing_exception")]},
        {"errors": True, "items": [item(400, "document_parsing_exception")]},
    ])
    real = k.dead._store

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(k.dead, "_store", full)
    [first] = run_sends(k, client, b, 1)
    assert first.startswith("RetriableSinkError") and "No space left on device" in first
    assert "deadletter/elasticsearch.ndjson" in first
    monkeypatch.setattr(k.dead, "_store", real)
    assert run_sends(k, client, b, 1) == [""]
    assert [p[1]["message"] for p in parse_body(client.bodies[1])] == ["m1"]
    [dead] = [orjson.loads(x) for x in (tmp_path / "deadletter" / "elasticsearch.ndjson").read_bytes()
              .splitlines()]
    assert orjson.loads(dead["record"]) == {"message": "m1"} and dead["destination"] == "i"
