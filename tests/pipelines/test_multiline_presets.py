"""Multiline presets (java, python, go, auto), bounds and timeouts."""

from __future__ import annotations

import pytest

from pipelines.multiline import Merged, Multiline


def feed(m: Multiline, lines: list[str], now: float = 0.0) -> list[Merged]:
    out: list[Merged] = []
    for i, line in enumerate(lines):
        out += m.push(line, i * 100, f"ts{i}", now)
    return out


JAVA = ["ERROR payment failed", "java.lang.IllegalStateException: declined",
        "\tat com.shop.Checkout.pay(Checkout.java:42)", "Caused by: java.io.IOException: timeout",
        "\t... 12 more"]
PYTHON = ["ERROR handler crashed", "Traceback (most recent call last):",
          '  File "app.py", line 3, in main', "    run()", "ValueError: bad value"]
GO = ["panic: runtime error: index out of range", "", "goroutine 1 [running]:", "main.main()",
      "\t/app/main.go:12 +0x1d", "created by main.start"]


@pytest.mark.parametrize("preset,block", [("java", JAVA), ("python", PYTHON), ("auto", JAVA),
                                          ("auto", PYTHON)])
def test_block_merged_and_completed_by_next_line(preset, block):
    """A stack trace joins the line before it; the next ordinary line completes it."""
    m = Multiline(preset, 500, 1 << 20, 1.0)
    out = feed(m, [*block, "INFO next request"])
    assert out == [Merged("\n".join(block), 0, "ts0", len(block), False)]
    assert m.held_offset == len(block) * 100


def test_go_panic_block():
    """A Go panic with its goroutine frames is one record (the blank line is dropped upstream)."""
    m = Multiline("go", 500, 1 << 20, 1.0)
    lines = [x for x in GO if x]
    out = feed(m, ["INFO serving", *lines, "INFO restarted"])
    assert [x.text for x in out] == ["INFO serving\n" + "\n".join(lines)]


def test_python_summary_line_closes_traceback():
    """After the exception summary line, an unindented line starts a new record."""
    m = Multiline("python", 500, 1 << 20, 1.0)
    out = feed(m, [*PYTHON, "KeyError: after the traceback"])
    assert len(out) == 1 and m.held_offset == len(PYTHON) * 100


def test_ordinary_lines_not_merged():
    """Two ordinary lines stay two records."""
    m = Multiline("auto", 500, 1 << 20, 1.0)
    assert feed(m, ["first line", "second line"]) == [Merged("first line", 0, "ts0", 1, False)]
    assert m.flush() == [Merged("second line", 100, "ts1", 1, False)]
    assert m.held_offset is None and m.flush() == []


def test_max_lines_bound():
    """Past max_lines, continuation lines are dropped and the record is flagged truncated."""
    m = Multiline("java", 3, 1 << 20, 1.0)
    feed(m, ["start"] + [f"\tat f{i}()" for i in range(6)])
    [rec] = m.flush()
    assert rec.lines == 3 and rec.truncated and rec.text == "start\n\tat f0()\n\tat f1()"


def test_max_bytes_bound_counts_utf8():
    """max_bytes counts UTF-8 bytes, not characters."""
    m = Multiline("java", 100, 1024, 1.0)
    feed(m, ["é" * 300, "\tat " + "é" * 300, "\tat " + "é" * 300])
    [rec] = m.flush()
    assert rec.lines == 1 and rec.truncated  # 600 bytes + 605 would exceed 1024


def test_expired_measures_from_last_line():
    """A held record expires timeout_secs after its last line, not its first."""
    m = Multiline("java", 500, 1 << 20, 1.0)
    m.push("start", 0, "t", now=10.0)
    m.push("\tat x()", 10, "t", now=10.8)
    assert not m.expired(11.5)
    assert m.expired(11.8)


def test_unknown_preset():
    """An unknown preset is refused."""
    with pytest.raises(ValueError):
        Multiline("cobol", 1, 1024, 1.0)
