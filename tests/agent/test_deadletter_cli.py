"""`tailship deadletter list|replay` without a server: arguments, usage errors, counting, and a
replay through the file sink (the Kafka case is tests/integration/test_deadletter_replay.py)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import zstandard

from agent.cli import main
from agent.deadletter_cli import parse_since
from pipelines import layout
from pipelines.deadletter import DeadLetter, Reason

pytestmark = pytest.mark.timeout(60)


def write(state_dir: Path, sink: str, n: int, reason: Reason = Reason.TOO_LARGE, dest: str = "t") -> None:
    DeadLetter(layout.dead_letter_file(state_dir, sink), sink).write(
        [(reason, "d", "/a.log", i, orjson.dumps({"seq": i}), dest) for i in range(n)])


def test_since_takes_rfc3339_dates_and_ages() -> None:
    assert parse_since("2026-12-04T10:00:00Z") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parse_since("2026-12-04") == datetime(2026, 12, 4, tzinfo=UTC)
    assert abs(parse_since("2h") - (datetime.now(UTC) - timedelta(hours=2))) < timedelta(minutes=1)
    with pytest.raises(argparse.ArgumentTypeError, match="expected RFC 3339 time"):
        parse_since("yesterday")


def test_list_counts_by_store_sink_reason_and_destination(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write(data, "kafka", 3)
    write(data, "kafka", 2, Reason.MISSING_DESTINATION, "logs-x")
    write(data / "worker-0", "search", 1, Reason.REJECTED, "idx")
    assert main(["deadletter", "list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"{data}/deadletter sink kafka: 5 record(s)" in out
    assert "  reason missing_destination: 2\n  reason too_large: 3\n" in out
    assert "  destination logs-x: 2\n  destination t: 3\n" in out
    assert f"{data}/worker-0/deadletter sink search: 1 record(s)" in out
    assert main(["deadletter", "list", "--data-dir", str(data), "--sink", "search", "--json"]) == 0
    [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (row["sink"], row["records"], row["reasons"]) == ("search", 1, {"rejected": 1})
    assert main(["deadletter", "list", "--data-dir", str(data), "--since", "2100-01-01"]) == 0
    assert "0 record(s)" in capsys.readouterr().out


def test_usage_errors_exit_2_and_say_why(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write(data, "kafka", 1)
    conf = tmp_path / "c.toml"
    conf.write_text(f'data_dir = "{data}"\n[sink]\ntype = "null"\n')
    assert main(["deadletter", "list"]) == 2
    assert "expected --config or --data-dir" in capsys.readouterr().err
    assert main(["deadletter", "replay", "--data-dir", str(data)]) == 2
    assert "expected --config (to build the sinks)" in capsys.readouterr().err
    assert main(["deadletter", "replay", "--config", str(conf), "--sink", "nope"]) == 2
    assert "--sink nope: no such sink" in capsys.readouterr().err
    assert main(["deadletter", "replay", "--config", str(conf)]) == 2
    assert "dead letters of sinks not in" in capsys.readouterr().err
    assert (layout.dead_letter_file(data, "kafka")).exists()  # untouched


def test_replay_through_the_file_sink_empties_the_store(tmp_path: Path, capsys) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write(data, "archive", 25)
    conf = tmp_path / "c.toml"
    conf.write_text(f'data_dir = "{data}"\n[sinks.archive]\ntype = "file"\npath = "{out}"\n')
    assert main(["deadletter", "replay", "--config", str(conf)]) == 0
    assert "tailship deadletter replay: 25 selected, 25 accepted and removed, 0 dead-lettered again" \
        in capsys.readouterr().out
    lines = [orjson.loads(x) for f in sorted(out.iterdir())
             for x in zstandard.ZstdDecompressor().stream_reader(f.open("rb")).read().splitlines()]
    assert sorted(r["seq"] for r in lines) == list(range(25))
    assert list(layout.dead_letter_dir(data).glob("*.ndjson")) == []
