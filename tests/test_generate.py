"""The workload generator: deterministic, kubelet layout, runtime splitting, manifest."""

from __future__ import annotations

import os
import re

import orjson

from bench.generate import SPLIT, generate_tree
from pipelines.enrich import kubernetes_from_paths

CRI = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) ([PF]) ")


def read_all(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("0.log"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    """Output is a function of the seed."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_tree(a, seed=1, pods=2, lines=300)
    generate_tree(b, seed=1, pods=2, lines=300)
    generate_tree(c, seed=2, pods=2, lines=300)
    assert read_all(a) == read_all(b) and read_all(a) != read_all(c)


def test_layout_symlinks_and_names(tmp_path):
    """containers/ symlinks resolve to pods/ files, and their names carry the pod metadata."""
    m = generate_tree(tmp_path, seed=4, pods=3, lines=90)
    for f in m.files:
        assert os.path.realpath(f.link) == f.path
        assert kubernetes_from_paths(f.link, f.path) == {
            "namespace": f.namespace, "pod": f.pod, "pod_uid": f.pod_uid,
            "container": f.container, "container_id": f.container_id}


def test_docker_and_cri_splitting(tmp_path):
    """Payloads over 16 KiB become 16384-byte pieces: docker without newline, CRI as P then F."""
    m = generate_tree(tmp_path, seed=9, pods=2, lines=400, long_every=50, fmt="mixed")
    docker_file, cri_file = (next(f for f in m.files if f.format == k) for k in ("docker", "cri"))
    pieces = [orjson.loads(x) for x in open(docker_file.path, "rb").read().splitlines()]
    partial = [p for p in pieces if not p["log"].endswith("\n")]
    assert partial and all(len(p["log"]) == SPLIT for p in partial)
    tags = [CRI.match(x) for x in open(cri_file.path, "rb").read().splitlines()]
    assert all(tags) and any(t.group(2) == b"P" for t in tags)
    assert docker_file.lines > docker_file.records and cri_file.lines > cri_file.records


def test_seq_unique_contiguous_and_sizes(tmp_path):
    """Sequence numbers cover 0..N-1 once; lines average close to --avg-bytes."""
    m = generate_tree(tmp_path, seed=2, pods=2, lines=2000, fmt="docker", long_every=0,
                      stack_every=0, avg_bytes=1024)
    seqs = []
    for f in m.files:
        for line in open(f.path, "rb").read().splitlines():
            payload = orjson.loads(line)["log"]
            found = re.search(r'"seq":(\d+)|seq=(\d+)', payload)
            seqs.append(int(found.group(1) or found.group(2)))
    assert sorted(seqs) == list(range(2000)) == list(range(m.total_records))
    avg = m.total_bytes / m.total_lines
    assert 0.85 * 1024 <= avg <= 1.15 * 1024, avg
    assert sum(f.bytes for f in m.files) == sum(os.path.getsize(f.path) for f in m.files)
