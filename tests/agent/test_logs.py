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


def test_secrets_are_masked_in_every_line(capsys):
    """A registered secret never reaches the output, whether in the message, its arguments or a
    traceback; short values are not registered (they would garble ordinary text)."""
    import io

    from agent.logs import SecretFilter, add_secret

    add_secret("hunter2-very-secret")
    add_secret("abc")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SecretFilter())
    lg = logging.getLogger("test.secrets")
    lg.addHandler(handler)
    lg.setLevel(logging.DEBUG)
    try:
        lg.debug("SaslAuthenticateRequest(auth_bytes=%r)", b"\x00user\x00hunter2-very-secret")
        lg.info("plain hunter2-very-secret and abc")
        try:
            raise ValueError("bad password hunter2-very-secret")
        except ValueError:
            lg.exception("failed")
    finally:
        lg.removeHandler(handler)
    text = out.getvalue()
    assert "hunter2-very-secret" not in text
    assert text.count("***") == 4 and "and abc" in text  # message, args, traceback source + error
    assert "ValueError: bad password ***" in text
