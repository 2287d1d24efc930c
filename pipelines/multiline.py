"""Opt-in multiline merging: stack-trace lines join the record before them.

Per container stream, a `Multiline` holds the record being built. A line that continues it under
the preset is appended (with "\\n"); any other line completes it and starts the next one. Bounds:
`max_lines` and `max_bytes` (UTF-8) per record — further continuation lines are dropped and the
record is marked truncated; `timeout_secs` after the last line the caller flushes the record.

Presets:
* java: indented lines (`\\tat ...`), `... N more`, `Caused by:`, `Suppressed:`, and an exception
  summary line (`java.lang.IllegalStateException: boom`) following a log line.
* python: a `Traceback (most recent call last):` block attaches to the line before it (the logged
  message): its indented lines, the chained-exception notes, and the final `SomeError: msg` line.
* go: `panic: ...` and `goroutine N [...]:` blocks, frame lines (`main.main()`), tab-indented
  file:line lines, `created by ...`, `[signal ...`.
* auto: any of the three.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from pipelines.trace import EXCEPTION_LINE, GO_FRAME


class Merged(NamedTuple):
    text: str
    offset: int
    ts: str
    lines: int
    truncated: bool


_JAVA_MORE = re.compile(r"\s*\.\.\. \d+ (?:more|common frames omitted)").match


def _indented(line: str) -> bool:
    return line[:1] in (" ", "\t") and not line.isspace()


class _Rules:
    """Continuation tests; python needs to know whether a traceback is open."""

    def __init__(self, preset: str) -> None:
        self.in_traceback = False
        tests: list[Callable[[str], bool]] = []
        if preset in ("java", "auto"):
            tests.append(self._java)
        if preset in ("python", "auto"):
            tests.append(self._python)
        if preset in ("go", "auto"):
            tests.append(self._go)
        self.tests = tests

    def continues(self, line: str) -> bool:
        return any(t(line) for t in self.tests)

    @staticmethod
    def _java(line: str) -> bool:
        return (_indented(line) or line.startswith(("Caused by:", "Suppressed:"))
                or bool(_JAVA_MORE(line)) or bool(EXCEPTION_LINE(line) and "." in line.split(":")[0]))

    def _python(self, line: str) -> bool:
        if line.startswith("Traceback (most recent call last):"):
            self.in_traceback = True
            return True
        if not self.in_traceback:
            return False
        if _indented(line):
            return True
        if line.startswith(("During handling of the above exception",
                            "The above exception was the direct cause")):
            return True
        if EXCEPTION_LINE(line):
            self.in_traceback = False  # the summary line closes the traceback
            return True
        self.in_traceback = False
        return False

    @staticmethod
    def _go(line: str) -> bool:
        return (line.startswith(("panic: ", "goroutine ", "created by ", "[signal ", "\t"))
                or bool(GO_FRAME(line)))


class Multiline:
    def __init__(self, preset: str, max_lines: int, max_bytes: int, timeout_secs: float) -> None:
        if preset not in ("java", "python", "go", "auto"):
            raise ValueError(f"unknown multiline preset {preset!r}")
        self.rules = _Rules(preset)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.timeout_secs = timeout_secs
        self._parts: list[str] = []
        self._offset = 0
        self._ts = ""
        self._lines = 0
        self._bytes = 0
        self._truncated = False
        self._last = 0.0

    @property
    def held_offset(self) -> int | None:
        return self._offset if self._parts else None

    def push(self, text: str, offset: int, ts: str, now: float) -> list[Merged]:
        """Feed one line; returns the record it completed, if any."""
        out: list[Merged] = []
        if self._parts and self.rules.continues(text):
            self._append(text, now)
            return out
        if self._parts:
            out.append(self._take())
        self._parts = [text]
        self._offset, self._ts, self._lines = offset, ts, 1
        self._bytes = len(text.encode())
        self._truncated = False
        self._last = now
        return out

    def flush(self) -> list[Merged]:
        return [self._take()] if self._parts else []

    def expired(self, now: float) -> bool:
        return bool(self._parts) and now - self._last >= self.timeout_secs

    def _append(self, text: str, now: float) -> None:
        self._last = now
        size = len(text.encode()) + 1
        if self._lines >= self.max_lines or self._bytes + size > self.max_bytes:
            self._truncated = True
            return
        self._parts.append(text)
        self._lines += 1
        self._bytes += size

    def _take(self) -> Merged:
        m = Merged("\n".join(self._parts), self._offset, self._ts, self._lines, self._truncated)
        self._parts = []
        return m
