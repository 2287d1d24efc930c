"""Opt-in multiline merging: stack-trace lines join the record before them.

Per container stream, a `Multiline` holds the record being built. A line that continues it under
the preset is appended (with "\\n"); any other line completes it and becomes the next held one.

Presets (each more precise than the generic `trace.is_continuation`):

* java: indented `at ...` frames, `... N more` / `... N common frames omitted`, `Caused by: ...`
  and `Suppressed: ...` (indented or not), and a dotted exception summary line
  (`java.lang.IllegalStateException: boom`) right after a one-line record (the logged message).
* python: `Traceback (most recent call last):` (or a top-level exception group traceback, or
  `Stack (most recent call last):` from `stack_info=True`) attaches to the line before it, the
  logged message; inside the traceback every indented line belongs to it, and the first
  unindented line shaped like `pkg.SomeError: msg` closes it.
  Chained exceptions stay in the record: after the summary, blank lines, `During handling of the
  above exception...` / `The above exception was the direct cause...` and the next `Traceback`
  continue it. A `Traceback` straight after a finished one (no chain note) is a new record: it is
  a separate error.
* go: `panic: ...`, `fatal error: ...`, `SIG<NAME>: ...` and `goroutine N [...]:` attach and open a
  block; inside it frame lines (`main.main()`, `pkg.(*T).Method(...)`), tab-indented `file:line`
  lines, `created by ...`, `[signal ...`, `runtime stack:` and blank lines belong to it.
* auto: the union of the three (every preset sees every line, so each keeps its state right).

Blank lines: inside an open Python or Go block they are held and join the record if the block
goes on; otherwise they are emitted as their own records, as without multiline. Nothing attaches
to a held blank line.

Bounds: `max_lines` and `max_bytes` (UTF-8, counting the joining "\\n") per record. The first line
is always kept whole (the decoder bounds line length). Once a bound would be exceeded, that line
and every further continuation line are dropped until the next non-continuation line, and the
record is marked `truncated`. `expired` is true once no line (kept or dropped) arrived for
`timeout_secs`: a stack trace arrives in one burst, so idle time is what says it is complete.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

from pipelines.trace import EXCEPTION_LINE, is_go_frame, is_goroutine_header

PRESETS = ("java", "python", "go", "auto")


class Merged(NamedTuple):
    """A finished record: the first line's offset and ts, the number of lines kept in it."""

    text: str
    offset: int
    ts: str
    lines: int
    truncated: bool


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


# -- presets -----------------------------------------------------------------------------------


class _Rule(Protocol):
    """Sees every non-blank line in order and says whether it continues the held record."""

    @property
    def open(self) -> bool:
        """Whether a blank line may belong to the block in progress."""
        ...

    def step(self, line: str, held_lines: int) -> bool:
        """`held_lines`: lines the held record received so far, dropped ones included; 0: none."""
        ...


_JAVA_INDENTED = re.compile(
    r"[ \t]+(?:at |\.\.\. \d+ (?:more|common frames omitted)|Caused by: |Suppressed: )"
).match


class _Java:
    open = False

    def step(self, line: str, held_lines: int) -> bool:
        c = line[0]
        if c == " " or c == "\t":
            return _JAVA_INDENTED(line) is not None
        if line.startswith(("Caused by: ", "Suppressed: ")):
            return True
        # `com.x.FooException: msg` after the logged message; a second one is a separate dump
        return held_lines == 1 and EXCEPTION_LINE(line) is not None and "." in line.split(":", 1)[0]


_PY_IDLE, _PY_FRAMES, _PY_DONE, _PY_CHAINED = range(4)
_PY_START = ("Traceback (most recent call last):",
             "  + Exception Group Traceback (most recent call last):",
             "Stack (most recent call last):")  # logging's stack_info=True: frames, no summary
_PY_CHAIN = ("During handling of the above exception, another exception occurred:",
             "The above exception was the direct cause of the following exception:")
# The summary line: a (dotted) class name, CapWords by convention, optionally `: message`.
_PY_SUMMARY = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z_]\w*(?::.*)?").fullmatch


class _Python:
    def __init__(self) -> None:
        self.state = _PY_IDLE

    @property
    def open(self) -> bool:
        return self.state != _PY_IDLE

    def step(self, line: str, held_lines: int) -> bool:
        state = self.state
        if line.startswith(_PY_START):
            self.state = _PY_FRAMES
            return state != _PY_DONE
        if state == _PY_FRAMES:
            if line[0] == " " or line[0] == "\t":
                return True
            if _PY_SUMMARY(line):
                self.state = _PY_DONE
                return True
        elif state != _PY_IDLE and line.startswith(_PY_CHAIN):
            self.state = _PY_CHAINED
            return True
        self.state = _PY_IDLE
        return False


_GO_START = re.compile(r"(?:panic: |fatal error: |SIG[A-Z0-9]+: )").match
_GO_INSIDE = ("created by ", "[signal ", "runtime stack:", "PC=", "...additional frames elided...")


class _Go:
    def __init__(self) -> None:
        self.open = False

    def step(self, line: str, held_lines: int) -> bool:
        if _GO_START(line) or is_goroutine_header(line):
            self.open = True
            return True
        if self.open and (line[0] == "\t" or line.startswith(_GO_INSIDE) or is_go_frame(line)):
            return True
        self.open = False
        return False


def _rules(preset: str) -> list[_Rule]:
    if preset not in PRESETS:
        raise ValueError(f"unknown multiline preset {preset!r}; expected one of {PRESETS}")
    rules: list[_Rule] = []
    if preset in ("java", "auto"):
        rules.append(_Java())
    if preset in ("python", "auto"):
        rules.append(_Python())
    if preset in ("go", "auto"):
        rules.append(_Go())
    return rules


# -- merging -----------------------------------------------------------------------------------


class Multiline:
    """Merges continuation lines of one container stream into the record before them."""

    def __init__(self, preset: str, max_lines: int, max_bytes: int, timeout_secs: float) -> None:
        self._rules = _rules(preset)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.timeout_secs = timeout_secs
        self._parts: list[str] = []       # the held record's kept lines; empty: nothing held
        self._seen = 0                    # lines the held record received, dropped ones included
        self._offset = 0
        self._ts = ""
        self._bytes = 0
        self._truncated = False
        self._blanks: list[tuple[str, int, str]] = []  # (text, offset, ts) of blank lines after it
        self._last = 0.0                  # when the held record last saw a line

    @property
    def held_offset(self) -> int | None:
        return self._offset if self._parts else None

    def push(self, text: str, offset: int, ts: str, now: float) -> list[Merged]:
        """Feed one line; returns the records it completed (usually none or the held one)."""
        blank = not text or text.isspace()
        if blank:
            if self._parts and any(r.open for r in self._rules):
                self._blanks.append((text, offset, ts))
                self._last = now
                return []
            continues = False
        else:
            continues = self._continues(text)
        if continues and self._parts and not self._held_blank():
            self._append_blanks()
            self._append(text)
            self._last = now
            return []
        done = self.flush()
        self._start(text, offset, ts, now)
        return done

    def flush(self) -> list[Merged]:
        """Emit the held record, and any blank lines held after it as their own records."""
        if not self._parts:
            return []
        out = [Merged("\n".join(self._parts), self._offset, self._ts, len(self._parts),
                      self._truncated)]
        out += [Merged(text, off, ts, 1, False) for text, off, ts in self._blanks]
        self._parts = []
        self._blanks = []
        return out

    def expired(self, now: float) -> bool:
        """True when a record is held and no line arrived for it for `timeout_secs`."""
        return bool(self._parts) and now - self._last >= self.timeout_secs

    def _continues(self, text: str) -> bool:
        held_lines = self._seen if self._parts else 0  # bounds must not change record boundaries
        result = False
        for rule in self._rules:  # no short cut: every rule must see the line to keep its state
            result = rule.step(text, held_lines) or result
        return result

    def _held_blank(self) -> bool:
        return len(self._parts) == 1 and (not self._parts[0] or self._parts[0].isspace())

    def _start(self, text: str, offset: int, ts: str, now: float) -> None:
        self._parts = [text]
        self._seen = 1
        self._offset, self._ts, self._last = offset, ts, now
        self._bytes = _utf8_len(text)
        self._truncated = False

    def _append_blanks(self) -> None:
        for text, _, _ in self._blanks:
            self._append(text)
        self._blanks = []

    def _append(self, text: str) -> None:
        self._seen += 1
        if self._truncated:
            return  # once truncated, drop every further continuation line of this record
        size = _utf8_len(text) + 1
        if len(self._parts) >= self.max_lines or self._bytes + size > self.max_bytes:
            self._truncated = True
            return
        self._parts.append(text)
        self._bytes += size
