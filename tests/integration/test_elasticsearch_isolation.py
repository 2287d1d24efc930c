"""One Elasticsearch index refusing writes never holds back the others, against the real node
started by scripts/services: a write block (`PUT /<index>/_block/write`) on one namespace's index
while the other namespaces ship.

Locally the test skips when the node cannot start; under CI=true it fails instead.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import generate_tree
from tests.conftest import seq_of
from tests.integration.test_elasticsearch import all_docs

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]

TAILSHIP = [sys.executable, "-m", "agent"]


def dead_letters(data: Path) -> list[dict[str, Any]]:
    """Every dead letter of every worker."""
    return [orjson.loads(line) for f in sorted(data.rglob("deadletter/*.ndjson"))
            for line in f.read_bytes().splitlines()]


def test_a_write_blocked_index_is_dead_lettered_while_the_other_namespaces_ship(es, tmp_path):
    """Every record of the blocked namespace is in the dead-letter file (not_authorized, the
    index named), every other record is indexed once, the agent exits 0: written = indexed +
    dead-lettered, 0 lost."""
    root = tmp_path / "log"
    m = generate_tree(root, seed=14, pods=6, lines=6000, fmt="mixed", stack_every=0, long_every=0)
    per_ns = Counter[str]()
    for f in m.files:
        per_ns[f.namespace] += f.records
    assert len(per_ns) >= 3, per_ns
    blocked_ns = sorted(per_ns)[0]
    prefix = f"wb-{uuid.uuid4().hex[:8]}"
    blocked = f"{prefix}-{blocked_ns}"
    es.indices.create(index=blocked)
    es.indices.add_block(index=blocked, block="write")
    data = tmp_path / "data"
    r = subprocess.run(
        [*TAILSHIP, "tail", str(root / "containers" / "*.log"), "--to",
         f"elasticsearch://{es.tailship_hostport}/{prefix}-{{kubernetes.namespace}}",
         "--data-dir", str(data), "--no-progress", "--once"],
        capture_output=True, timeout=280)
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr[-3000:]

    indexed = Counter[int]()
    for ns in per_ns:
        if ns != blocked_ns:
            indexed.update(seq_of(d) for d in all_docs(es, f"{prefix}-{ns}", ["seq", "message"]))
    es.indices.refresh(index=blocked)
    assert es.count(index=blocked)["count"] == 0
    dead = dead_letters(data)
    dead_seqs = Counter(seq_of(orjson.loads(d["record"])) for d in dead)
    print(f"\nwrite block on {blocked}: written {m.total_records}, indexed {sum(indexed.values())} "
          f"(namespaces {sorted(set(per_ns) - {blocked_ns})}), dead-lettered {len(dead)} "
          f"(namespace {blocked_ns}: {per_ns[blocked_ns]} written), duplicates "
          f"{sum(indexed.values()) - len(indexed)}")
    assert sorted(indexed) + sorted(dead_seqs) and set(indexed).isdisjoint(dead_seqs)
    assert sorted([*indexed, *dead_seqs]) == list(range(m.total_records))  # 0 lost
    assert max(indexed.values()) == 1 and max(dead_seqs.values()) == 1
    assert len(dead) == per_ns[blocked_ns]
    for d in dead:
        assert d["reason"] == "not_authorized", d
        assert f"for index {blocked!r}" in d["detail"] and "cluster_block_exception" in d["detail"], d
        assert blocked_ns in d["file"]
    warnings = [line for line in stderr.splitlines() if f"index {blocked!r}" in line]
    workers = len(list(data.glob("worker-*"))) or 1
    assert 1 <= len(warnings) <= workers, warnings  # once a minute per process, not per batch
