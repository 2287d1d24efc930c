"""The workload generator: deterministic, kubelet layout, runtime splitting, seqs, sizes, manifest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.generate import (
    EXPECTED_LIMIT,
    LONG_MAX,
    LONG_MIN,
    SPLIT,
    Manifest,
    generate_file,
    generate_tree,
)

ROOT = Path(__file__).resolve().parents[2]
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z"
CRI = re.compile(rb"^(" + TIME.encode() + rb") (stdout|stderr) ([PF]) (.*)$", re.S)
DOCKER_TIME = re.compile(TIME)
CONTAINERS = re.compile(r"^(?P<pod>[a-z0-9][a-z0-9.-]*)_(?P<namespace>[a-z0-9][a-z0-9-]*)_"
                        r"(?P<container>[a-z0-9][a-z0-9-]*)-(?P<container_id>[0-9a-f]{64})\.log$")
PODS = re.compile(r"/pods/(?P<namespace>[a-z0-9][a-z0-9-]*)_(?P<pod>[a-z0-9][a-z0-9.-]*)_"
                  r"(?P<pod_uid>[0-9a-f-]{36})/(?P<container>[a-z0-9][a-z0-9-]*)/0\.log$")
SEQ_TEXT = re.compile(r" seq=(\d+)$")


def read_all(root: Path) -> dict[str, bytes]:
    """Every real file by relative path (the manifest's absolute paths made relative)."""
    return {str(p.relative_to(root)): p.read_bytes().replace(str(root).encode(), b"ROOT")
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def records(path: str, fmt: str) -> list[tuple[str, str, list[bytes]]]:
    """Join a file's physical lines back into records: (stream, payload, raw lines)."""
    out: list[tuple[str, str, list[bytes]]] = []
    open_: dict[str, tuple[list[str], list[bytes]]] = {}
    for line in Path(path).read_bytes().split(b"\n")[:-1]:
        if fmt == "docker":
            d = orjson.loads(line)
            stream, log, last = d["stream"], d["log"], d["log"].endswith("\n")
            piece = log[:-1] if last else log
        else:
            m = CRI.match(line)
            assert m, line[:200]
            stream, last, piece = m.group(2).decode(), m.group(3) == b"F", m.group(4).decode()
        parts, raws = open_.setdefault(stream, ([], []))
        parts.append(piece)
        raws.append(line)
        if last:
            del open_[stream]
            out.append((stream, "".join(parts), raws))
    assert not open_, "a split record was never finished"
    return out


def seq_of(payload: str) -> int:
    if payload.startswith("{"):
        return orjson.loads(payload)["seq"]
    m = SEQ_TEXT.search(payload)
    assert m, payload[:200]
    return int(m.group(1))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("tree")
    return root, generate_tree(root, seed=7, pods=6, lines=6000, fmt="mixed", long_every=250,
                               stack_every=120)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    """Output (files, names, manifest) is a function of the seed."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 1), (b, 1), (c, 2)):
        generate_tree(d, seed=seed, pods=3, lines=900, long_every=100, stack_every=60)
    ra, rb, rc = read_all(a), read_all(b), read_all(c)
    assert ra == rb
    assert ra.keys() != rc.keys()
    assert [ra[k] for k in sorted(ra) if k.endswith(".log")] != [rc[k] for k in sorted(rc)
                                                               if k.endswith(".log")]
    assert sorted(os.listdir(a / "containers")) == sorted(os.listdir(b / "containers"))
    f1, f2, f3 = tmp_path / "1.log", tmp_path / "2.log", tmp_path / "3.log"
    generate_file(f1, seed=5, lines=500)
    generate_file(f2, seed=5, lines=500)
    generate_file(f3, seed=6, lines=500)
    assert f1.read_bytes() == f2.read_bytes() != f3.read_bytes()


def test_layout_symlinks_and_names(tree):
    """containers/ holds absolute symlinks to pods/ files; both names carry the pod metadata."""
    root, m = tree
    links = sorted((root / "containers").iterdir())
    assert len(links) == len(m.files) == 6
    assert sorted(str(p) for p in links) == sorted(f.link for f in m.files)
    assert len({f.namespace for f in m.files}) >= 3
    for f in m.files:
        link = Path(f.link)
        assert link.is_symlink() and os.path.isabs(os.readlink(link))
        assert os.path.realpath(link) == os.path.realpath(f.path) and Path(f.path).is_file()
        c = CONTAINERS.match(link.name).groupdict()
        p = PODS.search(f.path).groupdict()
        assert c == {"pod": f.pod, "namespace": f.namespace, "container": f.container,
                     "container_id": f.container_id}
        assert p == {"namespace": f.namespace, "pod": f.pod, "pod_uid": f.pod_uid,
                     "container": f.container}
        assert str(uuid.UUID(f.pod_uid)) == f.pod_uid
        assert re.fullmatch(r"[a-z0-9-]+-([bcdfghjklmnpqrstvwxz2456789]{9,10}-)?"
                            r"[bcdfghjklmnpqrstvwxz2456789]{5}|[a-z0-9-]+-\d+", f.pod), f.pod
    assert len({f.pod for f in m.files}) == len(m.files)


def test_agent_reads_the_metadata_from_the_paths(tree):
    """The agent's own path parser agrees with the manifest."""
    from pipelines.enrich import kubernetes_from_paths

    _, m = tree
    for f in m.files:
        assert kubernetes_from_paths(f.link, os.path.realpath(f.link)) == {
            "namespace": f.namespace, "pod": f.pod, "pod_uid": f.pod_uid,
            "container": f.container, "container_id": f.container_id}


def test_sidecar_containers(tmp_path):
    """--containers adds sidecar containers to each pod: same pod dir and uid, own ids."""
    m = generate_tree(tmp_path, seed=3, pods=2, containers=3, lines=600)
    assert len(m.files) == 6 and len({f.pod for f in m.files}) == 2
    assert len({f.container_id for f in m.files}) == 6
    for pod in {f.pod for f in m.files}:
        fs = [f for f in m.files if f.pod == pod]
        assert len({f.pod_uid for f in fs}) == 1 and len({f.container for f in fs}) == 3


def test_docker_lines_and_splitting(tmp_path):
    """docker: JSON with log/stream/time in that order; >16 KiB payloads become 16384-byte pieces
    without the newline except the last; <, >, & escaped like dockerd."""
    m = generate_tree(tmp_path, seed=9, pods=2, lines=800, long_every=40, fmt="docker")
    raw = b"".join(Path(f.path).read_bytes() for f in m.files)
    assert b"\\u003c" in raw and b"<" not in raw and b"&" not in raw
    split = 0
    for f in m.files:
        for line in Path(f.path).read_bytes().split(b"\n")[:-1]:
            d = orjson.loads(line)
            assert list(d) == ["log", "stream", "time"]
            assert d["stream"] in ("stdout", "stderr") and DOCKER_TIME.fullmatch(d["time"])
            assert "\n" not in d["log"][:-1]
        for _stream, payload, raws in records(f.path, "docker"):
            if len(raws) > 1:
                split += 1
                pieces = [orjson.loads(r)["log"] for r in raws]
                assert all(len(p.encode()) == SPLIT and not p.endswith("\n") for p in pieces[:-1])
                assert pieces[-1].endswith("\n") and 0 < len(pieces[-1].encode()) <= SPLIT + 1
                assert len({orjson.loads(r)["stream"] for r in raws}) == 1
            else:
                assert len(payload.encode()) <= SPLIT
        long_payloads = [p for _, p, _ in records(f.path, "docker") if seq_of(p) in set(f.long_seqs)]
        assert len(long_payloads) == len(f.long_seqs) > 0
        assert all(LONG_MIN <= len(p.encode()) <= LONG_MAX for p in long_payloads)
    assert split >= 10


def test_cri_lines_and_partials(tmp_path):
    """CRI: `<time> <stream> <P|F> <payload>`; >16 KiB payloads as 16384-byte P pieces, then F."""
    m = generate_tree(tmp_path, seed=4, pods=2, lines=800, long_every=40, fmt="cri")
    tags = Counter()
    for f in m.files:
        for line in Path(f.path).read_bytes().split(b"\n")[:-1]:
            g = CRI.match(line)
            assert g, line[:200]
            tags[g.group(3)] += 1
            if g.group(3) == b"P":
                assert len(g.group(4)) == SPLIT
        for _stream, payload, raws in records(f.path, "cri"):
            assert [CRI.match(r).group(3) for r in raws] == [b"P"] * (len(raws) - 1) + [b"F"]
            if seq_of(payload) in f.long_seqs:
                assert LONG_MIN <= len(payload.encode()) <= LONG_MAX and len(raws) >= 2
    assert tags[b"P"] >= 20 and tags[b"F"] == m.total_records


def test_seq_unique_contiguous_and_manifest_counts(tree):
    """Seqs cover 0..N-1 once, per file contiguous as the manifest says; counts match the files."""
    _, m = tree
    seqs = []
    for f in m.files:
        recs = records(f.path, f.format)
        s = [seq_of(p) for _, p, _ in recs]
        assert s == list(range(f.seq_first, f.seq_last + 1))
        assert len(recs) == f.records
        data = Path(f.path).read_bytes()
        assert f.bytes == len(data) == os.path.getsize(f.path) and f.lines == data.count(b"\n")
        seqs += s
    assert sorted(seqs) == list(range(6000)) and m.total_records == 6000
    assert m.total_lines == sum(f.lines for f in m.files)
    assert m.total_bytes == sum(f.bytes for f in m.files)
    assert {f.format for f in m.files} == {"docker", "cri"}


def test_json_payload_fields_and_wts(tree):
    """JSON payloads carry seq, wts (epoch seconds), a level and a message in one of the styles."""
    _, m = tree
    levels, msgs = Counter(), Counter()
    for f in m.files[:2]:
        for _, payload, _ in records(f.path, f.format):
            if not payload.startswith("{"):
                continue
            d = orjson.loads(payload)
            assert isinstance(d["seq"], int) and 1.79e9 < d["wts"] < 1.8e9 and "ts" in d
            levels.update(k for k in ("level", "severity", "lvl") if k in d)
            msgs.update(k for k in ("msg", "message") if k in d)
    assert sum(levels.values()) == sum(msgs.values()) > 0


@pytest.mark.parametrize("fmt", ["docker", "cri"])
@pytest.mark.parametrize("avg", [400, 1024, 3000])
def test_average_line_size(tmp_path, fmt, avg):
    """Whole lines average --avg-bytes within 15%, with long records and stack traces included."""
    m = generate_tree(tmp_path, seed=2, pods=2, lines=4000, fmt=fmt, avg_bytes=avg)
    mean = m.total_bytes / m.total_lines
    assert 0.85 * avg <= mean <= 1.15 * avg, mean
    sizes = [len(x) + 1 for f in m.files for x in Path(f.path).read_bytes().split(b"\n")[:-1]]
    assert min(sizes) < 0.6 * avg and max(sizes) > 1.4 * avg  # a spread, not one size


def test_plain_sizes_without_extras(tmp_path):
    """With no long records and no stack traces the mean is still on target."""
    m = generate_tree(tmp_path, seed=2, pods=2, lines=2000, fmt="docker", long_every=0,
                      stack_every=0, avg_bytes=1024)
    assert 0.85 * 1024 <= m.total_bytes / m.total_lines <= 1.15 * 1024
    assert m.total_lines == m.total_records and all(not f.stacks and not f.long_seqs for f in m.files)


def _ids_in(payload: str, tid: str, sid: str) -> bool:
    """The expected ids appear in the payload in some spelling: hex of any case, unpadded 64-bit
    hex, or decimal."""
    low = payload.lower()
    t_ok = tid in low or tid[16:] in low and tid[:16] == "0" * 16 or str(int(tid, 16)) in payload
    s_ok = sid in low or str(int(sid, 16)) in payload
    return t_ok and s_ok


def test_expected_trace_context(tree):
    """Every seq has an expectation; ids are normalized, appear in the payload, ~20% have none;
    stack lines have no ids of their own and inherit the error record's."""
    root, m = tree
    assert m.has_expected and sorted(m.expected) == list(range(m.total_records))
    conventions = Counter()
    none = 0
    for f in m.files:
        stack_seqs = {s for a, b in f.stacks for s in range(a, b + 1)}
        assert stack_seqs
        for _, payload, _ in records(f.path, f.format):
            seq = seq_of(payload)
            tid, sid, inherited = m.expected[seq]
            assert inherited == (seq in stack_seqs)
            if tid is None:
                assert sid is None
                none += not inherited
                continue
            assert re.fullmatch("[0-9a-f]{32}", tid) and re.fullmatch("[0-9a-f]{16}", sid)
            assert tid != "0" * 32 and sid != "0" * 16
            if inherited:
                assert tid not in payload.lower() and "trace" not in payload
                head = min(a for a, b in f.stacks if a <= seq <= b) - 1
                assert m.expected[head][:2] == [tid, sid] and not m.expected[head][2]
            else:
                assert _ids_in(payload, tid, sid), (seq, tid, sid, payload[:300])
            for key in ("trace_id", "traceId", '"trace":{"id"', "trace.id", "traceparent",
                        "X-B3-TraceId", "dd.trace_id", "logging.googleapis.com/trace"):
                if f'"{key}"' in payload or key.startswith('"trace"') and key in payload:
                    conventions[key] += 1
            if payload.startswith("level="):
                conventions["logfmt"] += 1
    assert len(conventions) == 9, conventions
    non_stack = m.total_records - sum(b - a + 1 for f in m.files for a, b in f.stacks)
    assert 0.14 <= none / non_stack <= 0.26, none / non_stack
    # some B3 trace ids are 64-bit (16 hex), padded in the expectation
    b3_short = [p for f in m.files for _, p, _ in records(f.path, f.format)
                if re.search(r'"X-B3-TraceId":"[0-9a-f]{16}"', p)]
    assert b3_short
    on_disk = Manifest.load(root / "manifest.json")
    assert on_disk.expected == m.expected and on_disk.files == m.files


def test_stack_traces_are_continuation_lines(tree):
    """Stack lines (Java and Python) are what the agent treats as continuations; each ends in
    its own seq; the error record before them is not a continuation."""
    from pipelines.trace import is_continuation

    _, m = tree
    langs = set()
    for f in m.files:
        by_seq = {seq_of(p): (stream, p) for stream, p, _ in records(f.path, f.format)}
        for a, b in f.stacks:
            head_stream, head = by_seq[a - 1]
            assert head_stream == "stderr" and not is_continuation(head)
            for s in range(a, b + 1):
                stream, text = by_seq[s]
                assert stream == "stderr" and text.endswith(f" seq={s}") and is_continuation(text), text
            langs.add("python" if by_seq[a][1].startswith("Traceback") else "java")
    assert langs == {"java", "python"}


def test_manifest_file_and_expected_limit(tmp_path):
    """manifest.json mirrors the Manifest; per-seq expectations only when asked or small."""
    m = generate_tree(tmp_path / "a", seed=1, pods=2, lines=300)
    d = orjson.loads((tmp_path / "a" / "manifest.json").read_bytes())
    assert d["version"] == 1 and d["seed"] == 1 and d["total_records"] == 300
    assert set(d["files"][0]) >= {"path", "link", "namespace", "pod", "pod_uid", "container",
                                  "container_id", "format", "records", "lines", "bytes",
                                  "seq_first", "seq_last", "long_seqs", "stacks"}
    assert len(d["expected"]) == 300 and d["expected"]["0"] == m.expected[0]
    generate_tree(tmp_path / "b", seed=1, pods=2, lines=300, with_expected=False)
    d = orjson.loads((tmp_path / "b" / "manifest.json").read_bytes())
    assert "expected" not in d and d["files"][1]["seq_last"] == 299
    generate_tree(tmp_path / "c", seed=1, pods=1, lines=10, write_manifest=False)
    assert not (tmp_path / "c" / "manifest.json").exists()
    assert EXPECTED_LIMIT == 50_000


def test_refuses_non_empty_tree_unless_clean(tmp_path):
    generate_tree(tmp_path, seed=1, pods=2, lines=50)
    with pytest.raises(FileExistsError):
        generate_tree(tmp_path, seed=2, pods=2, lines=50)
    m = generate_tree(tmp_path, seed=2, pods=3, lines=50, clean=True)
    assert len(list((tmp_path / "containers").iterdir())) == len(list((tmp_path / "pods").iterdir())) == 3
    assert Manifest.load(tmp_path / "manifest.json").files == m.files


def test_single_file_api_append_and_start(tmp_path):
    """generate_file writes one file; append continues it with fresh seqs; start sets the clock."""
    p = tmp_path / "x.log"
    m1 = generate_file(p, seed=1, lines=300, fmt="cri", start="2030-01-02T03:04:05Z",
                       with_expected=True)
    m2 = generate_file(p, seed=2, lines=200, fmt="cri", seq_start=300, append=True)
    recs = records(str(p), "cri")
    assert [seq_of(x) for _, x, _ in recs] == list(range(500))
    assert m1.files[0].seq_last == 299 and m2.files[0].seq_first == 300
    assert len(m1.expected) == 300 and not m2.expected
    assert p.read_bytes().startswith(b"2030-01-02T03:04:0")


def test_cli_tree_and_single_file(tmp_path):
    """The CLI: a tree with its manifest, and one docker file (the benchmark's input)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "tree"
    r = subprocess.run([sys.executable, "-m", "bench.generate", "--out", str(out), "--seed", "3",
                        "--pods", "3", "--lines", "1200", "--format", "cri", "--avg-bytes", "700",
                        "--long-every", "300", "--stack-every", "100"],
                       capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert b"1,200 records" in r.stderr
    m = Manifest.load(out / "manifest.json")
    assert m.total_records == 1200 and {f.format for f in m.files} == {"cri"}
    assert m.params["avg_bytes"] == 700 and len(m.expected) == 1200
    single = tmp_path / "big.log"
    r = subprocess.run([sys.executable, "-m", "bench.generate", "--single-file", str(single),
                        "--lines", "3000", "--format", "docker", "--manifest", str(tmp_path / "m.json")],
                       capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    recs = records(str(single), "docker")
    assert len(recs) == 3000 and [seq_of(p) for _, p, _ in recs] == list(range(3000))
    sm = Manifest.load(tmp_path / "m.json")
    assert sm.files[0].bytes == single.stat().st_size and sm.files[0].link == ""
    r = subprocess.run([sys.executable, "-m", "bench.generate", "--out", str(out), "--lines", "5"],
                       capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and b"not empty" in r.stderr
