"""The filter that keeps client libraries from flooding stderr while a server is down."""

from __future__ import annotations

import logging

from agent.logs import RepeatFilter


def _record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


def test_repeats_are_held_back_and_counted(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("agent.logs.time.monotonic", lambda: now[0])
    f = RepeatFilter(interval=30)
    assert f.filter(_record("Unable connect to node with id %s"))
    passed = [f.filter(_record("Unable connect to node with id %s")) for _ in range(50)]
    assert not any(passed)
    assert f.filter(_record("Unable to update metadata from %s"))  # another message passes
    assert f.filter(_record("Unable connect to node with id %s", name="other"))  # another logger too
    now[0] += 31
    rec = _record("Unable connect to node with id %s")
    assert f.filter(rec)
    assert rec.msg == "Unable connect to node with id %s (50 similar message(s) held back)"
