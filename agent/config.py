"""TOML → validated `Settings`, reporting every problem at once.

Each problem names its key path, the bad value and what was expected. Unknown keys get a "did you
mean" suggestion. `${VAR}` and `${VAR:-default}` in strings are replaced from the environment
before type checks (`$$` is a literal `$`); values of secret-looking keys never appear in messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

from agent.settings import Settings
from pipelines.errors import ConfigError

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_WORDS = ("password", "secret", "token", "sasl", "api_key", "apikey", "credential")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"cannot read {src}: {exc.strerror or exc}"], source=src) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], source=src) from exc
    return settings_from_dict(data, env=env, source=src)


def settings_from_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                       source: str = "config") -> Settings:
    problems: list[str] = []
    settings = _build(Settings, data, "", os.environ if env is None else env, problems)
    if not problems:
        problems.extend(_cross_checks(settings))
    if problems:
        raise ConfigError(problems, source=source)
    return settings


def is_secret(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in _SECRET_WORDS) or (k.endswith("key") and not k.endswith("_bytes"))


def _show(key: str, value: Any) -> str:
    if is_secret(key):
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, data: Mapping[str, Any], prefix: str, env: Mapping[str, str],
           problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{prefix.rstrip('.') or '(top level)'}: expected a table, got {type(data).__name__}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            problems.append(_unknown(path, key, list(fields)))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(typing.cast(type, hint), raw, f"{path}.", env, problems)
            continue
        value = _interpolate(raw, path, env, problems)
        if value is _BAD:
            continue
        if value is not raw and isinstance(value, str) and hint in (int, float, bool):
            value = _coerce(value, hint)  # "${LINGER_MS:-200}" may fill a number
        checked = _check(path, value, hint, fields[key].metadata, problems)
        if checked is not _BAD:
            values[key] = checked
    return cls(**values)


def _unknown(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{path}: unknown key; did you mean `{close[0]}`?"
    return f"{path}: unknown key; valid keys here: {', '.join(sorted(known))}"


class _Bad:
    pass


_BAD: Any = _Bad()


def _interpolate(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(value, list):
        out = [_interpolate(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in out) else out
    if not isinstance(value, str) or "$" not in value:
        return value
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    result = _VAR.sub(sub, value)
    for name in missing:
        problems.append(f"{path}: environment variable ${{{name}}} is not set (and has no default)")
    return _BAD if missing else result


def _coerce(value: str, hint: Any) -> Any:
    text = value.strip()
    if hint is bool:
        return {"true": True, "false": False}.get(text.lower(), value)
    try:
        return hint(text)
    except ValueError:
        return value


def _check(path: str, value: Any, hint: Any, meta: Mapping[str, Any], problems: list[str]) -> Any:
    shown = _show(path.rsplit(".", 1)[-1], value)
    expected = _type_name(hint)
    ok = _type_ok(value, hint)
    if not ok:
        problems.append(f"{path}: expected {expected}, got {shown} ({type(value).__name__})")
        return _BAD
    if hint is float:
        value = float(value)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        problems.append(f"{path}: {shown} is not one of {', '.join(map(repr, choices))}")
        return _BAD
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        problems.append(f"{path}: {shown} is below the minimum {lo}")
        return _BAD
    if hi is not None and value > hi:
        problems.append(f"{path}: {shown} is above the maximum {hi}")
        return _BAD
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint is str:
        return type(value) is str
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    return False


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint))


def _cross_checks(s: Settings) -> list[str]:
    out = []
    if not s.source.include:
        out.append("source.include: expected at least one glob pattern")
    if s.sink.retry_initial_ms > s.sink.retry_max_ms:
        out.append(f"sink.retry_initial_ms: {s.sink.retry_initial_ms} exceeds sink.retry_max_ms "
                   f"({s.sink.retry_max_ms})")
    if s.batch.max_bytes > s.batch.memory_limit_bytes:
        out.append(f"batch.max_bytes: {s.batch.max_bytes} exceeds batch.memory_limit_bytes "
                   f"({s.batch.memory_limit_bytes})")
    if s.sink.kafka.idempotence and s.sink.kafka.acks != "all":
        out.append(f"sink.kafka.idempotence: needs sink.kafka.acks = 'all' (got {s.sink.kafka.acks!r})")
    if s.source.read_chunk_bytes > s.source.read_budget_bytes:
        out.append(f"source.read_chunk_bytes: {s.source.read_chunk_bytes} exceeds "
                   f"source.read_budget_bytes ({s.source.read_budget_bytes})")
    return out


def describe_settings(cls: type = Settings, prefix: str = "") -> str:
    """Every option with its default and help text, one per line."""
    lines = []
    inst = cls()
    for f in dataclasses.fields(cls):
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(describe_settings(type(value), f"{prefix}{f.name}."))
        else:
            lines.append(f"{prefix}{f.name} = {value!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)
