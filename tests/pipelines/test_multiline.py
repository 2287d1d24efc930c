"""pipelines.multiline: presets, record completion, bounds, timeouts, flush and held_offset."""

from __future__ import annotations

import pytest

from pipelines.multiline import Merged, Multiline

BIG = 1 << 20


def feed(ml: Multiline, lines: list[str], start: float = 0.0) -> tuple[list[Merged], list[list[Merged]]]:
    """Push lines with offsets 0, 100, 200, ..., ts "t0", "t1", ... and one second apart."""
    out: list[Merged] = []
    per_push: list[list[Merged]] = []
    for i, line in enumerate(lines):
        done = ml.push(line, i * 100, f"t{i}", start + i)
        per_push.append(done)
        out += done
    return out, per_push


def run(preset: str, lines: list[str], max_lines: int = 1000, max_bytes: int = BIG) -> list[Merged]:
    ml = Multiline(preset, max_lines, max_bytes, 5.0)
    out, _ = feed(ml, lines)
    return out + ml.flush()


JAVA = [
    "2024-05-01 12:00:00.123 ERROR [http-nio-8080-exec-1] c.e.OrderController - order 42 failed",
    "java.lang.IllegalStateException: inventory unavailable",
    "\tat com.example.InventoryService.reserve(InventoryService.java:88)",
    "\tat com.example.OrderService.place(OrderService.java:42)",
    "\tat com.example.OrderController.create(OrderController.java:31)",
    "Caused by: java.sql.SQLTransientConnectionException: pool exhausted",
    "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
    "\t... 12 more",
]
JAVA_NEXT = "2024-05-01 12:00:01.002 INFO  [http-nio-8080-exec-2] c.e.OrderController - order 43 placed"

PYTHON = [
    "2024-05-01 12:00:00,123 ERROR app.handlers: handler crashed",
    "Traceback (most recent call last):",
    '  File "/app/handlers.py", line 41, in handle',
    "    order = parse(body)",
    '  File "/app/parse.py", line 12, in parse',
    "    raise ValueError(f\"bad quantity: {q}\")",
    "ValueError: bad quantity: -1",
]
PYTHON_NEXT = "2024-05-01 12:00:00,130 INFO app.handlers: next request"

GO = [
    "panic: runtime error: index out of range [5] with length 3",
    "",
    "goroutine 1 [running]:",
    "main.lookup(...)",
    "\t/app/main.go:12 +0x1d",
    "main.(*Server).handle(0xc000010000, {0x0, 0x0})",
    "\t/app/server.go:40 +0x85",
    "created by main.start in goroutine 1",
    "\t/app/main.go:8 +0x25",
]
GO_NEXT = "exit status 2"


def test_java_preset_merges_exception_block():
    """java: logged line, exception, `at` frames, `Caused by:` and `... N more` form one record."""
    ml = Multiline("java", 1000, BIG, 5.0)
    out, per_push = feed(ml, JAVA + [JAVA_NEXT])
    assert per_push[:-1] == [[]] * len(JAVA)
    assert out == [Merged("\n".join(JAVA), 0, "t0", 8, False)]
    assert ml.held_offset == 800
    assert ml.flush() == [Merged(JAVA_NEXT, 800, "t8", 1, False)]


def test_java_suppressed_and_common_frames():
    """java: `Suppressed:` and `... N common frames omitted` lines (indented or not) continue the record."""
    lines = [
        "12:00:00.001 ERROR c.e.Job - close failed",
        "java.io.IOException: flush failed",
        "\tat com.example.Sink.flush(Sink.java:20)",
        "\tSuppressed: java.lang.IllegalStateException: already closed",
        "\t\tat com.example.Sink.close(Sink.java:31)",
        "\t\t... 1 more",
        "Caused by: java.net.SocketException: Broken pipe",
        "\t... 3 common frames omitted",
        "Suppressed: java.lang.RuntimeException: cleanup",
    ]
    assert run("java", lines + ["12:00:00.002 INFO c.e.Job - done"]) == [
        Merged("\n".join(lines), 0, "t0", 9, False),
        Merged("12:00:00.002 INFO c.e.Job - done", 900, "t9", 1, False),
    ]


def test_java_second_exception_summary_is_a_new_record():
    """java: an exception summary after a multi-line record starts a separate record."""
    lines = [
        "ERROR c.e.A - first",
        "java.lang.IllegalStateException: a",
        "\tat com.example.A.run(A.java:1)",
        "java.lang.RuntimeException: b",
        "\tat com.example.B.run(B.java:2)",
    ]
    assert run("java", lines) == [
        Merged("\n".join(lines[:3]), 0, "t0", 3, False),
        Merged("\n".join(lines[3:]), 300, "t3", 2, False),
    ]


def test_java_undotted_summary_not_merged():
    """java: an undotted `SomethingException: x` after a log line is not taken as a Java exception."""
    assert run("java", ["ERROR step failed", "ValueError: bad"]) == [
        Merged("ERROR step failed", 0, "t0", 1, False),
        Merged("ValueError: bad", 100, "t1", 1, False),
    ]


def test_python_preset_merges_traceback():
    """python: logged line, Traceback block and final summary merge; the next line is a new record."""
    ml = Multiline("python", 1000, BIG, 5.0)
    out, per_push = feed(ml, PYTHON + [PYTHON_NEXT])
    assert per_push[:-1] == [[]] * len(PYTHON)
    assert out == [Merged("\n".join(PYTHON), 0, "t0", 7, False)]
    assert ml.held_offset == 700
    assert ml.flush() == [Merged(PYTHON_NEXT, 700, "t7", 1, False)]


def test_python_summary_closes_traceback():
    """python: after the summary line an indented line no longer continues the record."""
    lines = ["ERROR x", "Traceback (most recent call last):", '  File "a.py", line 1, in <module>',
             "KeyError: 'user'", "    indented but after the summary"]
    assert run("python", lines) == [
        Merged("\n".join(lines[:4]), 0, "t0", 4, False),
        Merged("    indented but after the summary", 400, "t4", 1, False),
    ]


def test_python_chained_exceptions_stay_in_one_record():
    """python: a chain note and the next Traceback (with blank lines between) continue the record."""
    lines = [
        "ERROR job failed",
        "Traceback (most recent call last):",
        '  File "/app/job.py", line 3, in run',
        "    data['user']",
        "KeyError: 'user'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/app/job.py", line 5, in run',
        "    raise RuntimeError('no user')",
        "RuntimeError: no user",
    ]
    assert run("python", lines + ["", "INFO next"]) == [
        Merged("\n".join(lines), 0, "t0", 12, False),
        Merged("", 1200, "t12", 1, False),
        Merged("INFO next", 1300, "t13", 1, False),
    ]


def test_python_traceback_after_finished_one_is_new_record():
    """python: a Traceback straight after a finished one (no chain note) starts a new record."""
    lines = ["ERROR x", "Traceback (most recent call last):", '  File "a.py", line 1, in <module>',
             "ValueError: a", "Traceback (most recent call last):", '  File "b.py", line 2, in <module>',
             "TypeError: b"]
    assert run("python", lines) == [
        Merged("\n".join(lines[:4]), 0, "t0", 4, False),
        Merged("\n".join(lines[4:]), 400, "t4", 3, False),
    ]


def test_go_preset_merges_panic():
    """go: panic, blank line, goroutine header, frames, file lines and `created by` form one record."""
    ml = Multiline("go", 1000, BIG, 5.0)
    out, per_push = feed(ml, GO + [GO_NEXT])
    assert per_push[:-1] == [[]] * len(GO)
    assert out == [Merged("\n".join(GO), 0, "t0", 9, False)]
    assert ml.held_offset == 900
    assert ml.flush() == [Merged(GO_NEXT, 900, "t9", 1, False)]


def test_go_panic_attaches_to_logged_line():
    """go: a panic after a logged line joins that line's record, with every goroutine block."""
    lines = [
        "2024/05/01 12:00:00 worker: starting",
        "fatal error: all goroutines are asleep - deadlock!",
        "",
        "goroutine 1 [chan receive]:",
        "main.main()",
        "\t/app/main.go:9 +0x3d",
        "",
        "goroutine 18 [select, 2 minutes]:",
        "net/http.(*persistConn).writeLoop(0xc0000b6000)",
        "\t/usr/local/go/src/net/http/transport.go:2410 +0xf2",
        "created by net/http.(*Transport).dialConn in goroutine 7",
        "\t/usr/local/go/src/net/http/transport.go:1777 +0x16f1",
    ]
    assert run("go", lines + ["", "exit status 2"]) == [
        Merged("\n".join(lines), 0, "t0", 12, False),
        Merged("", 1200, "t12", 1, False),
        Merged("exit status 2", 1300, "t13", 1, False),
    ]


@pytest.mark.parametrize("block,nxt", [(JAVA, JAVA_NEXT), (PYTHON, PYTHON_NEXT), (GO, GO_NEXT)],
                         ids=["java", "python", "go"])
def test_auto_preset_handles_each(block, nxt):
    """auto: each language's block merges as under its own preset."""
    assert run("auto", block + [nxt]) == [
        Merged("\n".join(block), 0, "t0", len(block), False),
        Merged(nxt, len(block) * 100, f"t{len(block)}", 1, False),
    ]


def test_auto_preset_mixed_stream():
    """auto: Java, Python and Go traces in one stream each become one record."""
    go = ["2024/05/01 12:00:02 worker: shutting down"] + GO  # a panic attaches to the line before it
    lines = JAVA + PYTHON + go + [GO_NEXT]
    assert run("auto", lines) == [
        Merged("\n".join(JAVA), 0, "t0", 8, False),
        Merged("\n".join(PYTHON), 800, "t8", 7, False),
        Merged("\n".join(go), 1500, "t15", 10, False),
        Merged(GO_NEXT, 2500, "t25", 1, False),
    ]



@pytest.mark.parametrize("preset", ["java", "python", "go", "auto"])
def test_ordinary_lines_never_merged(preset):
    """Two ordinary lines (and a blank line between records) stay separate records."""
    lines = ["2024-05-01 12:00:00 INFO starting server", "2024-05-01 12:00:01 INFO listening on :8080",
             "", "WARN slow request"]
    assert run(preset, lines) == [
        Merged(lines[0], 0, "t0", 1, False),
        Merged(lines[1], 100, "t1", 1, False),
        Merged("", 200, "t2", 1, False),
        Merged(lines[3], 300, "t3", 1, False),
    ]


@pytest.mark.parametrize("preset", ["java", "auto"])
def test_nothing_attaches_to_held_blank_line(preset):
    """A continuation line after a held blank line does not join it."""
    frame = "\tat com.example.A.run(A.java:1)"
    assert run(preset, ["INFO ok", "", frame]) == [
        Merged("INFO ok", 0, "t0", 1, False),
        Merged("", 100, "t1", 1, False),
        Merged(frame, 200, "t2", 1, False),
    ]


def test_max_lines_bound():
    """max_lines=3 with 6 continuation lines keeps 3 lines and marks the record truncated."""
    frames = [f"\tat com.example.Worker.step{i}(Worker.java:{10 + i})" for i in range(6)]
    lines = ["ERROR worker crashed", "java.lang.IllegalStateException: boom"] + frames[1:]
    assert len(lines) == 7
    assert run("java", lines + ["INFO next"], max_lines=3) == [
        Merged("\n".join(lines[:3]), 0, "t0", 3, True),
        Merged("INFO next", 700, "t7", 1, False),
    ]


def test_max_lines_drops_until_next_record():
    """Once truncated, later continuation lines that would fit are still dropped."""
    lines = ["ERROR x", "\tat a.B.c(B.java:1)", "\tat a.B.d(B.java:2)", "\tat a.B.e(B.java:3)"]
    # max_bytes stops the 3rd line (long); the short 4th one would fit but must be dropped too
    long_frame = "\tat com.example.very.long.package.name.Clazz.method(Clazz.java:123456)"
    out = run("java", [lines[0], lines[1], long_frame, lines[3]], max_bytes=40)
    assert out == [Merged("ERROR x\n\tat a.B.c(B.java:1)", 0, "t0", 2, True)]


@pytest.mark.parametrize("bounds", [{"max_lines": 1}, {"max_bytes": 25}], ids=["max_lines", "max_bytes"])
def test_truncation_does_not_change_record_boundaries(bounds):
    """A bound only drops lines: a second exception dump still starts a new record after truncation."""
    lines = [
        "ERROR c.e.A - first",
        "java.lang.IllegalStateException: a",
        "\tat com.example.A.run(A.java:1)",
        "java.lang.RuntimeException: b",
        "\tat com.example.B.run(B.java:2)",
    ]
    assert run("java", lines, **bounds) == [
        Merged("ERROR c.e.A - first", 0, "t0", 1, True),
        # the second dump is bounded too: its first line is kept, its frame is cut
        Merged("java.lang.RuntimeException: b", 300, "t3", 1, True),
    ]


def test_max_bytes_bound_counts_utf8_bytes():
    """max_bytes counts UTF-8 bytes including the joining newline; a line that would exceed it is cut."""
    first = "ERROR ошибка записи"                                   # 19 chars, 31 bytes
    exc = "java.lang.IllegalStateException: диск переполнен"        # 48 chars, 62 bytes
    frame = "\tat ru.app.Хранилище.write(Хранилище.java:42)"      # 45 chars, 63 bytes
    lines = [first, exc, frame]
    # 31 + 1 + 62 = 94 bytes fit exactly; the frame would take it to 158
    assert run("java", lines, max_bytes=94) == [Merged(f"{first}\n{exc}", 0, "t0", 2, True)]
    # one byte less: the exception line no longer fits (as characters it would: 19 + 1 + 48 = 68)
    assert run("java", lines, max_bytes=93) == [Merged(first, 0, "t0", 1, True)]
    # 158 bytes: everything fits, not truncated
    assert run("java", lines, max_bytes=158) == [Merged("\n".join(lines), 0, "t0", 3, False)]


def test_first_line_kept_whole_beyond_max_bytes():
    """The first line is always kept whole even when it alone exceeds max_bytes."""
    first = "ERROR " + "é" * 50
    assert run("java", [first, "java.lang.IllegalStateException: x", "INFO next"], max_bytes=10) == [
        Merged(first, 0, "t0", 1, True),
        Merged("INFO next", 200, "t2", 1, False),
    ]


def test_expired_measured_from_last_line():
    """expired(now) is false until timeout_secs after the LAST line of the held record, then true."""
    ml = Multiline("java", 1000, BIG, 5.0)
    assert ml.expired(1000.0) is False
    assert ml.push("ERROR x", 0, "a", 100.0) == []
    assert ml.push("java.lang.IllegalStateException: boom", 10, "b", 103.0) == []
    assert ml.push("\tat com.example.A.run(A.java:1)", 20, "c", 104.0) == []
    assert ml.expired(104.0) is False
    assert ml.expired(106.0) is False   # 6 s after the first line, 2 s after the last
    assert ml.expired(108.9) is False
    assert ml.expired(109.1) is True
    assert ml.expired(500.0) is True


def test_expired_counts_dropped_lines():
    """A continuation line dropped by a bound still postpones expiry."""
    ml = Multiline("java", 2, BIG, 5.0)
    ml.push("ERROR x", 0, "a", 100.0)
    ml.push("\tat a.B.c(B.java:1)", 10, "b", 101.0)
    ml.push("\tat a.B.d(B.java:2)", 20, "c", 104.0)   # dropped: max_lines=2
    assert ml.expired(108.0) is False
    assert ml.expired(109.5) is True
    assert ml.flush() == [Merged("ERROR x\n\tat a.B.c(B.java:1)", 0, "a", 2, True)]


def test_expired_false_after_flush():
    """Nothing held, nothing expires."""
    ml = Multiline("go", 1000, BIG, 1.0)
    ml.push("panic: boom", 0, "a", 0.0)
    assert ml.expired(10.0) is True
    ml.flush()
    assert ml.expired(10.0) is False


def test_flush_and_held_offset():
    """held_offset is the first line's offset while held; flush() returns the record and clears it."""
    ml = Multiline("java", 1000, BIG, 5.0)
    assert ml.held_offset is None
    assert ml.flush() == []
    assert ml.push("ERROR request failed", 4096, "2024-05-01T12:00:00Z", 1.0) == []
    assert ml.held_offset == 4096
    assert ml.push("java.lang.IllegalStateException: boom", 4200, "2024-05-01T12:00:00.1Z", 1.1) == []
    assert ml.push("\tat com.example.A.run(A.java:1)", 4260, "2024-05-01T12:00:00.2Z", 1.2) == []
    assert ml.held_offset == 4096
    assert ml.flush() == [Merged(
        "ERROR request failed\njava.lang.IllegalStateException: boom\n\tat com.example.A.run(A.java:1)",
        4096, "2024-05-01T12:00:00Z", 3, False,
    )]
    assert ml.held_offset is None
    assert ml.flush() == []


def test_flush_emits_held_blank_lines_separately():
    """flush() inside an open Python block returns the record, then held blank lines as their own records."""
    ml = Multiline("python", 1000, BIG, 5.0)
    out, _ = feed(ml, PYTHON + ["", "   "])
    assert out == []
    assert ml.flush() == [
        Merged("\n".join(PYTHON), 0, "t0", 7, False),
        Merged("", 700, "t7", 1, False),
        Merged("   ", 800, "t8", 1, False),  # as without multiline: the line as it was
    ]
    assert ml.held_offset is None


@pytest.mark.parametrize("preset", ["ruby", "", "Java", "AUTO", "java,python"])
def test_unknown_preset_raises(preset):
    """An unknown preset name raises ValueError."""
    with pytest.raises(ValueError, match="unknown multiline preset"):
        Multiline(preset, 100, BIG, 5.0)
