"""Several sinks and routes, end to end through the real CLI (file sinks: no server needed)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.generate import Manifest, generate_tree
from pipelines.sinks.file import read_dir
from tests.conftest import seq_of
from tests.e2e.test_cli import check_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TAILSHIP = [sys.executable, "-m", "agent"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("tree")
    return root, generate_tree(root, seed=7, pods=6, lines=3000, fmt="mixed", long_every=400,
                               stack_every=200, with_expected=True)


def test_tail_to_two_file_sinks_writes_every_record_to_both(tree, tmp_path):
    """`tail --once DIR --to file:A --to file:B`: each sink gets every record exactly once."""
    root, m = tree
    a, b = tmp_path / "a", tmp_path / "b"
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(root / "containers"), "--to", f"file:{a}",
                        "--to", f"file:{b}", "--no-progress"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    for out in (a, b):
        check_records([orjson.loads(x) for x in read_dir(out)], m)
    print(f"records: {m.total_records} in each of 2 sinks")


def test_routes_send_each_record_to_exactly_its_sinks(tree, tmp_path):
    """Three routes over a file field (namespace), a record field (stream) and `all`, with a final
    route: every record lands in exactly the sinks its routes name, once each."""
    root, m = tree
    namespaces = sorted({f.namespace for f in m.files})
    chosen = namespaces[0]
    data = tmp_path / "data"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
data_dir = "{data}"
[source]
include = ["{root}/containers/*.log"]
[metrics]
listen = ""
[sinks.ns]
type = "file"
path = "{tmp_path}/ns"
[sinks.err]
type = "file"
path = "{tmp_path}/err"
[sinks.rest]
type = "file"
path = "{tmp_path}/rest"
[routing]
unmatched = "rest"
[[routing.routes]]
name = "one-namespace"
when = [{{ field = "kubernetes.namespace", equals = "{chosen}" }}]
sinks = ["ns"]
final = true
[[routing.routes]]
name = "stderr"
when = [{{ field = "stream", equals = "stderr" }}]
sinks = ["err"]
[[routing.routes]]
name = "stderr-also-rest"
when = [{{ field = "stream", equals = "stderr" }}]
sinks = ["rest"]
""")
    r = subprocess.run([*TAILSHIP, "run", "--config", str(cfg), "--once"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    got = {name: [orjson.loads(x) for x in read_dir(tmp_path / name)] for name in ("ns", "err", "rest")}
    where: dict[int, list[str]] = {}
    for name, records in got.items():
        for rec in records:
            where.setdefault(seq_of(rec), []).append(name)
    everything = [rec for records in got.values() for rec in records]
    first = {seq_of(rec): rec for rec in everything}
    assert sorted(first) == list(range(m.total_records)), "every record reached some sink"
    for seq, rec in first.items():
        if rec["kubernetes"]["namespace"] == chosen:
            expected = ["ns"]  # final: not offered to the stream routes
        elif rec["stream"] == "stderr":
            expected = ["err", "rest"]
        else:
            expected = ["rest"]  # unmatched
        assert sorted(where[seq]) == expected, (seq, rec["kubernetes"]["namespace"], rec["stream"])
    counts = Counter(n for names in where.values() for n in names)
    assert counts["ns"] and counts["err"] and counts["rest"]
    print(f"records: {m.total_records}; per sink: {dict(counts)}")
