"""The Agent with several sinks: one down holds back its checkpoints, readiness and metrics say
which, and everything arrives once it is back."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import generate_latest

from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, running, wait_until

pytestmark = pytest.mark.timeout(30)


def named(name: str) -> CollectSink:
    sink = CollectSink()
    sink.name = name  # type: ignore[misc]
    return sink


async def test_a_sink_down_holds_the_checkpoint_and_says_so(tmp_path):
    """Sink b down: a gets every line, the file's checkpoint stays where b stopped, /readyz and
    tailship_sink_healthy name b; back up, b gets every line and the checkpoint reaches the end."""
    log = tmp_path / "app.log"
    lines = [f"line {i}\n" for i in range(200)]
    log.write_text("".join(lines))
    s = fast_settings(tmp_path, [str(log)])
    s.metrics = dataclasses.replace(s.metrics, ready_failing_secs=0.05)
    a, b = named("a"), named("b")
    b.down = True
    async with running(Agent(s, {"a": a, "b": b})) as agent:
        await wait_until(lambda: len(a.records) == 200, what="sink a got every line")
        await wait_until(lambda: not agent.readiness()[0], what="not ready while b fails")
        assert "sink b failing" in agent.readiness()[1]
        text = generate_latest(agent.metrics.registry).decode()
        assert 'tailship_sink_healthy{sink="a"} 1.0' in text
        assert 'tailship_sink_healthy{sink="b"} 0.0' in text
        assert [e.offset for e in agent.checkpoints.entries.values()] == [0]
        b.down = False
        await wait_until(lambda: len(b.records) == 200, what="sink b caught up")
        size = log.stat().st_size
        await wait_until(lambda: [e.offset for e in agent.checkpoints.entries.values()] == [size],
                         what="checkpoint at the end of the file")
        assert agent.readiness()[0]
    assert [r["message"] for r in a.records] == [ln.strip() for ln in lines]
    assert [r["message"] for r in b.records] == [ln.strip() for ln in lines]
    assert agent.summary().records_sent == 200  # once per record, not once per sink


async def test_a_poison_line_never_stops_its_file(tmp_path):
    """JSON nested deeper than orjson encodes, between good lines: every line ships (the poison
    one raw and flagged), the checkpoint reaches the end, no tailer fails."""
    log = tmp_path / "app.log"
    deep = '{"a": ' + "[" * 300 + "]" * 300 + "}"
    log.write_text("".join(['{"msg": "before"}\n', deep + "\n", '{"msg": "after"}\n']))
    sink = CollectSink()
    async with running(Agent(fast_settings(tmp_path, [str(log)]), sink)) as agent:
        size = log.stat().st_size
        await wait_until(lambda: [e.offset for e in agent.checkpoints.entries.values()] == [size],
                         what="checkpoint at the end of the file")
    assert [r.get("msg") for r in sink.records] == ["before", None, "after"]
    assert sink.records[1]["message"] == deep and sink.records[1]["log"]["flags"] == ["unparsable"]
    events = agent.summary().events
    assert events.get("unparsable") == 1 and "tailer_failed" not in events
