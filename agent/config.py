"""TOML → validated `Settings`, every problem reported at once.

The dataclasses of `agent.settings` are the schema: their fields and type hints give the keys and
types, field metadata gives `choices`, `min`, `max` and `help`. Each problem is one line,
`<key path>: expected <what>, got <value>`; an unknown key gets a "did you mean" suggestion.

`${VAR}` and `${VAR:-default}` in strings (also inside arrays) are replaced from the environment
before the type checks, so a number may come from a variable; `$$` is a literal `$`. Messages
never show the value of a secret-looking key (`is_secret`) nor a value that came from the
environment: variables often carry credentials.

(Just over 400 lines: one validation pass, the walker and the cross-field checks that report
through it. Each component's own checks live beside it: `SinkSettings.check`, `routes.check`,
`LogMetricsSettings.check`, `DeadLetterSettings.check`, the metric sources' `check`.)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

from agent import logs
from agent.settings import Settings
from pipelines import layout, routes
from pipelines.errors import ConfigError

_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}|\$\{")
_SECRET_WORDS = ("password", "secret", "token", "sasl", "credential", "api_key")
# keys whose values are secrets proper (not user names or mechanisms): masked in logs
_MASKED = re.compile(r"password|secret|token|api_key|credential")
_MAX_SHOWN = 60
_TYPE_NAMES: dict[Any, tuple[str, str]] = {  # (one, many)
    str: ("a string", "strings"), int: ("an integer", "integers"),
    float: ("a number", "numbers"), bool: ("true or false", "booleans"),
}
# (smaller, larger): the first may not exceed the second.
_AT_MOST = (("batch.max_bytes", "batch.memory_limit_bytes"),
            ("source.read_chunk_bytes", "source.read_budget_bytes"))


class _Bad:
    """Marks a value that was rejected (its problem is already recorded)."""


_BAD: Any = _Bad()


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Read a TOML file and validate it; `ConfigError` lists every problem found."""
    src = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"cannot read {src}: {exc.strerror or exc}"], source=src) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{src}: not UTF-8 text (byte {exc.start})"], source=src) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(str(exc))], source=src) from exc
    return settings_from_dict(data, env=env, source=src)


def settings_from_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                       source: str = "config", *, interpolate: bool = True) -> Settings:
    """Validate an already-parsed config; `interpolate=False` takes strings literally."""
    walk = _Walk(env=(os.environ if env is None else env) if interpolate else None)
    if isinstance(data, Mapping) and "sink" in data and "sinks" in data:
        walk.fail("sinks", "expected either one [sink] table or named [sinks.<name>] tables, got both")
    settings = walk.table(Settings, data, "")
    if settings is not _BAD:
        _cross_checks(settings, walk)
    if walk.problems:
        raise ConfigError(walk.problems, source=source)
    return typing.cast(Settings, settings)


def is_secret(path: str) -> bool:
    """Whether values under this key (or dotted key path) must never be shown."""
    for part in re.split(r"[.\[\]]", path.lower()):
        if any(word in part for word in _SECRET_WORDS):
            return True
        if "key" in part and not part.endswith("_bytes"):
            return True
    return False


def describe_settings(cls: type = Settings, prefix: str = "") -> str:
    """Every option as `path = default  # help (rules)`, one per line."""
    lines = []
    for name, (f, hint) in _schema(cls).items():
        if typing.get_origin(hint) is dict:
            continue  # named tables (`[sinks.<name>]`) have the options of their kind, listed there
        if dataclasses.is_dataclass(hint):
            lines.append(describe_settings(typing.cast(type, hint), f"{prefix}{name}."))
            continue
        rules = _rules_text(f.metadata)
        default = json.dumps(_default(f)) if _has_default(f) else "(required)"
        lines.append(f"{prefix}{name} = {default}  # {f.metadata.get('help', '')}{rules}")
    return "\n".join(lines)


@dataclasses.dataclass
class _Walk:
    """One validation pass: the problems found and what the cross-field checks must know."""

    env: Mapping[str, str] | None  # None: no interpolation
    problems: list[str] = dataclasses.field(default_factory=list)
    bad: set[str] = dataclasses.field(default_factory=set)  # paths whose value was rejected
    from_env: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> template

    def fail(self, path: str, message: str) -> Any:
        self.problems.append(f"{path}: {message}")
        self.bad.add(path)
        return _BAD

    def tainted_below(self, path: str) -> bool:
        """Whether `path` or anything under it was rejected."""
        return any(b == path or b.startswith((path + ".", path + "[")) for b in self.bad)

    def tainted(self, *paths: str) -> bool:
        """Whether any of these paths, or a table holding one, was rejected."""
        return any(p == b or p.startswith((b + ".", b + "[")) for p in paths for b in self.bad)

    def show(self, path: str, value: Any, kind: bool = False) -> str:
        if is_secret(path):
            return "<redacted>" + (f" ({_kind(value)})" if kind else "")
        if path in self.from_env:
            return f"the value of {_truncate(repr(self.from_env[path]))} (not shown)"
        if isinstance(value, Mapping):
            return "a table"
        return _truncate(repr(value)) + (f" ({_kind(value)})" if kind else "")

    def table(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            got = self.show(path, data, kind=True)
            return self.fail(path or "(top level)", f"expected a table, got {got}")
        schema = _schema(cls)
        values = {}
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in schema:
                self.problems.append(f"{sub}: {_unknown(str(key), list(schema))}")
                continue
            value = self.field(schema[key], raw, sub)
            if value is not _BAD:
                values[key] = value
        for name, (f, _) in schema.items():
            if name not in data and not _has_default(f):
                self.fail(f"{path}.{name}" if path else name, "required key is missing")
        return _construct(cls, values)

    def field(self, entry: tuple[dataclasses.Field[Any], Any], raw: Any, path: str) -> Any:
        f, hint = entry
        if dataclasses.is_dataclass(hint):
            return self.table(typing.cast(type, hint), raw, path)
        return self.value(hint, raw, path, f.metadata)

    def value(self, hint: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if typing.get_origin(hint) is list:
            return self.array(hint, raw, path, meta)
        if typing.get_origin(hint) is dict:
            return self.tables(hint, raw, path)
        value = self.expand(raw, path, hint)
        if value is _BAD:
            return _BAD
        type_ok = _type_ok(value, hint)
        if not type_ok or not _rules_ok(value, meta):
            got = self.show(path, value, kind=not type_ok)
            return self.fail(path, f"expected {_expected(hint, meta)}, got {got}")
        key = path.rsplit(".", 1)[-1]
        if isinstance(value, str) and value and _MASKED.search(key) and not key.endswith("_file"):
            logs.add_secret(value)  # masked in every log line from now on
        return float(value) if hint is float else value

    def array(self, hint: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if not isinstance(raw, list):
            return self.fail(path, f"expected {_expected(hint, meta)}, got {self.show(path, raw, True)}")
        (item_hint,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item_hint):  # an array of tables: [[a.b]]
            items = [self.table(typing.cast(type, item_hint), v, f"{path}[{i}]") for i, v in enumerate(raw)]
        else:
            items = [self.value(item_hint, v, f"{path}[{i}]", meta) for i, v in enumerate(raw)]
        if any(v is _BAD for v in items):
            self.bad.add(path)
            return _BAD
        return items

    def tables(self, hint: Any, raw: Any, path: str) -> Any:
        """Named tables of one kind: `[sinks.<name>]`."""
        if not isinstance(raw, Mapping):
            return self.fail(path, f"expected a table of named tables, got {self.show(path, raw, True)}")
        _, item = typing.get_args(hint)
        out = {}
        for name, sub in raw.items():
            if not _NAME.fullmatch(str(name)) or str(name).startswith(layout.WORKER_PREFIX):
                self.fail(f"{path}.{name}", f"expected a name of letters, digits, '_' and '-', not "
                                            f"starting with {layout.WORKER_PREFIX!r}, got {name!r}")
                continue
            out[name] = self.table(typing.cast(type, item), sub, f"{path}.{name}")
        if any(v is _BAD for v in out.values()) or len(out) != len(raw):
            self.bad.add(path)
            return _BAD
        return out

    def expand(self, raw: Any, path: str, hint: Any) -> Any:
        """Interpolate a string; a whole number or boolean may come from a variable."""
        if self.env is None or not isinstance(raw, str) or "$" not in raw:
            return raw
        value = self.interpolate(raw, path, self.env)
        if value is not _BAD and path in self.from_env and hint in (int, float, bool):
            return _coerce(value, hint)
        return value

    def interpolate(self, text: str, path: str, env: Mapping[str, str]) -> Any:
        missing: list[str] = []
        malformed = used_env = False

        def sub(m: re.Match[str]) -> str:
            nonlocal malformed, used_env
            name, default = m.group(1), m.group(2)
            if m.group(0) == "$$":
                return "$"
            if name is None:
                malformed = True
                return m.group(0)
            used_env = True
            value = env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                missing.append(name)
                return ""
            return value

        result = _REF.sub(sub, text)
        if used_env:
            self.from_env[path] = text
        for name in dict.fromkeys(missing):
            self.fail(path, f"environment variable {name} is not set and ${{{name}}} has no default")
        if malformed:
            self.fail(path, "malformed ${...}: write ${NAME} or ${NAME:-default} (not nested), "
                            "and $$ for a literal $")
        return _BAD if missing or malformed else result


@functools.cache
def _schema(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _construct(cls: type, values: dict[str, Any]) -> Any:
    """The dataclass, or `_BAD` when a required field is missing (already reported)."""
    if any(n not in values and not _has_default(f) for n, (f, _) in _schema(cls).items()):
        return _BAD
    return cls(**values)


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    return f"unknown key; valid keys here: {', '.join(sorted(known))}"


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is float:
        return type(value) is int or (type(value) is float and math.isfinite(value))
    if hint in (str, int, bool):
        return type(value) is hint  # `type is`, not isinstance: True is no integer here
    raise TypeError(f"settings type {hint!r} is not supported by agent.config")


def _rules_ok(value: Any, meta: Mapping[str, Any]) -> bool:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if choices is not None and value not in choices:
        return False
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _expected(hint: Any, meta: Mapping[str, Any]) -> str:
    if typing.get_origin(hint) is list:
        return f"an array of {_TYPE_NAMES[typing.get_args(hint)[0]][1]}"
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if choices is not None:
        return "one of " + ", ".join(map(repr, choices))
    name = _TYPE_NAMES[hint][0]
    if lo is not None and hi is not None:
        return f"{name} from {lo} to {hi}"
    if lo is not None:
        return f"{name} >= {lo}"
    return f"{name} <= {hi}" if hi is not None else name


def _rules_text(meta: Mapping[str, Any]) -> str:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if choices is not None:
        return f" (one of: {', '.join(map(str, choices))})"
    if lo is not None and hi is not None:
        return f" ({lo}..{hi})"
    if lo is not None:
        return f" (>= {lo})"
    return f" (<= {hi})" if hi is not None else ""


def _coerce(text: str, hint: Any) -> Any:
    """"${PORT}" → 9092 for a number option; the text itself when it is no such literal."""
    stripped = text.strip()
    if hint is bool:
        return {"true": True, "false": False}.get(stripped, text)
    try:
        return hint(stripped)
    except ValueError:
        return text


def _kind(value: Any) -> str:
    for t, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                    (list, "array"), (Mapping, "table")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def _truncate(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def _syntax_problem(message: str) -> str:
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m is None:
        return f"TOML syntax error: {message}"
    return f"TOML syntax error at line {m[1]}, column {m[2]}: {message[:m.start()]}"


def _get(obj: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), obj)


def _cross_checks(s: Settings, walk: _Walk) -> None:
    """Options that are valid alone but contradict each other (skipped where one was rejected)."""
    tables = {"sink": s.sink} if not s.sinks else {f"sinks.{n}": t for n, t in s.sinks.items()}
    # decided before any cross-check adds its own problem to `walk.bad`
    valid = [(path, t) for path, t in tables.items() if not walk.tainted_below(path)]
    routes_valid = (not walk.tainted_below("routing") and not walk.tainted_below("sinks")
                    and not walk.tainted("sink.type"))  # the one [sink] is named by its type
    for path, table in valid:
        for at, problem in table.check(path):
            walk.fail(at, problem)
        limit = s.batch.memory_limit_bytes
        if table.memory_limit_bytes > limit and not walk.tainted("batch.memory_limit_bytes"):
            # part of the shared budget: above it, it would never make the files of a stalled
            # sink wait before every other file does
            walk.fail(f"{path}.memory_limit_bytes", f"expected at most batch.memory_limit_bytes "
                      f"({limit}), got {table.memory_limit_bytes}")
    for small, large in _AT_MOST:
        a, b = _get(s, small), _get(s, large)
        if not walk.tainted(small, large) and a > b:
            walk.fail(small, f"expected at most {large} ({walk.show(large, b)}), got {walk.show(small, a)}")
    if not walk.tainted("source.include"):
        _check_include(s.source.include, walk)
    for path, table in valid:
        for at, problem in table.check_types(path):
            walk.fail(at, problem)
    _check_routes(s, walk, routes_valid)
    if not walk.tainted_below("deadletter"):
        for at, problem in s.deadletter.check("deadletter"):
            walk.fail(at, problem)
    for key in ("log_metrics", "prometheus_scrape", "host_metrics"):
        if not walk.tainted(key):
            for at, problem in getattr(s, key).check(key):
                walk.fail(at, problem)
    if s.metrics.listen and not walk.tainted("metrics.listen"):
        from agent.server import parse_listen

        try:
            parse_listen(s.metrics.listen)
        except ValueError as exc:
            walk.fail("metrics.listen", str(exc))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # a sink's name: metrics label, file names


def _check_routes(s: Settings, walk: _Walk, valid: bool) -> None:
    """The routes against the sink names, and no two file sinks writing the same directory."""
    if valid:
        for at, problem in routes.check(s.routing, list(s.sink_tables())):
            walk.fail(at, problem)
    dirs: dict[str, str] = {}
    for name, t in s.sink_tables().items():
        key = f"sinks.{name}" if s.sinks else "sink"
        if t.type == "file" and not walk.tainted(f"{key}.type", f"{key}.path"):
            d = os.path.abspath(t.path or "<data_dir>/out")
            if d in dirs:
                walk.fail(f"sinks.{name}.path", f"expected a directory no other sink writes, got "
                          f"{t.path or '(default)'!r} (also sinks.{dirs[d]})")
            dirs.setdefault(d, name)


def _check_include(patterns: list[str], walk: _Walk) -> None:
    if not patterns:
        walk.fail("source.include", "expected at least one glob pattern, got []")
    for i, pattern in enumerate(patterns):
        if not pattern.strip():
            path = f"source.include[{i}]"
            walk.fail(path, f"expected a non-empty glob pattern, got {walk.show(path, pattern)}")
