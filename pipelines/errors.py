"""Errors that carry their behaviour.

    TailshipError
    ├── ConfigError                 invalid configuration (exit code 2); carries every problem found
    └── SinkError                   a sink could not take a batch
        ├── RetriableSinkError      retriable = True: the sender backs off and tries again
        └── FatalSinkError          retriable = False: retrying alone cannot help (credentials
                                    or rights refused, unwritable directory): `--once` stops with
                                    exit code 3; the daemon tries again with a long backoff, since
                                    an operator can fix it meanwhile (pipelines.delivery)

Record-level rejections that retrying cannot fix are not exceptions: a sink writes them to the
dead-letter file with the reason and acknowledges them, so the batch still completes.
"""

from __future__ import annotations


class TailshipError(Exception):
    """Base of every error tailship raises on purpose."""


class ConfigError(TailshipError):
    """A configuration could not be accepted; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n" + "\n".join(self.problems))


class SinkError(TailshipError):
    retriable: bool = False

    def __init__(self, sink: str, cause: str) -> None:
        self.sink = sink
        self.cause = cause
        super().__init__(f"sink {sink}: {cause}")


class RetriableSinkError(SinkError):
    retriable = True


class FatalSinkError(SinkError):
    retriable = False
