"""`tailship deadletter list|replay`: what the dead-letter stores hold, and re-sending it.

The stores are those of the data directory (`--config`'s `data_dir`, or `--data-dir`): its own
`deadletter/` and each `worker-<i>/deadletter/`. Replay builds each sink from the configuration
exactly as `tailship run --config` does and re-sends through it (see `pipelines.replay`).

Replay may run beside a running agent (`kubectl exec` into its pod): it holds each store's lock
exclusively for its whole run, and the agent's sinks take it shared for each dead-letter write, so
no file is written by both. While a replay runs, the agent's batches that have dead letters are
retried (they wait, the rest flows) and go through once it ends. Two replays of one store do not
run together: the second refuses (exit 4).

Exit codes of `replay`: 0 every selected record was accepted and removed (or there was none);
2 configuration or usage error; 3 a sink could not start or kept failing past `--timeout` (what
was accepted before is removed; the rest stays); 4 a store is being replayed by another replay
(nothing done); 5 done, but some records were dead-lettered again (they are back
in the store, with their new reason); 130 interrupted (Ctrl-C: what was accepted before is
removed, the rest stays). `list` exits 0, or 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.runtime import EXIT_OK, EXIT_RUNTIME
from agent.settings import Settings
from pipelines import deadletter, layout
from pipelines.deadletter import DeadLetter
from pipelines.errors import ConfigError, SinkError
from pipelines.replay import ReplayOptions, ReplayReport, ReplayResult, replay, summarize
from pipelines.sinks.registry import build_sink

EXIT_IN_USE = 4
LOCK_WAIT_SECS = 5.0  # an agent's write holds the lock a moment; a replay holds it long
EXIT_DEADLETTERED_AGAIN = 5
EXIT_INTERRUPTED = 130
_AGO = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("deadletter", help="list or replay dead-lettered records")
    cmds = p.add_subparsers(required=True, metavar="ACTION")
    ls = cmds.add_parser("list", help="count dead letters by sink, reason and destination")
    _common(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per store and sink")
    ls.set_defaults(func=cmd_list)
    rp = cmds.add_parser("replay", help="re-send dead letters through their sink; remove what it accepts")
    _common(rp)
    rp.add_argument("--timeout", type=float, default=60.0, metavar="SECS",
                    help="stop when a batch is still refused (retriable) after this long (default 60)")
    rp.set_defaults(func=cmd_replay)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="the agent's TOML configuration (its data_dir and sinks)")
    p.add_argument("--data-dir", help="the data directory (instead of the configuration's data_dir)")
    p.add_argument("--sink", help="only this sink's dead letters")
    p.add_argument("--since", type=parse_since, metavar="TIME",
                   help="only dead letters written at or after TIME: RFC 3339 (2026-12-04T10:00:00Z), "
                        "a date, or an age such as 30m, 2h, 1d")


def parse_since(text: str) -> datetime:
    m = _AGO.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected RFC 3339 time, a date or an age like 2h, "
                                         f"got {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _settings(args: argparse.Namespace, need_config: bool) -> Settings:
    if args.config is None and (need_config or args.data_dir is None):
        what = "--config (to build the sinks)" if need_config else "--config or --data-dir"
        raise ConfigError([f"expected {what}"], source="command line")
    settings = load_config(args.config) if args.config else Settings()
    if args.data_dir:
        settings.data_dir = args.data_dir
    return settings


def stores(data_dir: str) -> list[Path]:
    """The dead-letter directories of a data directory: its own, then each worker's."""
    dirs = [layout.dead_letter_dir(data_dir)] + [layout.dead_letter_dir(p)
                                                  for _, p in layout.worker_dirs(data_dir)]
    return [d for d in dirs if d.is_dir()]


def _sinks(store: Path, only: str | None) -> list[str]:
    return [s for s in deadletter.store_sinks(store) if only is None or s == only]


def cmd_list(args: argparse.Namespace) -> int:
    settings = _settings(args, need_config=False)
    found = 0
    for store in stores(settings.data_dir):
        for sink in _sinks(store, args.sink):
            s = summarize(deadletter.segments(store / f"{sink}{deadletter.SUFFIX}"), args.since)
            found += s["records"]
            if args.json:
                print(json.dumps({"store": str(store), "sink": sink, **s}))
                continue
            print(f"{store} sink {sink}: {s['records']} record(s) ({s['bytes']} bytes on disk)"
                  + (f", oldest {s['oldest']}, newest {s['newest']}" if s["records"] else "")
                  + (f", {s['torn']} torn line(s) skipped" if s["torn"] else ""))
            for reason, n in sorted(s["reasons"].items()):
                print(f"  reason {reason}: {n}")
            for dest, n in sorted(s["destinations"].items()):
                print(f"  destination {dest}: {n}")
    if not found and not args.json:
        print(f"no dead letters under {settings.data_dir}")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args, need_config=True)
    tables = settings.sink_tables()
    if args.sink is not None and args.sink not in tables:
        raise ConfigError([f"--sink {args.sink}: no such sink in {args.config} (sinks: "
                           f"{', '.join(tables)})"], source="command line")
    work = [(store, sink) for store in stores(settings.data_dir) for sink in _sinks(store, args.sink)]
    unknown = sorted({f"{sink} ({store})" for store, sink in work if sink not in tables})
    if unknown:
        raise ConfigError([f"dead letters of sinks not in {args.config}: {', '.join(unknown)}; "
                           "replay them with a configuration that has them, or pick one with --sink"],
                          source="command line")
    locks = _lock({store for store, _ in work})
    if locks is None:
        return EXIT_IN_USE
    total = ReplayResult()
    try:
        for store, sink in work:
            result = asyncio.run(_replay_one(settings, store, sink, args, len(work)))
            _print_result(store, sink, result)
            total.add(result)
            if result.error:
                break
    except KeyboardInterrupt:
        print("tailship deadletter replay: interrupted; what was accepted before is removed, the "
              "segment being replayed stays whole: the next replay sends it again (duplicates)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _unlock(locks)
    print(f"tailship deadletter replay: {total.selected} selected, {total.accepted} accepted and "
          f"removed, {sum(total.again.values())} dead-lettered again, {total.kept} kept "
          f"(older than --since)" + (f"; stopped: {total.error}" if total.error else ""))
    if total.error:
        return EXIT_RUNTIME
    return EXIT_DEADLETTERED_AGAIN if total.again else EXIT_OK


def _lock(dirs: set[Path]) -> list[tuple[Path, int]] | None:
    """Every store's lock, exclusively; None (having released them) if one stays held: by
    another replay (an agent's write holds it only for the write, waited for here)."""
    held: list[tuple[Path, int]] = []
    for d in sorted(dirs):
        deadline = time.monotonic() + LOCK_WAIT_SECS
        while (fd := deadletter.hold(d, exclusive=True)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if fd is None:
            _unlock(held)
            print(f"tailship deadletter replay: the dead-letter store {d} is being replayed by "
                  "another `tailship deadletter replay`; nothing was replayed", file=sys.stderr)
            return None
        held.append((d, fd))
    return held


def _unlock(held: list[tuple[Path, int]]) -> None:
    for d, fd in held:
        deadletter.release(d, fd)


async def _replay_one(settings: Settings, store: Path, sink_name: str, args: argparse.Namespace,
                      nstores: int) -> ReplayResult:
    table = settings.sink_tables()[sink_name]
    report = ReplayReport()
    state_dir = str(store.parent)
    sink = build_sink(table, state_dir, None, sink_name, deadletter=settings.deadletter.share(nstores),
                      report=report)
    dead = getattr(sink, "dead", None)
    if not isinstance(dead, DeadLetter):  # a sink that never dead-letters (file, stdout, null)
        dead = DeadLetter(layout.dead_letter_file(state_dir, sink_name), sink_name,
                          settings.deadletter.share(nstores), report)
    opts = ReplayOptions(since=args.since, max_records=settings.batch.max_records,
                         max_bytes=settings.batch.max_bytes,
                         retry_initial_secs=table.retry_initial_ms / 1000,
                         retry_max_secs=table.retry_max_ms / 1000, timeout_secs=args.timeout)
    try:
        await sink.start()
    except SinkError as exc:
        return ReplayResult(error=str(exc))
    try:
        return await replay(sink, dead, report, opts)
    finally:
        await sink.close(10.0)


def _print_result(store: Path, sink: str, r: ReplayResult) -> None:
    again = ", ".join(f"{reason}: {n}" for reason, n in sorted(r.again.items()))
    print(f"{store} sink {sink}: {r.selected} selected, {r.accepted} accepted and removed, "
          f"{sum(r.again.values())} dead-lettered again" + (f" ({again}; back in the store)" if again else "")
          + f", {r.kept} kept (older than --since), {r.torn} torn line(s) dropped")
    if r.error:
        print(f"{store} sink {sink}: stopped: {r.error}; the {r.unsettled} record(s) sent from the "
              "segment being replayed stay in the store: the next replay sends them again "
              "(duplicates)", file=sys.stderr)

