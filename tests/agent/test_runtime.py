"""The Agent with several sinks: one down holds back its checkpoints, readiness and metrics say
which, and everything arrives once it is back."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import generate_latest

from agent.runtime import Agent
from pipelines.errors import FatalSinkError
from pipelines.records import Batch
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


class RefusingSink(CollectSink):
    """Refuses for good (FatalSinkError, as refused credentials do) at start and/or on send while
    its flags are set; counts the attempts."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.refuse_start = self.refuse_send = False
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.refuse_start:
            raise FatalSinkError(self.name, "Elasticsearch at http://es:9200 refused the credentials (401)")

    async def send(self, batch: Batch) -> None:
        if self.refuse_send:
            self.attempts += 1
            raise FatalSinkError(self.name, "Kafka at k:9092 refused: SaslAuthenticationFailed")
        await super().send(batch)


@pytest.mark.parametrize("where,cause", [("start", "Elasticsearch at http://es:9200 refused"),
                                         ("send", "Kafka at k:9092 refused")])
async def test_the_daemon_keeps_running_while_a_sink_is_refused_and_heals(tmp_path, caplog, where, cause):
    """Sink b refuses for good (FatalSinkError) at start or on send: the daemon runs on, a gets
    every line, /readyz says b is refused, one error is logged for several attempts; once b
    accepts, it gets every line and the agent is ready again."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    s = fast_settings(tmp_path, [str(log)])
    a, b = RefusingSink("a"), RefusingSink("b")
    b.refuse_start, b.refuse_send = where == "start", where == "send"
    with caplog.at_level("INFO", logger="tailship"):
        async with running(Agent(s, {"a": a, "b": b})) as agent:
            await wait_until(lambda: len(a.records) == 100, what="sink a got every line")
            await wait_until(lambda: b.starts + b.attempts >= 3, what="b tried again")
            ready, why = agent.readiness()
            assert not ready and why.startswith(f"sink b refused: sink b: {cause}"), why
            b.refuse_start = b.refuse_send = False
            await wait_until(lambda: len(b.records) == 100, what="b got every line once it accepts")
            await wait_until(lambda: agent.readiness() == (True, "ready"), what="ready again")
    refusals = [r for r in caplog.records if cause in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]  # once a minute, not per attempt
    assert "sink b: accepted again" in caplog.text


@pytest.mark.parametrize("where", ["start", "send"])
async def test_once_stops_at_the_first_refusal(tmp_path, where):
    """`tail --once`: a sink refused at start or on send stops the agent with that error (exit 3
    in the CLI), without trying again."""
    log = tmp_path / "app.log"
    log.write_text("x\n")
    b = RefusingSink("b")
    b.refuse_start, b.refuse_send = where == "start", where == "send"
    agent = Agent(fast_settings(tmp_path, [str(log)]), b, once=True)
    with pytest.raises(FatalSinkError, match="refused"):
        await asyncio.wait_for(agent.run(), 15)
    assert b.starts == 1 and b.attempts == (1 if where == "send" else 0)
