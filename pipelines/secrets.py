"""The secrets every log line must mask (passwords, API keys, password-file contents).

Kept in the data path's package because sinks read password files and register what they read;
`agent.logs` installs the filter that replaces them by `***` in every line written.
"""

from __future__ import annotations

_SECRETS: set[str] = set()


def add_secret(value: str) -> None:
    """Never let `value` appear in a log line (values shorter than 4 characters are not masked:
    masking them would garble ordinary text and hide little)."""
    if len(value) >= 4:
        _SECRETS.add(value)


def secrets() -> list[str]:
    """The registered secrets (handed to worker processes, which mask them too)."""
    return sorted(_SECRETS)


def registered() -> set[str]:
    """The live set (read by the logging filter on every line)."""
    return _SECRETS
