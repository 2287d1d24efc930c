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


def parse_body(body: bytes | list[bytes]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(action, document) pairs of a bulk body (or of its lines, one item each, from `_body`)."""
    if isinstance(body, list):
        assert all(item.count(b"\n") == 2 and item.endswith(b"\n") for item in body)
        body = b"".join(body)
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
        self.closed = False

    async def bulk(self, *, operations: bytes, filter_path: str) -> Any:
        self.bodies.append(operations)
        a = self.answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return type("R", (), {"body": a})()

    async def close(self) -> None:
        self.closed = True

    async def info(self) -> dict[str, Any]:
        return {"version": {"number": "8.14.1"}, "cluster_name": "fake"}


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
    body: dict[str, Any] = {"_index": "i", "status": status}
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
    assert dead["detail"] == ("400 from Elasticsearch at http://127.0.0.1:9200 for index 'i': "
                              "document_parsing_exception: document_parsing_exception happened")
    assert dead["offset"] == 200 and orjson.loads(dead["record"]) == {"message": "m2"}
    assert k._done == {}  # nothing kept after the batch completed


def test_whole_request_failures(tmp_path):
    from elastic_transport import ConnectionError as TransportConnectionError

    k = sink(tmp_path, index="i")
    b = batch(seg([{"message": "m"}]))
    client = FakeClient([TransportConnectionError("Connection refused"), api_error(503),
                         api_error(429), api_error(401)])
    errors = run_sends(k, client, b, 4)
    assert errors[0].startswith("RetriableSinkError") and "cannot reach Elasticsearch" in errors[0]
    assert errors[1].startswith("RetriableSinkError") and "answered 503" in errors[1]
    assert errors[2].startswith("RetriableSinkError") and "answered 429" in errors[2]
    assert errors[3].startswith("FatalSinkError") and "refused the credentials (401)" in errors[3]
    assert not k.healthy()


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / "elasticsearch.ndjson"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


class SizeLimitedClient(FakeClient):
    """A node whose http.max_content_length is `limit` bytes: a larger bulk body gets 413, a
    smaller one is indexed item by item."""

    def __init__(self, limit: int) -> None:
        super().__init__([])
        self.limit = limit
        self.indexed: list[str] = []

    async def bulk(self, *, operations: bytes, filter_path: str) -> Any:
        self.bodies.append(operations)
        if len(operations) > self.limit:
            raise api_error(413, "content_too_long", "Request content too long")
        pairs = parse_body(operations)
        self.indexed.extend(doc["message"] for _, doc in pairs)
        return type("R", (), {"body": {"errors": False, "items": [item(201) for _ in pairs]}})()


def test_a_bulk_request_too_large_is_split_and_only_a_single_oversized_document_dead_lettered(tmp_path):
    """413 on the whole request: the halves are sent, split again while refused; every document
    that fits alone is indexed once, the one that does not is dead-lettered (too_large)."""
    k = sink(tmp_path, index="i")
    docs = [{"message": f"m{i}", "pad": "x" * 100} for i in range(10)]
    docs[6]["pad"] = "y" * 2000  # alone above the limit
    client = SizeLimitedClient(limit=1000)
    assert run_sends(k, client, batch(seg(docs)), 1) == [""]
    assert sorted(client.indexed) == sorted(f"m{i}" for i in range(10) if i != 6)
    assert len(client.indexed) == 9  # none twice
    [dead] = dead_letters(tmp_path)
    assert dead["reason"] == "too_large" and dead["offset"] == 600
    assert dead["detail"].startswith("413 from Elasticsearch at http://127.0.0.1:9200"), dead["detail"]
    assert "content_too_long" in dead["detail"]
    assert k.splits > 0 and k._done == {}


def test_a_retriable_failure_of_one_half_resends_only_what_is_pending(tmp_path):
    """A 413 splits the request; the second half meets a 503: the retry sends only that half."""
    k = sink(tmp_path, index="i")
    b = batch(seg([{"message": f"m{i}"} for i in range(4)]))
    client = FakeClient([api_error(413), {"errors": False, "items": [item(201), item(201)]},
                         api_error(503), {"errors": False, "items": [item(201), item(201)]}])
    errors = run_sends(k, client, b, 2)
    assert errors[0].startswith("RetriableSinkError") and "answered 503" in errors[0]
    assert errors[1] == ""
    assert [[d["message"] for _, d in parse_body(body)] for body in client.bodies] == [
        ["m0", "m1", "m2", "m3"], ["m0", "m1"], ["m2", "m3"], ["m2", "m3"]]
    assert dead_letters(tmp_path) == []


def test_a_write_blocked_index_dead_letters_its_documents_as_not_authorized(tmp_path, caplog):
    """Per-item 403 (cluster_block_exception: `PUT /<index>/_block/write`): those documents are
    dead-lettered with not_authorized and a detail naming the index; the others are indexed; one
    warning names the index for several batches."""
    k = sink(tmp_path, index="i")
    blocked = {"index": {"_index": "logs-b", "status": 403, "error": {
        "type": "cluster_block_exception",
        "reason": "index [logs-b] blocked by: [FORBIDDEN/8/index write (api)];"}}}
    ok = {"index": {"_index": "logs-a", "status": 201}}
    client = FakeClient([{"errors": True, "items": [ok, blocked, ok]},
                         {"errors": True, "items": [blocked, ok, ok]}])
    with caplog.at_level("WARNING", logger="tailship"):
        assert run_sends(k, client, batch(seg([{"message": f"m{i}"} for i in range(3)])), 2) == ["", ""]
    dead = dead_letters(tmp_path)
    assert [d["offset"] for d in dead] == [100, 0]
    for d in dead:
        assert d["reason"] == "not_authorized"
        assert d["detail"].startswith("403 from Elasticsearch at http://127.0.0.1:9200 for index "
                                      "'logs-b': cluster_block_exception"), d["detail"]
    warnings = [r.getMessage() for r in caplog.records if "logs-b" in r.getMessage()]
    assert len(warnings) == 1 and "1 record(s)" in warnings[0], warnings


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_read_again_before_the_next_attempt(tmp_path, status):
    """A 401/403 on the whole bulk request is a FatalSinkError (`tail --once` stops; the daemon
    retries); the next send builds a new client with the password file read again, and once the
    rotated secret is accepted the same batch is delivered."""
    pw = tmp_path / "pw"
    pw.write_text("old\n")
    k = sink(tmp_path, index="i", username="tailship", password_file=str(pw))
    refused = FakeClient([api_error(status, "security_exception", "unable to authenticate")])
    healed = FakeClient([{"errors": False, "items": [item(201)]}])
    passwords: list[str] = []

    def open_client() -> FakeClient:
        passwords.append(client_options(k.s)["basic_auth"][1])
        return healed

    k._open_client = open_client  # type: ignore[method-assign]
    pw.write_text("new\n")  # the operator rotates the secret
    errors = run_sends(k, refused, batch(seg([{"message": "m"}])), 2)
    assert errors[0].startswith("FatalSinkError: sink elasticsearch: bulk refused: Elasticsearch at "
                                "http://127.0.0.1:9200"), errors[0]
    assert "new" not in errors[0] and "old" not in errors[0]
    assert errors[1] == "" and passwords == ["new"] and refused.closed and k.healthy()


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
