"""Command line: `tailship run`, `tailship tail`, `tailship validate`, `tailship deadletter
list|replay` (agent/deadletter_cli.py), `--version`.

Exit codes: 0 done; 2 configuration or usage error; 3 runtime failure (data directory unusable,
sink refused for good); 130 a second signal forced the exit. `deadletter replay` adds 4 (the store
is in use by a running agent) and 5 (some records were dead-lettered again).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from agent import __version__, deadletter_cli, logs
from agent.config import load_config, settings_from_dict
from agent.runtime import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_RUNTIME,
    Agent,
    Summary,
    install_signal_handlers,
    run_loop,
    uvloop_safe,
)
from agent.settings import MetricsSettings, Settings
from pipelines.errors import ConfigError, TailshipError
from pipelines.sinks.registry import parse_sink_url

log = logging.getLogger("tailship")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tailship", description="Trace-aware container log shipper.")
    p.add_argument("--version", action="version", version=f"tailship {__version__}")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent from a configuration file")
    run.add_argument("--config", "-c", required=True, help="TOML configuration file")
    run.add_argument("--once", action="store_true",
                     help="read the files found at start to their end, ship, wait for acks, exit")
    run.add_argument("--metrics-listen", metavar="HOST:PORT",
                     help='serve /metrics, /healthz, /readyz here instead of metrics.listen ("" = off)')
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a configuration file and exit")
    val.add_argument("config", help="TOML configuration file")
    val.set_defaults(func=cmd_validate)

    tail = sub.add_parser("tail", help="tail files and ship them to a sink")
    tail.add_argument("paths", nargs="+", metavar="PATH_OR_GLOB",
                      help="files or glob patterns; a directory means every *.log under it")
    tail.add_argument("--to", required=True, action="append", metavar="SINK_URL",
                      help="stdout | null | file:DIR | kafka://HOST:PORT/TOPIC | "
                      "elasticsearch://HOST:PORT/INDEX; several --to: every record to each")
    tail.add_argument("--once", action="store_true",
                      help="read to the end of the files, ship, wait for acknowledgements, exit")
    tail.add_argument("--data-dir", help="checkpoints directory (default: a temporary one with "
                      "--once, else ~/.local/state/tailship/<hash of paths and sink>)")
    tail.add_argument("--format", default="auto", choices=("auto", "docker", "cri", "text"))
    tail.add_argument("--read-from", default="head", choices=("head", "tail"))
    tail.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    tail.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                      help="read only files really under these directories (default: each path's "
                      "fixed directory, and pods/ beside a containers/ one)")
    tail.add_argument("--multiline", default="none", choices=("none", "java", "python", "go", "auto"))
    tail.add_argument("--workers", type=int, default=0, metavar="N",
                      help="worker processes (default 0: one per CPU available; 1: no supervisor)")
    tail.add_argument("--no-progress", action="store_true", help="no live progress line")
    tail.add_argument("--metrics-listen", metavar="HOST:PORT", default="",
                      help="serve /metrics, /healthz, /readyz at HOST:PORT (default: off)")
    tail.add_argument("--kubeconfig", metavar="PATH", default="",
                      help="enrich kubelet log files with pod metadata (labels, owner, ...) from the "
                      "API server of this kubeconfig's current context")
    tail.add_argument("--node", metavar="NAME", default="",
                      help="with --kubeconfig: the node whose pods are watched (default $NODE_NAME; "
                      "none: every pod of the cluster)")
    tail.set_defaults(func=cmd_tail)

    deadletter_cli.add_parser(sub)
    return p


def cmd_validate(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: ok")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    if args.metrics_listen is not None:
        settings.metrics = _listen(settings, args.metrics_listen)
    return _run_agent(settings, once=args.once, progress=False, log_level=args.log_level)


def _listen(settings: Settings, listen: str) -> MetricsSettings:
    from agent.server import parse_listen

    if listen:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ConfigError([f"--metrics-listen: {exc}"], source="command line") from exc
    return dataclasses.replace(settings.metrics, listen=listen)


def cmd_tail(args: argparse.Namespace) -> int:
    includes = [os.path.join(p, "**", "*.log") if os.path.isdir(p) else p for p in args.paths]
    sinks = _sink_tables(args.to)
    tmp = None
    data_dir = args.data_dir
    if data_dir is None and args.once:
        tmp = tempfile.TemporaryDirectory(prefix="tailship-")
        data_dir = tmp.name
    elif data_dir is None:
        digest = hashlib.sha256("\0".join([*includes, *args.to]).encode()).hexdigest()[:16]
        state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        data_dir = os.path.join(state, "tailship", digest)
    settings = settings_from_dict({
        "data_dir": data_dir,
        "source": {"include": includes, "exclude": args.exclude, "format": args.format,
                   "read_from": args.read_from,
                   "allowed_roots": [os.path.abspath(r) for r in args.allow_root]},
        "multiline": {"preset": args.multiline},
        "metrics": {"listen": args.metrics_listen},
        "workers": args.workers,
        **({"kubernetes": {"enabled": True, "kubeconfig": args.kubeconfig, "node": args.node}}
           if args.kubeconfig else {}),
        **({"sink": next(iter(sinks.values()))} if len(sinks) == 1 else {"sinks": sinks}),
    }, source="command line", interpolate=False)
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        return _run_agent(settings, once=args.once, progress=progress, log_level=args.log_level)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _sink_tables(urls: list[str]) -> dict[str, dict[str, Any]]:
    """`--to` URLs → sink tables named by type (`file`, `file-2`, ...)."""
    tables: dict[str, dict[str, Any]] = {}
    problems = []
    for url in urls:
        try:
            table = parse_sink_url(url)
        except ValueError as exc:
            problems.append(f"--to {url}: {exc}")
            continue
        name, n = table["type"], 1
        while name in tables:
            n += 1
            name = f"{table['type']}-{n}"
        tables[name] = table
    if problems:
        raise ConfigError(problems, source="command line")
    return tables


def _run_agent(settings: Settings, *, once: bool, progress: bool, log_level: str = "info") -> int:
    from agent.supervisor.cpus import resolve_workers

    workers = resolve_workers(settings)
    if workers > 1:
        return _run_workers(settings, workers, once=once, progress=progress, log_level=log_level)
    agent = Agent(settings, once=once)

    async def go() -> int:
        install_signal_handlers(agent.request_stop)
        ticker = asyncio.create_task(_progress(agent.summary)) if progress else None
        try:
            return await agent.run()
        finally:
            if ticker is not None:
                ticker.cancel()

    try:
        code = run_loop(go, uvloop_safe(settings, (0, 1)))
    except TailshipError as exc:
        log.error("%s", exc)
        code = EXIT_RUNTIME
    _print_summary(agent.summary(), progress)
    return code


def _run_workers(settings: Settings, workers: int, *, once: bool, progress: bool, log_level: str) -> int:
    from agent.supervisor.supervisor import run_supervisor

    try:
        code, summary = run_supervisor(settings, workers, once=once, log_level=log_level,
                                       progress=_progress if progress else None)
    except TailshipError as exc:
        log.error("%s", exc)
        return EXIT_RUNTIME
    _print_summary(summary, progress)
    return code


async def _progress(summary: Callable[[], Summary]) -> None:
    prev = summary()
    while True:
        await asyncio.sleep(1.0)
        cur = summary()
        dt = max(cur.elapsed_secs - prev.elapsed_secs, 1e-9)
        errors = sum(v for k, v in cur.events.items() if k in _ERROR_EVENTS)
        sys.stderr.write(
            f"\r{(cur.lines_read - prev.lines_read) / dt:>10,.0f} lines/s "
            f"{(cur.bytes_read - prev.bytes_read) / dt / 1e6:>7.1f} MB/s  "
            f"sent {cur.records_sent:,}  files {cur.files}  errors {errors}   "
        )
        sys.stderr.flush()
        prev = cur


_ERROR_EVENTS = frozenset(("malformed", "invalid_utf8", "truncated", "line_too_long", "sink_retry",
                           "permission_denied", "tailer_failed", "checkpoint_corrupt", "deadlettered",
                           "deadletter_dropped"))


def _print_summary(s: Summary, progress: bool) -> None:
    rate = s.lines_read / s.cpu_secs if s.cpu_secs > 0 else 0.0
    lines = [
        f"tailship: {s.files} file(s), {s.lines_read:,} lines ({s.bytes_read / 1e6:.1f} MB) read, "
        f"{s.records_sent:,} records in {s.batches_sent:,} batches acknowledged",
        f"tailship: {s.elapsed_secs:.2f}s elapsed, {s.cpu_secs:.2f} CPU-s, "
        f"{rate:,.0f} lines per CPU-second",
    ]
    if s.unacked_records:
        lines.append(f"tailship: {s.unacked_records:,} records not acknowledged (read again next start)")
    if s.events:
        lines.append("tailship: events: " + ", ".join(f"{k}={v}" for k, v in sorted(s.events.items())))
    sys.stderr.write(("\n" if progress else "") + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
