"""The Elasticsearch sink: one `_bulk` request per batch, its body pre-serialized NDJSON bytes.

Every record becomes an action line and the record itself (already JSON bytes from the chain):
no per-document Python objects and no client helpers on the hot path. The document `_id` is
derived from (file identity, offset), so a batch re-sent after a crash or a retry overwrites the
same documents (`op_type = "index"`) or is refused as already present (`"create"`, 409 counted
as delivered): any number of crashes leaves each line in the index once.

The response is read item by item (`filter_path` keeps only status and error). Items that failed
with a retriable status (429, 5xx) are left pending and the batch raises RetriableSinkError: the
sender backs off and calls `send` again, and only the pending items are re-sent. Items rejected
for their content (400 mapping conflicts, other 4xx) go to the dead-letter file with status and
reason; a 403 (an index write block, `cluster_block_exception`) as not_authorized, naming the
index, with one warning per index per minute. The batch is acknowledged (send returns) only when
every item was indexed or dead-lettered, so a file's checkpoint never passes an item still pending.

A bulk request refused as too large (413, above the cluster's `http.max_content_length`) is split
in halves, each sent on its own and split again while refused; only a single document still
refused alone goes to the dead-letter file (too_large). A 401/403 on the whole bulk request (the
credentials of the sink refused) is a FatalSinkError; the next `send` first builds a new client
with the password and API key files read again, so a rotated secret heals without a restart
when the daemon retries (`tail --once` stops instead).

Index names: a template over the file's kubernetes fields (`{kubernetes.namespace}`), then strftime
codes filled from the record's `@timestamp` (the one the agent writes; day and hour codes such as
%Y %m %d %H; the date as written in the timestamp, normally UTC).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pipelines import layout
from pipelines.deadletter import DeadLetter, DestinedEntry, Reason
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from pipelines.refusals import DeadLetterLog
from pipelines.secrets import add_secret
from pipelines.sinks.elasticsearch.config import ElasticsearchSettings
from pipelines.sinks.template import FieldTemplate

log = logging.getLogger("tailship.elasticsearch")

# only what is needed to tell each item's fate: small responses, cheap to parse
_FILTER = "errors,items.*._index,items.*.status,items.*.error.type,items.*.error.reason"
_TS = b'"@timestamp":"'
Item = tuple[Segment, int, int]  # segment, index in it, number in the batch
_TIME_CODES = re.compile(r"%[YmdHjyUWVGuaAbBe]")


def redact_url(url: str) -> str:
    """The URL without user:password@ (URLs may carry credentials; they are never logged)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    if parts.password:
        add_secret(parts.password)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _read_secret(value: str, path: str, what: str) -> str:
    if path:
        try:
            secret = Path(path).read_text().strip()
            add_secret(secret)
            return secret
        except OSError as exc:
            raise FatalSinkError("elasticsearch", f"cannot read {what} {path!r}: {exc.strerror}") from exc
    return value


def client_options(s: ElasticsearchSettings) -> dict[str, Any]:
    """AsyncElasticsearch arguments from settings (secrets included, never logged). Retries are
    ours (the sender's backoff), so the client's own are off."""
    opts: dict[str, Any] = {
        "request_timeout": s.request_timeout_secs, "max_retries": 0, "retry_on_timeout": False,
        "http_compress": s.compression,
    }
    password = _read_secret(s.password, s.password_file, "password_file")
    if s.username or password:
        opts["basic_auth"] = (s.username, password)
    api_key = _read_secret(s.api_key, s.api_key_file, "api_key_file")
    if api_key:
        opts["api_key"] = api_key
    if any(u.startswith("https:") for u in s.urls):
        opts["verify_certs"] = s.tls_verify
        if s.tls_ca_file:
            opts["ca_certs"] = s.tls_ca_file
    return opts


class IndexNames:
    """Index name of each record: the field template once per segment, time codes per record."""

    def __init__(self, template: str, fallback: str) -> None:
        self.fields = FieldTemplate(template, fallback)
        self._actions: dict[tuple[str, bytes], bytes] = {}

    def action_prefixes(self, seg: Segment, op: bytes) -> list[bytes]:
        """For each record of `seg`: the action line up to the `_id` value."""
        name = self.fields.resolve(seg.meta)
        if not _TIME_CODES.search(name):
            prefix = self._prefix(name, b"", op)
            return [prefix] * len(seg.records)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H").encode()
        out = []
        for rec in seg.records:
            i = rec.rfind(_TS)
            hour = rec[i + 14:i + 27] if i >= 0 else now  # YYYY-MM-DDTHH
            out.append(self._prefix(name, hour, op))
        return out

    def _prefix(self, name: str, hour: bytes, op: bytes) -> bytes:
        key = (name, hour)
        prefix = self._actions.get(key)
        if prefix is None:
            index = name
            if hour:
                try:
                    when = datetime.strptime(hour.decode(), "%Y-%m-%dT%H")
                except ValueError:  # not a timestamp we can read: the current hour
                    when = datetime.now(UTC)
                index = when.strftime(name)
            prefix = b'{"' + op + b'":{"_index":' + orjson.dumps(index.lower())
            if len(self._actions) > 4096:
                self._actions.clear()
            self._actions[key] = prefix
        return prefix


def _doc_id_prefix(file_key: str) -> bytes:
    digest = hashlib.blake2b(file_key.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=") + b"-"


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(self, settings: ElasticsearchSettings, data_dir: str, name: str = "elasticsearch",
                 dead: DeadLetter | None = None) -> None:
        self.name = name
        self.s = settings
        self.where = ",".join(redact_url(u) for u in settings.urls)
        self.names = IndexNames(settings.index, settings.fallback_index)
        self.dead = dead or DeadLetter(layout.dead_letter_file(data_dir, name), name)
        self._op = settings.op_type.encode()
        self._client: Any = None
        self._done: dict[int, set[int]] = {}   # batch seq → item numbers indexed or dead-lettered
        self._id_prefixes: dict[str, bytes] = {}
        self._ok = True
        self._closed = False
        self._refused = False  # the last bulk request was refused 401/403: new client first
        self.duplicates = 0  # 409s in create mode: the document was already there
        self.splits = 0  # bulk requests split in halves after a 413
        self.rejections = DeadLetterLog(name)

    def _open_client(self) -> Any:
        """A client with the secret files read now (at every start: a rotated secret is taken up)."""
        from elasticsearch import AsyncElasticsearch
        from elasticsearch.serializer import OrjsonSerializer

        return AsyncElasticsearch(self.s.urls, serializer=OrjsonSerializer(), **client_options(self.s))

    async def start(self) -> None:
        self._client = self._open_client()
        try:
            info = await self._client.info()
        except Exception as exc:  # noqa: BLE001 - every failure at start is fatal and explained
            await self._client.close()
            self._client = None
            raise FatalSinkError(self.name, self._explain(exc, "cannot start")) from exc
        log.info("Elasticsearch %s at %s (cluster %s)", info["version"]["number"], self.where,
                 info.get("cluster_name"))

    def _explain(self, exc: BaseException, what: str) -> str:
        from elasticsearch import ApiError, UnsupportedProductError

        if isinstance(exc, UnsupportedProductError):
            return f"{what}: {self.where} is not Elasticsearch ({exc.message})"
        if isinstance(exc, ApiError):
            status = exc.meta.status
            if status == 401:
                return f"{what}: Elasticsearch at {self.where} refused the credentials (401)"
            if status == 403:
                return (f"{what}: Elasticsearch at {self.where} denied access (403: "
                        f"{_api_reason(exc)})")
            return f"{what}: Elasticsearch at {self.where} answered {status}: {_api_reason(exc)}"
        cause = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"{what}: cannot reach Elasticsearch at {self.where}: {type(exc).__name__}: {cause}"

    async def send(self, batch: Batch) -> None:
        if self._closed or self._client is None:
            raise FatalSinkError(self.name, "send before start or after close")
        if self._refused:  # credentials refused last time: read them again, with a new client
            await self._client.close()
            self._client = None
            await self.start()
            self._refused = False
        done = self._done.setdefault(batch.seq, set())
        lines, items = self._body(batch, done)
        if items:
            splits = self.splits
            retry = await self._send_items(lines, items, done)
            if self.splits > splits:
                log.info("Elasticsearch at %s refused a bulk request of %d documents as too large "
                         "(413): sent in %d smaller requests", self.where, len(items),
                         self.splits - splits + 1)
            if retry:
                self._ok = False
                raise RetriableSinkError(self.name, f"Elasticsearch at {self.where}: {retry}; "
                                         "retrying those documents")
        self._done.pop(batch.seq, None)
        self._ok = True

    def _body(self, batch: Batch, done: set[int]) -> tuple[list[bytes], list[Item]]:
        """The NDJSON bulk body of every item not yet done (its action and source lines each,
        so that it can be cut between items), and (segment, index) of each."""
        parts: list[bytes] = []
        items: list[Item] = []
        n = 0
        with_ids = self.s.id_mode == "file_offset"
        trace_mode = self.s.trace_fields
        for seg in batch.segments:
            prefixes = self.names.action_prefixes(seg, self._op)
            idp = self._id_prefix(seg.file_key) if with_ids else b""
            for i, rec in enumerate(seg.records):
                if n + i in done:
                    continue
                if with_ids:
                    action = b'%s,"_id":"%s%x"}}\n' % (prefixes[i], idp, seg.offsets[i])
                else:
                    action = prefixes[i] + b"}}\n"
                if trace_mode != "plain" and (seg.trace_ids[i] or seg.span_ids[i]):
                    rec = _with_ecs(rec, seg.trace_ids[i], seg.span_ids[i], trace_mode == "ecs")
                parts.append(action + rec + b"\n")
                items.append((seg, i, n + i))
            n += len(seg.records)
        return parts, items

    def _id_prefix(self, file_key: str) -> bytes:
        p = self._id_prefixes.get(file_key)
        if p is None:
            if len(self._id_prefixes) > 65536:
                self._id_prefixes.clear()
            p = self._id_prefixes[file_key] = _doc_id_prefix(file_key)
        return p

    async def _send_items(self, lines: list[bytes], items: list[Item], done: set[int]) -> str:
        """One bulk request of `items` (their `lines`), split in halves while refused as too large;
        a summary of the items left pending, or ""."""
        body = b"".join(lines)
        try:
            result = await self._bulk(body)
        except _TooLarge as exc:
            if len(items) == 1:
                seg, i, num = items[0]
                entry = (Reason.TOO_LARGE, f"413 from Elasticsearch at {self.where}: a bulk request "
                         f"of this document alone ({len(body)} bytes) is too large: {exc}",
                         seg.path, seg.offsets[i], seg.records[i])
                await asyncio.to_thread(self.dead.write, [entry])
                self.rejections.add("too large (413)", 1, entry[1], str(self.dead.path))
                done.add(num)
                return ""
            self.splits += 1
            mid = len(items) // 2
            first = await self._send_items(lines[:mid], items[:mid], done)
            second = await self._send_items(lines[mid:], items[mid:], done)
            return ", ".join(x for x in (first, second) if x)
        return await self._settle(result, items, done)

    async def _bulk(self, body: bytes) -> dict[str, Any]:
        from elasticsearch import ApiError

        try:
            resp = await self._client.bulk(operations=body, filter_path=_FILTER)
        except ApiError as exc:
            self._ok = False
            status = exc.meta.status
            if status in (401, 403):
                self._refused = True
                raise FatalSinkError(self.name, self._explain(exc, "bulk refused")) from exc
            if status == 413:
                raise _TooLarge(_api_reason(exc)) from exc
            raise RetriableSinkError(self.name, self._explain(exc, "bulk failed")) from exc
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, TLS: all retriable
            self._ok = False
            raise RetriableSinkError(self.name, self._explain(exc, "bulk failed")) from exc
        return dict(resp.body)

    async def _settle(self, result: dict[str, Any], items: list[Item],
                      done: set[int]) -> str:
        """Mark each item done, dead-lettered or pending; a summary of the pending ones, or ""."""
        results = result.get("items") or []
        if len(results) != len(items):
            raise RetriableSinkError(self.name, f"Elasticsearch at {self.where} answered {len(results)} "
                                     f"bulk items for {len(items)} documents")
        pending: dict[int, int] = {}  # status → count
        dead: list[DestinedEntry] = []
        dead_nums: list[int] = []
        per_index: dict[str, tuple[int, str]] = {}  # dead letters of each index: count, a detail
        reasons: dict[int, str] = {}
        for (seg, i, num), res in zip(items, results, strict=True):
            (outcome,) = res.values()
            status = outcome.get("status", 0)
            if status < 300:
                done.add(num)
            elif status == 409 and self._op == b"create":
                done.add(num)
                self.duplicates += 1
            elif status == 429 or status >= 500:
                pending[status] = pending.get(status, 0) + 1
                reasons.setdefault(status, _item_reason(outcome))
            else:
                index = outcome.get("_index", "?")
                detail = (f"{status} from Elasticsearch at {self.where} for index {index!r}: "
                          f"{_item_reason(outcome)}")
                dead.append((_dead_reason(status), detail, seg.path, seg.offsets[i], seg.records[i],
                             index))
                per_index[index] = (per_index.get(index, (0, ""))[0] + 1, detail)
                dead_nums.append(num)
        if dead:
            # done only once written: a disk error here retries the batch, these items with it
            await asyncio.to_thread(self.dead.write, dead)
            done.update(dead_nums)
            for index, (n, detail) in per_index.items():
                self.rejections.add(f"index {index}", n, detail, str(self.dead.path))
        return ", ".join(f"{c} document(s) rejected with {s} ({reasons[s]})" for s, c in pending.items())

    async def close(self, timeout_secs: float) -> None:
        self._closed = True
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.close(), timeout_secs)
            except Exception as exc:  # noqa: BLE001
                log.warning("elasticsearch client did not close cleanly: %s", exc)
            self._client = None

    def healthy(self) -> bool:
        return self._ok and self._client is not None


class _TooLarge(Exception):
    """A bulk request refused with 413 (its cause): split it."""


def _with_ecs(rec: bytes, tid: str | None, sid: str | None, replace: bool) -> bytes:
    """The record with ECS `trace.id` / `span.id` added (and trace_id/span_id removed if `replace`)."""
    if replace:
        obj = orjson.loads(rec)
        obj.pop("trace_id", None)
        obj.pop("span_id", None)
        if tid:
            obj["trace.id"] = tid
        if sid:
            obj["span.id"] = sid
        return orjson.dumps(obj)
    extra = b""
    maybe = b'.id"' in rec  # one scan; the two exact ones only when a dotted id key may be there
    if tid and not (maybe and b'"trace.id"' in rec):
        extra += b',"trace.id":' + orjson.dumps(tid)
    if sid and not (maybe and b'"span.id"' in rec):
        extra += b',"span.id":' + orjson.dumps(sid)
    return rec[:-1] + extra + b"}" if extra else rec


def _item_reason(outcome: dict[str, Any]) -> str:
    err = outcome.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'error')}: {err.get('reason', '')}"
    return str(err) if err else "no reason given"


def _api_reason(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return f"{err.get('type')}: {err.get('reason')}"
        if err:
            return str(err)
    return str(getattr(exc, "message", "")) or type(exc).__name__


def _dead_reason(status: int) -> Reason:
    """The dead-letter reason code of a document refused with `status` (4xx other than 409/429)."""
    if status == 413:
        return Reason.TOO_LARGE
    if status in (401, 403):
        return Reason.NOT_AUTHORIZED
    if status == 404:
        return Reason.MISSING_DESTINATION
    return Reason.REJECTED
