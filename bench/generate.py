"""Deterministic generator of realistic container logs in the kubelet layout.

    DIR/pods/<namespace>_<pod>_<uid>/<container>/0.log                          real files
    DIR/containers/<pod>_<namespace>_<container>-<64 hex id>.log               symlinks to them

Formats: docker json-file (payloads over 16 KiB split into 16384-byte pieces, all but the last
without the trailing newline) and CRI (`P` partials then `F`). Payloads: app JSON objects carrying
trace context in the conventions the agent supports (rotating per record), logfmt plain text,
plain-text Java stack traces after error records, and every `long_every` records one 16–40 KiB
payload. Every logical record carries a sequence number (`seq` in JSON, ` seq=<n>` in text) unique
across the tree, so a receiver can check completeness. The manifest lists each file's metadata,
record count and seq range, and (for small trees or with `with_expected`) the normalized trace
context each seq must come out with.

    python -m bench.generate --out DIR [--seed N] [--pods N] [--lines N] [--format docker|cri|mixed]
                             [--avg-bytes 1024] [--long-every N] [--stack-every N] [--with-expected]
    python -m bench.generate --single-file PATH --lines N [--format docker]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SPLIT = 16384
BASE_EPOCH = 1795514400.0  # 2026-11-24T10:00:00Z: fixed, so output is byte-identical per seed
NAMESPACES = ("shop", "payments", "kube-system", "search", "identity")
APPS = ("checkout", "cart", "ledger", "coredns", "indexer", "auth", "gateway", "mailer")
LEVELS = ("info", "info", "info", "debug", "warn", "error")
PATHS = ("/api/cart", "/api/checkout", "/healthz", "/api/items/42", "/login")
EXPECTED_LIMIT = 50_000


@dataclass
class FileInfo:
    path: str
    link: str
    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str
    format: str
    records: int = 0
    lines: int = 0
    bytes: int = 0
    seq_first: int = 0
    seq_last: int = -1


@dataclass
class Manifest:
    files: list[FileInfo] = field(default_factory=list)
    total_records: int = 0
    total_lines: int = 0
    total_bytes: int = 0
    # seq → [trace_id, span_id, inherited]
    expected: dict[int, list[Any]] = field(default_factory=dict)

    def to_json(self, with_expected: bool) -> bytes:
        d: dict[str, Any] = {
            "files": [vars(f) for f in self.files], "total_records": self.total_records,
            "total_lines": self.total_lines, "total_bytes": self.total_bytes,
        }
        if with_expected:
            d["expected"] = {str(k): v for k, v in self.expected.items()}
        return orjson.dumps(d, option=orjson.OPT_INDENT_2)


def rfc3339(epoch: float) -> str:
    secs = int(epoch)
    nanos = round((epoch - secs) * 1e6) * 1000  # microsecond steps: no float noise in the output
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


class _Writer:
    """Writes one file's lines in its container format; counts physical lines and bytes."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.buf: list[bytes] = []
        self.lines = 0
        self.bytes = 0

    def record(self, payload: str, stream: str, ts: str) -> None:
        pieces = [payload[i:i + SPLIT] for i in range(0, len(payload), SPLIT)] or [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if self.fmt == "docker":
                line = orjson.dumps({"log": piece + ("\n" if last else ""), "stream": stream,
                                     "time": ts})
            else:
                line = f"{ts} {stream} {'F' if last else 'P'} {piece}".encode()
            self.buf.append(line)
            self.lines += 1
            self.bytes += len(line) + 1

    def data(self) -> bytes:
        return b"\n".join(self.buf) + b"\n" if self.buf else b""


class Generator:
    def __init__(self, seed: int, avg_bytes: int, long_every: int, stack_every: int) -> None:
        self.rnd = random.Random(seed)
        self.avg = avg_bytes
        self.long_every = long_every
        self.stack_every = stack_every
        self.pool = "".join(self.rnd.choices(string.ascii_letters + "     ", k=1 << 17))
        self.seq = 0

    def text(self, n: int) -> str:
        start = self.rnd.randrange(0, len(self.pool) - max(n, 1))
        return self.pool[start:start + n]

    def ids(self) -> tuple[int, int]:
        return self.rnd.getrandbits(128) or 1, self.rnd.getrandbits(64) or 1

    def trace_fields(self, kind: int) -> tuple[dict[str, Any], str | None, str | None]:
        t, s = self.ids()
        th, sh = f"{t:032x}", f"{s:016x}"
        if kind == 0:
            return {"trace_id": th, "span_id": sh}, th, sh
        if kind == 1:
            return {"traceId": th.upper(), "spanId": sh.upper()}, th, sh
        if kind == 2:
            return {"trace": {"id": th}, "span": {"id": sh}}, th, sh
        if kind == 3:
            return {"traceparent": f"00-{th}-{sh}-01"}, th, sh
        if kind == 4:
            t64 = f"{t & ((1 << 64) - 1) or 1:016x}"
            return {"X-B3-TraceId": t64, "X-B3-SpanId": sh}, "0" * 16 + t64, sh
        if kind == 5:
            t64, s64 = (t & ((1 << 64) - 1)) or 1, s
            return {"dd.trace_id": str(t64), "dd.span_id": str(s64)}, f"{t64:032x}", f"{s64:016x}"
        if kind == 6:
            return ({"logging.googleapis.com/trace": f"projects/p/traces/{th}",
                     "logging.googleapis.com/spanId": sh}, th, sh)
        return {}, None, None

    def json_payload(self, seq: int, epoch: float, kind: int, size: int,
                     level: str | None = None) -> tuple[str, str | None, str | None]:
        fields, tid, sid = self.trace_fields(kind)
        obj: dict[str, Any] = {
            "ts": rfc3339(epoch), "level": level or self.rnd.choice(LEVELS), "logger": "http.server",
            "service": self.rnd.choice(APPS), "http.method": self.rnd.choice(("GET", "POST")),
            "path": self.rnd.choice(PATHS), "status": self.rnd.choice((200, 200, 201, 404, 500)),
            "duration_ms": self.rnd.randint(1, 900), **fields, "seq": seq,
            "wts": round(epoch, 6), "msg": "",
        }
        base = len(orjson.dumps(obj)) + 110  # container wrapper and escaped quotes, roughly
        obj["msg"] = self.text(max(10, size - base))
        return orjson.dumps(obj).decode(), tid, sid

    def text_payload(self, seq: int, size: int) -> tuple[str, str | None, str | None]:
        t, s = self.ids()
        head = f'level=info msg="{self.text(max(10, size - 160))}" trace_id={t:032x} span_id={s:016x}'
        return f"{head} seq={seq}", f"{t:032x}", f"{s:016x}"


JAVA_STACK = (
    "java.lang.IllegalStateException: payment declined",
    "\tat com.shop.Checkout.pay(Checkout.java:42)",
    "\tat com.shop.Api.handle(Api.java:17)",
    "Caused by: java.io.IOException: timeout",
    "\t... 12 more",
)


def generate_file(path: Path, gen: Generator, *, records: int, fmt: str, start_epoch: float,
                  manifest: Manifest | None, want_expected: bool) -> tuple[int, int, int]:
    """Write `records` logical records to `path`; returns (records, lines, bytes)."""
    w = _Writer(fmt)
    n = 0
    epoch = start_epoch
    while n < records:
        seq = gen.seq
        epoch += 0.001
        ts = rfc3339(epoch)
        if gen.stack_every and n % gen.stack_every == gen.stack_every - 1 and records - n > len(JAVA_STACK):
            payload, tid, sid = gen.json_payload(seq, epoch, 0, 300, level="error")
            w.record(payload, "stderr", ts)
            _expect(manifest, want_expected, seq, tid, sid, False)
            gen.seq += 1
            n += 1
            for frame in JAVA_STACK:
                w.record(f"{frame} seq={gen.seq}", "stderr", ts)
                _expect(manifest, want_expected, gen.seq, tid, sid, True)
                gen.seq += 1
                n += 1
            continue
        size = int(gen.avg * gen.rnd.uniform(0.4, 1.6))
        if gen.long_every and n % gen.long_every == gen.long_every - 1:
            size = gen.rnd.randint(16 * 1024 + 200, 40 * 1024)
        kind = seq % 10
        if kind == 9:
            payload, tid, sid = gen.text_payload(seq, size)
        else:
            payload, tid, sid = gen.json_payload(seq, epoch, kind, size)
        w.record(payload, "stdout", ts)
        _expect(manifest, want_expected, seq, tid, sid, False)
        gen.seq += 1
        n += 1
    data = w.data()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return n, w.lines, w.bytes


def _expect(m: Manifest | None, want: bool, seq: int, tid: str | None, sid: str | None,
            inherited: bool) -> None:
    if m is not None and want:
        m.expected[seq] = [tid, sid, inherited]


def generate_tree(out: Path, *, seed: int = 1, pods: int = 4, lines: int = 2000, fmt: str = "mixed",
                  avg_bytes: int = 1024, long_every: int = 500, stack_every: int = 200,
                  with_expected: bool | None = None, write_manifest: bool = True) -> Manifest:
    gen = Generator(seed, avg_bytes, long_every, stack_every)
    want = lines <= EXPECTED_LIMIT if with_expected is None else with_expected
    m = Manifest()
    per_pod = [lines // pods + (1 if i < lines % pods else 0) for i in range(pods)]
    for i, count in enumerate(per_pod):
        ns = NAMESPACES[i % len(NAMESPACES)]
        app = APPS[i % len(APPS)]
        suffix = "".join(gen.rnd.choices(string.ascii_lowercase + string.digits, k=5))
        pod = f"{app}-{gen.rnd.getrandbits(36):09x}-{suffix}"
        uid = str(uuid.UUID(int=gen.rnd.getrandbits(128), version=4))
        cid = f"{gen.rnd.getrandbits(256):064x}"
        f_fmt = fmt if fmt != "mixed" else ("docker", "cri")[i % 2]
        real = out / "pods" / f"{ns}_{pod}_{uid}" / app / "0.log"
        link = out / "containers" / f"{pod}_{ns}_{app}-{cid}.log"
        info = FileInfo(str(real), str(link), ns, pod, uid, app, cid, f_fmt, seq_first=gen.seq)
        info.records, info.lines, info.bytes = generate_file(
            real, gen, records=count, fmt=f_fmt, start_epoch=BASE_EPOCH, manifest=m, want_expected=want)
        info.seq_last = gen.seq - 1
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(real.resolve())
        m.files.append(info)
        m.total_records += info.records
        m.total_lines += info.lines
        m.total_bytes += info.bytes
    if write_manifest:
        (out / "manifest.json").write_bytes(m.to_json(want))
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--single-file", type=Path)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--lines", type=int, default=2000, help="logical records in total")
    p.add_argument("--format", default="mixed", choices=("docker", "cri", "mixed"))
    p.add_argument("--avg-bytes", type=int, default=1024)
    p.add_argument("--long-every", type=int, default=500, help="0 = never")
    p.add_argument("--stack-every", type=int, default=200, help="0 = never")
    p.add_argument("--with-expected", action="store_true", default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.single_file:
        gen = Generator(a.seed, a.avg_bytes, a.long_every, a.stack_every)
        fmt = "docker" if a.format == "mixed" else a.format
        n, nlines, nbytes = generate_file(a.single_file, gen, records=a.lines, fmt=fmt,
                                          start_epoch=BASE_EPOCH, manifest=None, want_expected=False)
    elif a.out:
        m = generate_tree(a.out, seed=a.seed, pods=a.pods, lines=a.lines, fmt=a.format,
                          avg_bytes=a.avg_bytes, long_every=a.long_every, stack_every=a.stack_every,
                          with_expected=a.with_expected)
        n, nlines, nbytes = m.total_records, m.total_lines, m.total_bytes
    else:
        p.error("one of --out or --single-file is required")
    print(f"generated {n:,} records, {nlines:,} lines, {nbytes / 1e6:.1f} MB "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
