"""Logging set-up: one line per message on stderr, secrets masked in every line, and client
libraries kept from flooding it.

Secrets (passwords, API keys: the values of secret-looking config keys and the contents of
password files) are registered with `add_secret`; every line a handler writes has them replaced
by `***`, whatever logged it — aiokafka's debug log, for one, prints SASL requests whole.

aiokafka and the Elasticsearch transport log every failed connection attempt, many per second
while a server is down. The sinks report an outage themselves (first attempt, then every tenth),
so repeats of the same library message are let through at most once per `interval` seconds; the
next one that passes says how many were held back.
"""

from __future__ import annotations

import logging
import sys
import time

from pipelines.secrets import add_secret, registered, secrets

__all__ = ["add_secret", "secrets", "setup", "SecretFilter", "RepeatFilter"]

LIBRARIES = ("aiokafka", "elastic_transport", "elasticsearch")
_SECRETS = registered()


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            text = record.getMessage()
            masked = text
            for secret in _SECRETS:
                if secret in masked:
                    masked = masked.replace(secret, "***")
            if masked is not text:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                for secret in _SECRETS:
                    record.exc_text = record.exc_text.replace(secret, "***")
        return True


class RepeatFilter(logging.Filter):
    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} similar message(s) held back)"
        if len(self._last) > 1000:
            self._last.clear()
        return True


def setup(level: str, process: str = "") -> None:
    """`process`: a worker's name, shown after `tailship` in each line."""
    tag = f"tailship[{process}]" if process else "tailship"
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format=f"{tag} %(levelname)s %(name)s: %(message)s", force=bool(process))
    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretFilter())
    repeats = RepeatFilter()
    for name in LIBRARIES:
        logging.getLogger(name).addFilter(repeats)
    # the transport logs every request at INFO: far too much for an agent's own log
    transport = logging.getLogger("elastic_transport.transport")
    transport.setLevel(max(transport.getEffectiveLevel(), logging.WARNING))
