"""Deterministic (seeded) generator of realistic container logs in the kubelet layout.

    DIR/pods/<namespace>_<pod>_<pod uid>/<container>/0.log                      real files
    DIR/containers/<pod>_<namespace>_<container>-<64 hex container id>.log     absolute symlinks
    DIR/manifest.json                                                          what was written

Container formats, byte for byte as the runtimes write them:

* docker json-file: `{"log":"<payload>\\n","stream":"stdout","time":"<RFC3339Nano>"}`, with Go's
  HTML escaping of `<`, `>`, `&` (`\\u003c` ...) like dockerd. A payload over 16 KiB becomes
  several entries of 16384 payload bytes each; all but the last lack the trailing `\\n`.
* CRI (containerd): `<RFC3339Nano> <stdout|stderr> <P|F> <payload>`; over 16 KiB: `P` pieces of
  16384 bytes, then the rest as `F`.

Timestamps are Go's RFC3339Nano: nanoseconds with trailing zeros trimmed, as both runtimes do.

Payloads: app JSON objects (`ts`, `level`/`severity`/`lvl`, `logger`, `msg`/`message`, `service`,
HTTP fields, ...) carrying trace context in a convention that rotates per record (`trace_id`,
`traceId` upper-case, ECS `trace.id`, W3C `traceparent`, B3 with 32- or 16-hex ids, Datadog
decimal `dd.trace_id`, Google Cloud `logging.googleapis.com/trace`, none); logfmt plain-text lines
with `trace_id=`/`span_id=`; every `stack_every` records an error record followed by a Java or
Python stack trace, one physical line (and one record) per trace line, without ids of its own;
every `long_every` records one payload of 16-40 KiB. Whole lines average `avg_bytes` (spread
0.3x..1.7x; long records and stack lines come on top).

Every record carries a sequence number unique across the tree (`"seq": n` and `"wts": <write
time, epoch seconds>` in JSON, ` seq=<n>` at the end of text lines), so a receiver can check that
every record arrived exactly once.

    python -m bench.generate --out DIR [--seed N] [--pods N] [--containers N] [--lines N]
                             [--format docker|cri|mixed] [--avg-bytes 1024] [--long-every 500]
                             [--stack-every 200] [--start RFC3339|EPOCH|now] [--with-expected]
                             [--no-manifest] [--clean]
    python -m bench.generate --single-file PATH --lines N [--format docker] [--manifest PATH]

`--lines` counts records (a long record is several physical lines; a stack trace is one record
per line). See `Manifest` for the manifest format.
"""

from __future__ import annotations

import argparse
import calendar
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import orjson

SPLIT = 16384                      # runtime line limit: payload bytes per split piece
LONG_MIN, LONG_MAX = SPLIT + 1, 40 * 1024
BASE_EPOCH = 1795514400            # 2026-11-24T10:00:00Z: fixed, so output is a function of the seed
EXPECTED_LIMIT = 50_000            # trees up to this many records get per-seq expectations by default
MANIFEST_VERSION = 1

# trace conventions (the rotation of normal records); NONE_* carry no context
TRACE_ID, TRACE_CAMEL, ECS, TRACEPARENT, B3, DATADOG, GCP, NONE_A, NONE_B, LOGFMT = range(10)
ROTATION = (TRACE_ID, TRACE_CAMEL, ECS, NONE_A, TRACEPARENT, B3, LOGFMT, DATADOG, GCP, NONE_B)

_PH = "~~FILL~~"                   # placeholder for the size filler (never escaped, never in text)
_PHB = _PH.encode()
_MASK64 = (1 << 64) - 1
_POOL_CHARS = 1 << 20

# (namespace, app, workload kind, language of its stack traces); interleaved so that a few pods
# already cover several namespaces
SERVICES = (
    ("shop", "checkout", "deploy", "java"),
    ("payments", "payments-api", "deploy", "java"),
    ("kube-system", "coredns", "deploy", "python"),
    ("shop", "cart", "deploy", "python"),
    ("payments", "ledger", "sts", "java"),
    ("search", "search-api", "deploy", "python"),
    ("identity", "auth", "deploy", "java"),
    ("shop", "catalog", "deploy", "java"),
    ("payments", "fraud-scorer", "deploy", "python"),
    ("kube-system", "kube-proxy", "ds", "python"),
    ("search", "indexer", "sts", "java"),
    ("shop", "frontend", "deploy", "python"),
    ("identity", "session-store", "sts", "python"),
    ("monitoring", "alert-router", "deploy", "java"),
)
SIDECARS = ("istio-proxy", "log-forwarder", "config-reloader")
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # what Kubernetes uses for generated name suffixes

# (level key, message key, level values for info/debug/warn/error)
STYLES = (
    ("level", "msg", ("info", "debug", "warn", "error")),
    ("severity", "message", ("INFO", "DEBUG", "WARNING", "ERROR")),
    ("lvl", "msg", ("info", "dbug", "warn", "eror")),
    ("level", "message", ("INFO", "DEBUG", "WARN", "ERROR")),
)
_LEVEL_CUM = (0.70, 0.80, 0.93, 1.0)  # info, debug, warn, error

WORDS = (
    "the request was handled by upstream service after validation of the payload and the cache "
    "lookup returned a stale entry so we refreshed it from the primary database replica while "
    "holding a short lease on the inventory record for the current tenant session token order "
    "item price currency shipping address customer account balance ledger entry reconciled "
    "queue consumer offset committed partition rebalance completed heartbeat scheduler worker "
    "thread pool saturated backoff retry circuit breaker half open closed latency budget "
    "exceeded threshold metric exported span context propagated header baggage region zone "
    "replica leader election renewed config reload detected feature flag enabled rollout "
    "percentage canary stable deployment revision checksum matched payload compressed bytes "
    "written flushed fsync segment rolled index merged shard allocation query planner chose "
    "nested loop hash join sequential scan vacuum analyze connection acquired released idle "
    "timeout keepalive handshake certificate rotated expires soon grpc status ok unavailable "
    "deadline cancelled aborted resource exhausted permission denied not found created updated"
).split()
PATHS = ("/api/v1/cart", "/api/v1/checkout", "/api/v1/items/4711", "/api/v2/orders", "/login",
         "/api/v1/payments/authorize", "/search?q=red+shoes&page=2", "/healthz", "/metrics",
         "/api/v1/users/me", "/graphql", "/api/v1/inventory/reserve")
METHODS = ("GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH")
STATUSES = (200, 200, 200, 200, 200, 201, 204, 301, 400, 401, 404, 409, 429, 500, 502, 503)
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
          "okhttp/4.12.0", "python-requests/2.32.3", "Go-http-client/2.0", "curl/8.10.1",
          "kube-probe/1.31")
REGIONS = ("eu-west-1", "us-east-1", "ap-northeast-1")
HEADS = {
    "info": ("{m} {p} {s} in {d}ms", "order {o} placed", "user {u} logged in",
             "processed batch of {n} events", "published {n} messages to topic orders",
             "request completed", "cache hit for key sku:{n}", "reserved {n} items for order {o}"),
    "debug": ("cache miss for key sku:{n}", "pool stats active={n} idle={d}",
              "resolved upstream inventory in {d}ms", "span exported in {d}ms"),
    "warn": ("slow query took {d}ms", "retrying call to inventory (attempt {n})",
             "rate limit approaching for tenant t-{n}", "config key timeout_ms deprecated"),
    "error": ("payment declined for order {o}", "upstream timeout calling ledger after {d}ms",
              "failed to process message at offset {n}", "unhandled exception in handler {p}"),
}
# rarely appended to JSON messages: escaping (quotes, backslash, tab), Go's HTML escaping, UTF-8
SPECIALS = (' customer note: "fragile <glass> & handle with care"', " file=C:\\data\\in\\x.csv",
            "\tcity=Z\u00fcrich \u2713", " store=\u6771\u4eac \u2615", " mood=\U0001f600",
            " html=<b>bold</b>&amp;")

JAVA_EXC = (("java.lang.IllegalStateException", "payment declined for order {o}"),
            ("java.util.concurrent.TimeoutException", "ledger did not answer within {d} ms"),
            ("org.springframework.dao.DataAccessResourceFailureException", "connection reset"),
            ("java.lang.NullPointerException", "Cannot invoke \"Order.getItems()\" because "
                                               "\"order\" is null"),
            ("com.shop.payments.CardDeclinedException", "issuer declined card ending {n}"))
JAVA_CAUSE = (("java.net.SocketTimeoutException", "Read timed out"),
              ("java.io.IOException", "Broken pipe"),
              ("java.sql.SQLTransientConnectionException", "pool exhausted after {d}ms"))
JAVA_FRAMES = ("com.shop.{a}.web.{C}Controller.handle({C}Controller.java:{n})",
               "com.shop.{a}.service.{C}Service.process({C}Service.java:{n})",
               "com.shop.{a}.repo.{C}Repository.save({C}Repository.java:{n})",
               "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:{n})",
               "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:{n})",
               "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:{n})",
               "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:{n})",
               "java.base/java.lang.Thread.run(Thread.java:{n})",
               "io.netty.channel.nio.NioEventLoop.run(NioEventLoop.java:{n})",
               "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:{n})")
PY_EXC = (("ValueError", "invalid card number for order {o}"),
          ("KeyError", "'sku-{n}'"),
          ("requests.exceptions.ConnectionError", "HTTPConnectionPool(host='ledger', port=8080): "
                                                  "Max retries exceeded"),
          ("TimeoutError", "timed out after {d} ms"),
          ("psycopg2.OperationalError", "server closed the connection unexpectedly"),
          ("RuntimeError", "worker pool is shutting down"))
PY_FRAMES = (('/app/{a}/handlers.py', "handle", "return self.service.process(request)"),
             ('/app/{a}/service.py', "process", "result = self.repo.save(order, timeout=5)"),
             ('/app/{a}/repo.py', "save", "cur.execute(INSERT_ORDER, params)"),
             ('/usr/local/lib/python3.11/site-packages/requests/api.py', "post",
              "return request(\"post\", url, data=data, json=json, **kwargs)"),
             ('/usr/local/lib/python3.11/site-packages/requests/adapters.py', "send",
              "raise ConnectionError(e, request=request)"),
             ('/usr/local/lib/python3.11/asyncio/tasks.py', "wait_for", "return fut.result()"))


# -- time --------------------------------------------------------------------------------------

_sec_cache: dict[int, str] = {}


def rfc3339_nano(t_ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed (none if zero)."""
    secs, ns = divmod(t_ns, 1_000_000_000)
    head = _sec_cache.get(secs)
    if head is None:
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        head = _sec_cache[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if ns:
        return f"{head}.{ns:09d}".rstrip("0") + "Z"
    return head + "Z"


def _app_ts(t_ns: int) -> str:
    """The app's own timestamp: milliseconds, a little before the runtime saw the line."""
    t_ns -= 150_000
    secs, ns = divmod(t_ns, 1_000_000_000)
    head = _sec_cache.get(secs) or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{head}.{ns // 1_000_000:03d}Z"


_SEQ = re.compile(r"seq=(\d+)")


def record_seq(rec: dict[str, Any]) -> int | None:
    """A generated line's sequence number in a shipped record: its `seq` field, or `seq=N` in a
    plain-text message; None for a line without one (a stack-trace continuation)."""
    if "seq" in rec:
        return int(rec["seq"])
    m = _SEQ.search(str(rec.get("message", "")))
    return int(m.group(1)) if m else None


def parse_start(value: str | float | int | None) -> int:
    """Start time in ns since the epoch: None → BASE_EPOCH; 'now'; epoch seconds; RFC 3339."""
    if value is None:
        return BASE_EPOCH * 1_000_000_000
    if isinstance(value, int | float):
        return int(value * 1_000_000_000)
    if value == "now":
        return time.time_ns()
    try:
        return int(float(value) * 1_000_000_000)
    except ValueError:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return calendar.timegm(dt.utctimetuple()) * 1_000_000_000 + dt.microsecond * 1000


# -- manifest ----------------------------------------------------------------------------------

@dataclass
class FileInfo:
    """One generated file. Seqs of a file are contiguous: seq_first..seq_last (inclusive)."""

    path: str                       # the real file (absolute)
    link: str                       # its containers/ symlink ("" for --single-file)
    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str
    format: str                     # docker | cri
    service: str = ""
    language: str = ""              # java | python: the kind of stack traces in it
    records: int = 0                # logical records (after joining split lines)
    lines: int = 0                  # physical lines
    bytes: int = 0                  # file size
    seq_first: int = 0
    seq_last: int = -1              # seq_first - 1 when the file is empty
    long_seqs: list[int] = field(default_factory=list)     # records split by the runtime
    stacks: list[list[int]] = field(default_factory=list)  # [first, last] seq of each stack trace


@dataclass
class Manifest:
    """What was generated; `manifest.json` is `to_json()` of it.

    `expected[seq] = [trace_id, span_id, inherited]`: the normalized context the agent must attach
    to that record (32/16 lowercase hex, 16-hex and decimal ids left-padded; None where there is
    none). Stack-trace lines carry no ids; for them `inherited` is True and the ids are those of
    the error record right before the trace (same stream, same instant), which the agent inherits.
    """

    files: list[FileInfo] = field(default_factory=list)
    total_records: int = 0
    total_lines: int = 0
    total_bytes: int = 0
    expected: dict[int, list[Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    has_expected: bool = False

    def to_json(self, with_expected: bool | None = None) -> bytes:
        """Compact JSON: a header, one line per file, one line per expected seq."""
        want = self.has_expected if with_expected is None else with_expected
        head = {"version": MANIFEST_VERSION, **self.params, "total_records": self.total_records,
                "total_lines": self.total_lines, "total_bytes": self.total_bytes}
        out = [orjson.dumps(head)[:-1], b',\n"files": [\n']
        out.append(b",\n".join(orjson.dumps(vars(f)) for f in self.files))
        out.append(b"\n]")
        if want:
            out.append(b',\n"expected": {\n')
            out.append(b",\n".join(b'"%d":%s' % (k, orjson.dumps(v)) for k, v in self.expected.items()))
            out.append(b"\n}")
        out.append(b"}\n")
        return b"".join(out)

    def write(self, path: str | os.PathLike[str], with_expected: bool | None = None) -> None:
        Path(path).write_bytes(self.to_json(with_expected))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        d = orjson.loads(Path(path).read_bytes())
        exp = d.pop("expected", None)
        m = cls(files=[FileInfo(**f) for f in d.pop("files")], total_records=d.pop("total_records"),
                total_lines=d.pop("total_lines"), total_bytes=d.pop("total_bytes"))
        d.pop("version", None)
        m.params = d
        if exp is not None:
            m.expected = {int(k): v for k, v in exp.items()}
            m.has_expected = True
        return m

    def add(self, info: FileInfo) -> None:
        self.files.append(info)
        self.total_records += info.records
        self.total_lines += info.lines
        self.total_bytes += info.bytes


# -- the generator -----------------------------------------------------------------------------

def _go_escape(line: bytes) -> bytes:
    """dockerd's JSON encoder escapes <, > and & like Go's encoding/json."""
    if b"<" in line:
        line = line.replace(b"<", b"\\u003c")
    if b">" in line:
        line = line.replace(b">", b"\\u003e")
    if b"&" in line:
        line = line.replace(b"&", b"\\u0026")
    return line


class _Out:
    """Buffered writer of one file's physical lines; counts lines and bytes."""

    __slots__ = ("fh", "buf", "pending", "lines", "bytes")

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.buf: list[bytes] = []
        self.pending = 0
        self.lines = 0
        self.bytes = 0

    def add(self, line: bytes) -> None:
        self.buf.append(line)
        self.pending += len(line) + 1
        if self.pending >= 1 << 22:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.buf.append(b"")
            self.fh.write(b"\n".join(self.buf))
            self.lines += len(self.buf) - 1
            self.bytes += self.pending
            self.buf = []
            self.pending = 0


class Generator:
    """Seeded state shared by the files of one run: the random source, the seq counter, pools.

    Usable directly for custom workloads: `write(fh, info, records, fmt, t_ns)` appends records
    to an open binary file and updates `info`.
    """

    def __init__(self, seed: int = 1, *, avg_bytes: int = 1024, long_every: int = 500,
                 stack_every: int = 200, seq_start: int = 0) -> None:
        if avg_bytes < 1:
            raise ValueError("avg_bytes must be positive")
        self.rnd = Random(seed)
        self.avg = avg_bytes
        self.long_every = max(0, long_every)
        self.stack_every = max(0, stack_every)
        self.seq = seq_start
        self.next_long = seq_start + self.long_every - 1 if self.long_every else -1
        self.next_stack = seq_start + self.stack_every - 1 if self.stack_every else -1
        self.rot = 0
        self.deficit = 0            # avg_bytes * lines - their bytes, over finished files
        rnd = self.rnd
        words = rnd.choices(WORDS, k=_POOL_CHARS // 6)
        self.pool = " ".join(words).encode()[:_POOL_CHARS]
        self.expected: dict[int, list[Any]] | None = None

    # -- small pieces --

    def filler(self, n: int) -> bytes:
        if n <= 0:
            return b""
        pool = self.pool
        if n >= len(pool):
            return (pool * (n // len(pool) + 1))[:n]
        i = self.rnd.randrange(len(pool) - n)
        return b" " + pool[i:i + n - 1]

    def ids(self) -> tuple[int, int]:
        return self.rnd.getrandbits(128) or 1, self.rnd.getrandbits(64) or 1

    def level(self) -> int:
        r = self.rnd.random()
        for i, c in enumerate(_LEVEL_CUM):
            if r < c:
                return i
        return 0

    def head(self, level_idx: int, special: bool) -> str:
        rnd = self.rnd
        tpl = rnd.choice(HEADS[("info", "debug", "warn", "error")[level_idx]])
        text = tpl.format(m=rnd.choice(METHODS), p=rnd.choice(PATHS), s=rnd.choice(STATUSES),
                          d=rnd.randint(1, 4000), o=rnd.randint(100000, 999999),
                          u=rnd.randint(1000, 99999), n=rnd.randint(1, 500))
        if special and rnd.random() < 0.05:
            text += rnd.choice(SPECIALS)
        return text

    def trace_fields(self, kind: int, extras: bool = True) -> tuple[dict[str, Any], str | None, str | None]:
        """App fields for one convention and the normalized ids the agent must find; `extras`
        adds the fields that usually come along (flags, sampling, Datadog service)."""
        if kind in (NONE_A, NONE_B):
            return {}, None, None
        rnd = self.rnd
        t, s = self.ids()
        th, sh = f"{t:032x}", f"{s:016x}"
        d: dict[str, Any]
        if kind == TRACE_ID:
            if extras:
                return {"trace_id": th, "span_id": sh, "trace_flags": "01"}, th, sh
            return {"trace_id": th, "span_id": sh}, th, sh
        if kind == TRACE_CAMEL:
            return {"traceId": th.upper(), "spanId": sh.upper()}, th, sh
        if kind == ECS:
            if rnd.random() < 0.3:
                return {"trace.id": th, "span.id": sh}, th, sh
            return {"trace": {"id": th}, "span": {"id": sh}}, th, sh
        if kind == TRACEPARENT:
            return {"traceparent": f"00-{th}-{sh}-{rnd.choice(('01', '00'))}"}, th, sh
        if kind == B3:
            if rnd.random() < 0.5:   # 64-bit trace ids, as older Zipkin tracers send them
                t64 = f"{(t & _MASK64) or 1:016x}"
                d = {"X-B3-TraceId": t64, "X-B3-SpanId": sh}
                th = "0" * 16 + t64
            else:
                d = {"X-B3-TraceId": th, "X-B3-SpanId": sh}
            if extras:
                d["X-B3-Sampled"] = "1"
            return d, th, sh
        if kind == DATADOG:
            dd = (t & _MASK64) or 1
            d = {"dd.trace_id": str(dd), "dd.span_id": str(s)}
            if extras:
                d["dd.env"] = "prod"
            return d, f"{dd:032x}", sh
        if kind == GCP:
            d = {"logging.googleapis.com/trace": f"projects/shop-prod/traces/{th}",
                 "logging.googleapis.com/spanId": sh}
            if extras:
                d["logging.googleapis.com/trace_sampled"] = True
            return d, th, sh
        raise ValueError(kind)

    # -- records --

    def _emit(self, out: _Out, payload: bytes, stream: str, t_ns: int, fmt: str) -> int:
        """Write one payload as the runtime would: split into 16 KiB pieces. Returns lines."""
        if len(payload) <= SPLIT:
            ts = rfc3339_nano(t_ns)
            if fmt == "docker":
                out.add(_go_escape(orjson.dumps({"log": payload.decode() + "\n", "stream": stream,
                                                 "time": ts})))
            else:
                out.add(b"%s %s F %s" % (ts.encode(), stream.encode(), payload))
            return 1
        n = 0
        pos = 0
        total = len(payload)
        while pos < total:
            end = min(pos + SPLIT, total)
            piece = payload[pos:end]
            last = end == total
            ts = rfc3339_nano(t_ns + n * self.rnd.randint(900, 4000))
            if fmt == "docker":
                out.add(_go_escape(orjson.dumps({"log": piece.decode() + ("\n" if last else ""),
                                                 "stream": stream, "time": ts})))
            else:
                out.add(b"%s %s %s %s" % (ts.encode(), stream.encode(), b"F" if last else b"P",
                                          piece))
            pos = end
            n += 1
        return n

    def _sized(self, out: _Out, payload: bytes, stream: str, t_ns: int, fmt: str,
               target: int, whole_line: bool) -> int:
        """Replace the placeholder with filler so that the line (or the payload) is `target`
        bytes, write it; returns the bytes of the resulting physical line(s)."""
        if whole_line:
            if fmt == "docker":
                ts = rfc3339_nano(t_ns)
                line = _go_escape(orjson.dumps({"log": payload.decode() + "\n", "stream": stream,
                                                "time": ts}))
                fill = target - (len(line) - len(_PHB) + 1)
                if len(payload) - len(_PHB) + max(fill, 0) <= SPLIT:
                    line = line.replace(_PHB, self.filler(fill), 1)
                    out.add(line)
                    return len(line) + 1
            else:
                ts = rfc3339_nano(t_ns)
                line = b"%s %s F %s" % (ts.encode(), stream.encode(), payload)
                fill = target - (len(line) - len(_PHB) + 1)
                if len(payload) - len(_PHB) + max(fill, 0) <= SPLIT:
                    line = line.replace(_PHB, self.filler(fill), 1)
                    out.add(line)
                    return len(line) + 1
        else:
            fill = target - (len(payload) - len(_PHB))
        payload = payload.replace(_PHB, self.filler(fill), 1)
        before = out.pending + out.bytes
        self._emit(out, payload, stream, t_ns, fmt)
        return out.pending + out.bytes - before

    def _json_record(self, seq: int, t_ns: int, kind: int, level_idx: int, ctx: _Ctx,
                     target: int) -> tuple[bytes, str | None, str | None]:
        """An app JSON object; optional fields only when the target size leaves room for them."""
        rnd = self.rnd
        fields, tid, sid = self.trace_fields(kind, target >= 500)
        level_key, msg_key, level_names = ctx.style
        obj: dict[str, Any] = {"ts": _app_ts(t_ns), level_key: level_names[level_idx]}
        if target >= 360:
            obj["logger"] = ctx.logger
        if target >= 420:
            obj["service"] = ctx.service
        obj[msg_key] = self.head(level_idx, target < SPLIT // 2) + _PH
        r = rnd.random()
        if r < 0.6 and target >= 560:
            obj["http.method"] = rnd.choice(METHODS)
            obj["path"] = rnd.choice(PATHS)
            obj["status"] = rnd.choice(STATUSES)
            obj["duration_ms"] = round(rnd.random() * 900, 3)
            if r < 0.3 and target >= 800:
                obj["client_ip"] = f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
                obj["user_agent"] = rnd.choice(AGENTS)
                obj["bytes"] = rnd.randint(0, 200_000)
        elif r < 0.8 and target >= 520:
            obj["order_id"] = f"ord-{rnd.randint(100000, 999999)}"
            obj["user_id"] = rnd.randint(1000, 99999)
            obj["ctx"] = {"tenant": f"t-{rnd.randint(1, 40)}", "region": rnd.choice(REGIONS),
                          "retry": rnd.randint(0, 3)}
        if ctx.language == "java" and target >= 640:
            obj["thread"] = f"http-nio-8080-exec-{rnd.randint(1, 200)}"
        obj.update(fields)
        obj["seq"] = seq
        obj["wts"] = round(t_ns / 1e9, 6)
        return orjson.dumps(obj), tid, sid

    def _text_record(self, seq: int, level_idx: int, with_ids: bool) -> tuple[bytes, str | None, str | None]:
        lvl = ("info", "debug", "warn", "error")[level_idx]
        head = self.head(level_idx, False)
        tid = sid = None
        ids = ""
        if with_ids:
            t, s = self.ids()
            tid, sid = f"{t:032x}", f"{s:016x}"
            ids = f" trace_id={tid} span_id={sid}"
        caller = self.rnd.choice(("server.go:212", "handler.go:87", "worker.go:45", "db.go:301"))
        return (f'level={lvl} caller={caller} msg="{head}{_PH}"{ids} seq={seq}'.encode(),
                tid, sid)

    def _stack_lines(self, language: str, room: int) -> list[str]:
        rnd = self.rnd
        a = "checkout"
        fmt_args = {"o": rnd.randint(100000, 999999), "d": rnd.randint(100, 30000),
                    "n": rnd.randint(1000, 9999)}
        if language == "java":
            exc, msg = rnd.choice(JAVA_EXC)
            lines = [f"{exc}: {msg.format(**fmt_args)}"]
            for _ in range(rnd.randint(4, 18)):
                c = rnd.choice(("Order", "Payment", "Cart", "Ledger"))
                lines.append("\tat " + rnd.choice(JAVA_FRAMES).format(a=a, C=c, n=rnd.randint(20, 900)))
            if rnd.random() < 0.5:
                cexc, cmsg = rnd.choice(JAVA_CAUSE)
                lines.append(f"Caused by: {cexc}: {cmsg.format(**fmt_args)}")
                for _ in range(rnd.randint(2, 6)):
                    frame = rnd.choice(JAVA_FRAMES).format(a=a, C="Db", n=rnd.randint(20, 900))
                    lines.append("\tat " + frame)
                lines.append(f"\t... {rnd.randint(5, 60)} more")
        else:
            lines = ["Traceback (most recent call last):"]
            for _ in range(rnd.randint(2, 6)):
                path, func, code = rnd.choice(PY_FRAMES)
                lines.append(f'  File "{path.format(a=a)}", line {rnd.randint(10, 900)}, in {func}')
                lines.append(f"    {code}")
            exc, msg = rnd.choice(PY_EXC)
            if rnd.random() < 0.3:
                lines.append(f"{exc}: {msg.format(**fmt_args)}")
                lines.append("")
                lines.append("During handling of the above exception, another exception occurred:")
                lines.append("")
                lines.append("Traceback (most recent call last):")
                path, func, code = rnd.choice(PY_FRAMES)
                lines.append(f'  File "{path.format(a=a)}", line {rnd.randint(10, 900)}, in {func}')
                lines.append(f"    {code}")
                exc, msg = "RuntimeError", "order processing failed"
            lines.append(f"{exc}: {msg.format(**fmt_args)}")
            lines = [ln for ln in lines if ln]  # no blank lines: each must carry its seq
        if len(lines) > room:
            lines = lines[:room - 1] + lines[-1:] if room > 1 else lines[:room]
        return lines

    def write(self, fh: Any, info: FileInfo, records: int, fmt: str, t_ns: int,
              ctx: _Ctx | None = None) -> int:
        """Append `records` records to the open binary file `fh`; updates `info`, returns the
        time (ns) of the last record."""
        if fmt not in ("docker", "cri"):
            raise ValueError(f"format must be docker or cri, not {fmt!r}")
        ctx = ctx or _Ctx.make(self.rnd, info.service or "app", info.language or "java")
        rnd = self.rnd
        avg = self.avg
        lo, span = 0.3 * avg, 1.4 * avg
        out = _Out(fh)
        exp = self.expected
        if info.records == 0:
            info.seq_first = self.seq
        n = 0
        while n < records:
            seq = self.seq
            t_ns += rnd.randint(50_000, 1_950_000)
            if self.stack_every and seq >= self.next_stack and records - n >= 2:
                self.next_stack += self.stack_every
                # an error record, then its stack trace on stderr, within microseconds
                kind = rnd.choice((TRACE_ID, TRACE_CAMEL, ECS, TRACEPARENT, B3, DATADOG, GCP, NONE_A,
                                   LOGFMT))
                head_size = rnd.randint(300, 700)
                if kind == LOGFMT:
                    payload, tid, sid = self._text_record(seq, 3, True)
                else:
                    payload, tid, sid = self._json_record(seq, t_ns, kind, 3, ctx, head_size)
                self._sized(out, payload, "stderr", t_ns, fmt, head_size, True)
                if exp is not None:
                    exp[seq] = [tid, sid, False]
                self.seq += 1
                n += 1
                frames = self._stack_lines(ctx.language, records - n)
                first = self.seq
                for text in frames:
                    t_ns += rnd.randint(1_000, 20_000)
                    self._emit(out, f"{text} seq={self.seq}".encode(), "stderr", t_ns, fmt)
                    if exp is not None:
                        exp[self.seq] = [tid, sid, True]
                    self.seq += 1
                    n += 1
                info.stacks.append([first, self.seq - 1])
                continue
            if self.long_every and seq >= self.next_long:
                self.next_long += self.long_every
                kind = rnd.choice(ROTATION)
                level_idx = self.level()
                size = rnd.randint(LONG_MIN, LONG_MAX)
                if kind == LOGFMT:
                    payload, tid, sid = self._text_record(seq, level_idx, True)
                else:
                    payload, tid, sid = self._json_record(seq, t_ns, kind, level_idx, ctx, size)
                stream = "stderr" if level_idx == 3 and ctx.errors_to_stderr else "stdout"
                self._sized(out, payload, stream, t_ns, fmt, size, False)
                info.long_seqs.append(seq)
            else:
                kind = ROTATION[self.rot % len(ROTATION)]
                self.rot += 1
                level_idx = self.level()
                # steer toward the mean over all lines (stack lines, long records included)
                deficit = self.deficit + avg * (out.lines + len(out.buf)) - out.bytes - out.pending
                target = int(lo + span * rnd.random() + max(-avg / 2, min(avg / 2, deficit / 32)))
                if kind == LOGFMT:
                    payload, tid, sid = self._text_record(seq, level_idx, True)
                else:
                    payload, tid, sid = self._json_record(seq, t_ns, kind, level_idx, ctx, target)
                stream = "stderr" if level_idx == 3 and ctx.errors_to_stderr else "stdout"
                self._sized(out, payload, stream, t_ns, fmt, target, True)
            if exp is not None:
                exp[seq] = [tid, sid, False]
            self.seq += 1
            n += 1
        out.flush()
        self.deficit += avg * out.lines - out.bytes
        info.records += n
        info.lines += out.lines
        info.bytes += out.bytes
        info.seq_last = self.seq - 1
        return t_ns


@dataclass
class _Ctx:
    """Per-container habits: its log style, logger, language, where errors go."""

    service: str
    language: str
    logger: str
    style: tuple[str, str, tuple[str, ...]]
    errors_to_stderr: bool

    @classmethod
    def make(cls, rnd: Random, service: str, language: str) -> _Ctx:
        logger = (f"com.shop.{service.replace('-', '')}.web.RequestLogger" if language == "java"
                  else f"{service.replace('-', '_')}.handlers")
        return cls(service, language, logger, rnd.choice(STYLES), rnd.random() < 0.6)


# -- trees and files ---------------------------------------------------------------------------

def _k8s_suffix(rnd: Random, n: int) -> str:
    return "".join(rnd.choices(_K8S_ALPHABET, k=n))


def _params(seed: int, fmt: str, avg_bytes: int, long_every: int, stack_every: int,
            start_ns: int, pods: int | None = None, containers: int | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"seed": seed, "format": fmt, "avg_bytes": avg_bytes,
                         "long_every": long_every, "stack_every": stack_every,
                         "start": rfc3339_nano(start_ns)}
    if pods is not None:
        p["pods"] = pods
        p["containers_per_pod"] = containers
    return p


def generate_tree(out: str | os.PathLike[str], *, seed: int = 1, pods: int = 4, lines: int = 2000,
                  fmt: str = "mixed", avg_bytes: int = 1024, long_every: int = 500,
                  stack_every: int = 200, containers: int = 1, start: str | float | None = None,
                  with_expected: bool | None = None, write_manifest: bool = True,
                  clean: bool = False) -> Manifest:
    """Write a kubelet-style tree of `pods * containers` files holding `lines` records in all.

    `fmt` mixed alternates docker and cri per file. Expected trace context is kept (and written)
    when `with_expected`, or by default when lines <= EXPECTED_LIMIT. An existing non-empty
    `pods/` or `containers/` raises FileExistsError unless `clean` (which removes them first).
    """
    if fmt not in ("docker", "cri", "mixed"):
        raise ValueError(f"fmt must be docker, cri or mixed, not {fmt!r}")
    if pods < 1 or containers < 1 or lines < 0:
        raise ValueError("pods and containers must be >= 1, lines >= 0")
    root = Path(os.path.abspath(out))
    for sub in ("pods", "containers"):
        d = root / sub
        if d.is_dir() and any(d.iterdir()):
            if not clean:
                raise FileExistsError(f"{d} is not empty (use clean=True / --clean)")
            shutil.rmtree(d)
    start_ns = parse_start(start)
    gen = Generator(seed, avg_bytes=avg_bytes, long_every=long_every, stack_every=stack_every)
    rnd = gen.rnd
    want = lines <= EXPECTED_LIMIT if with_expected is None else with_expected
    m = Manifest(params=_params(seed, fmt, avg_bytes, long_every, stack_every, start_ns, pods,
                                containers), has_expected=want)
    if want:
        gen.expected = m.expected
    nfiles = pods * containers
    per_file = [lines // nfiles + (1 if i < lines % nfiles else 0) for i in range(nfiles)]
    used: set[str] = set()
    ordinals: dict[str, int] = {}
    i = 0
    for p in range(pods):
        ns, app, kind, language = SERVICES[p % len(SERVICES)]
        while True:
            if kind == "sts":
                ordinals[app] = ordinals.get(app, -1) + 1
                pod = f"{app}-{ordinals[app]}"
            elif kind == "ds":
                pod = f"{app}-{_k8s_suffix(rnd, 5)}"
            else:
                pod = f"{app}-{_k8s_suffix(rnd, rnd.choice((9, 10)))}-{_k8s_suffix(rnd, 5)}"
            if pod not in used:
                used.add(pod)
                break
        uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        for c in range(containers):
            container = app if c == 0 else SIDECARS[(c - 1) % len(SIDECARS)] + (
                "" if c <= len(SIDECARS) else f"-{c}")
            cid = f"{rnd.getrandbits(256):064x}"
            f_fmt = fmt if fmt != "mixed" else ("docker", "cri")[i % 2]
            real = root / "pods" / f"{ns}_{pod}_{uid}" / container / "0.log"
            link = root / "containers" / f"{pod}_{ns}_{container}-{cid}.log"
            info = FileInfo(str(real), str(link), ns, pod, uid, container, cid, f_fmt,
                            service=app, language=language, seq_first=gen.seq, seq_last=gen.seq - 1)
            real.parent.mkdir(parents=True, exist_ok=True)
            t0 = start_ns + rnd.randint(0, 999_999_999)
            with open(real, "wb") as fh:
                gen.write(fh, info, per_file[i], f_fmt, t0, _Ctx.make(rnd, app, language))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(real)
            m.add(info)
            i += 1
    if write_manifest:
        m.write(root / "manifest.json")
    return m


def generate_file(path: str | os.PathLike[str], *, seed: int = 1, lines: int = 1000,
                  fmt: str = "docker", avg_bytes: int = 1024, long_every: int = 500,
                  stack_every: int = 200, start: str | float | None = None, seq_start: int = 0,
                  service: str = "checkout", language: str = "java",
                  with_expected: bool = False, append: bool = False) -> Manifest:
    """Write one file of `lines` records (docker or cri); returns a one-file Manifest (link and
    kubernetes fields empty). `append` adds to an existing file (use seq_start to continue)."""
    if fmt == "mixed":
        fmt = "docker"
    start_ns = parse_start(start)
    gen = Generator(seed, avg_bytes=avg_bytes, long_every=long_every, stack_every=stack_every,
                    seq_start=seq_start)
    m = Manifest(params=_params(seed, fmt, avg_bytes, long_every, stack_every, start_ns),
                 has_expected=with_expected)
    if with_expected:
        gen.expected = m.expected
    p = Path(os.path.abspath(path))
    p.parent.mkdir(parents=True, exist_ok=True)
    info = FileInfo(str(p), "", "", "", "", "", "", fmt, service=service, language=language,
                    seq_first=seq_start, seq_last=seq_start - 1)
    with open(p, "ab" if append else "wb") as fh:
        gen.write(fh, info, lines, fmt, start_ns, _Ctx.make(gen.rnd, service, language))
    m.add(info)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate",
                                description="Deterministic container log workload generator.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="write a kubelet tree (pods/, containers/) here")
    where.add_argument("--single-file", type=Path, metavar="PATH", help="write one log file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--containers", type=int, default=1, help="containers per pod (sidecars)")
    p.add_argument("--lines", type=int, default=2000, help="records in total (default 2000)")
    p.add_argument("--format", default="mixed", choices=("docker", "cri", "mixed"),
                   help="mixed alternates per file; a single file takes docker for mixed")
    p.add_argument("--avg-bytes", type=int, default=1024, help="mean size of a whole line")
    p.add_argument("--long-every", type=int, default=500, help="one 16-40 KiB payload per N; 0 = never")
    p.add_argument("--stack-every", type=int, default=200, help="one stack trace per N; 0 = never")
    p.add_argument("--start", default=None, help="time of the first record: RFC 3339, epoch seconds "
                                                  "or 'now' (default 2026-11-24T10:00:00Z)")
    p.add_argument("--with-expected", action="store_true", default=None,
                   help=f"write per-seq expected trace context (default only when lines <= "
                        f"{EXPECTED_LIMIT})")
    p.add_argument("--no-manifest", action="store_true", help="do not write DIR/manifest.json")
    p.add_argument("--manifest", type=Path, help="with --single-file: write its manifest here")
    p.add_argument("--clean", action="store_true", help="remove an existing DIR/pods and DIR/containers")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if a.single_file:
            m = generate_file(a.single_file, seed=a.seed, lines=a.lines, fmt=a.format,
                              avg_bytes=a.avg_bytes, long_every=a.long_every,
                              stack_every=a.stack_every, start=a.start,
                              with_expected=bool(a.with_expected) and a.manifest is not None)
            if a.manifest:
                m.write(a.manifest)
        else:
            m = generate_tree(a.out, seed=a.seed, pods=a.pods, containers=a.containers,
                              lines=a.lines, fmt=a.format, avg_bytes=a.avg_bytes,
                              long_every=a.long_every, stack_every=a.stack_every, start=a.start,
                              with_expected=a.with_expected, write_manifest=not a.no_manifest,
                              clean=a.clean)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    dt = time.perf_counter() - t0
    print(f"generated {m.total_records:,} records, {m.total_lines:,} lines, "
          f"{m.total_bytes / 1e6:.1f} MB in {len(m.files)} file(s) in {dt:.1f}s "
          f"(avg {m.total_bytes / max(m.total_lines, 1):.0f} B/line)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
