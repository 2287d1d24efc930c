"""Configuration: the shipped default, every problem reported with its key path, env interpolation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.config import describe_settings, is_secret, load_config, settings_from_dict
from agent.settings import Settings
from pipelines.errors import ConfigError

DEFAULT = Path(__file__).resolve().parent.parent / "config" / "agent.toml"


def problems(data: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        settings_from_dict(data, env=env or {})
    return e.value.problems


def test_default_config_equals_built_in_defaults():
    """config/agent.toml documents exactly the built-in defaults (except the interpolated paths)."""
    s = load_config(DEFAULT, env={})
    d = Settings()
    assert s.data_dir == "/var/lib/tailship"
    assert s.source.include == ["/var/log/containers/*.log"]
    s.data_dir = d.data_dir
    assert s == d


def test_default_config_follows_env():
    """TAILSHIP_LOG_ROOT and TAILSHIP_DATA_DIR point the default config elsewhere."""
    s = load_config(DEFAULT, env={"TAILSHIP_LOG_ROOT": "/srv/logs", "TAILSHIP_DATA_DIR": "/tmp/d"})
    assert s.source.include == ["/srv/logs/containers/*.log"] and s.data_dir == "/tmp/d"


def test_every_option_documented_in_default_config():
    """Every settings field appears in config/agent.toml."""
    text = DEFAULT.read_text()
    for line in describe_settings().splitlines():
        key = line.split(" = ")[0].rsplit(".", 1)[-1]
        assert f"\n{key} = " in text, key


def test_five_mistakes_five_messages():
    """Five different mistakes give exactly five problems, each naming its key path."""
    got = problems({"data_dir": 3, "shutdown_timeout_secs": -1,
                    "source": {"read_from": "middle", "includ": ["x"]},
                    "batch": {"linger_ms": "soon"}})
    assert len(got) == 5
    assert [p.split(":")[0] for p in got] == ["data_dir", "shutdown_timeout_secs", "source.read_from",
                                              "source.includ", "batch.linger_ms"]
    assert got[0] == "data_dir: expected a string, got 3 (int)"
    assert got[1] == "shutdown_timeout_secs: -1 is below the minimum 0"
    assert got[2] == "source.read_from: 'middle' is not one of 'head', 'tail'"
    assert got[3] == "source.includ: unknown key; did you mean `include`?"


def test_unknown_key_without_close_match_lists_valid_keys():
    """An unknown key with no near match lists the keys of its table."""
    [p] = problems({"parse": {"zzzz": 1}})
    assert p == "parse.zzzz: unknown key; valid keys here: json, target"


@pytest.mark.parametrize("data,expected", [
    ({"parse": {"json": 1}}, "parse.json: expected true or false, got 1 (int)"),
    ({"batch": {"max_records": 1.5}}, "batch.max_records: expected an integer, got 1.5 (float)"),
    ({"batch": {"max_records": "10"}}, "batch.max_records: expected an integer, got '10' (str)"),
    ({"source": {"include": ["a", 2]}}, "source.include: expected a list of a string, got ['a', 2] (list)"),
    ({"source": "x"}, "source: expected a table, got str"),
    ({"sink": {"compression_level": 40}}, "sink.compression_level: 40 is above the maximum 19"),
])
def test_type_and_range_errors(data, expected):
    """Wrong types, non-tables and out-of-range values are named precisely."""
    assert problems(data) == [expected]


def test_int_accepted_for_float():
    """An integer is a valid number for a float option."""
    s = settings_from_dict({"shutdown_timeout_secs": 5}, env={})
    assert s.shutdown_timeout_secs == 5.0 and isinstance(s.shutdown_timeout_secs, float)


def test_env_interpolation():
    """${VAR}, ${VAR:-default} and $$ are expanded; numbers may come from variables."""
    s = settings_from_dict({"data_dir": "${BASE}/x$$y", "host_name": "${NODE:-fallback}",
                            "batch": {"linger_ms": "${LINGER:-250}"}}, env={"BASE": "/b"})
    assert s.data_dir == "/b/x$y" and s.host_name == "fallback" and s.batch.linger_ms == 250


def test_missing_env_var_named_without_values():
    """An unset variable without default is a problem naming the key and the variable."""
    assert problems({"host_name": "${NOPE}"}) == [
        "host_name: environment variable ${NOPE} is not set (and has no default)"]


def test_cross_field_checks():
    """Options that contradict each other are reported together."""
    got = problems({"sink": {"retry_initial_ms": 500, "retry_max_ms": 100},
                    "source": {"include": [], "read_chunk_bytes": 8 << 20}})
    assert sorted(p.split(":")[0] for p in got) == ["sink.retry_initial_ms", "source.include",
                                                    "source.read_chunk_bytes"]


@dataclasses.dataclass
class Auth:
    password: int = 0


@dataclasses.dataclass
class WithSecret:
    auth: Auth = dataclasses.field(default_factory=Auth)


def test_secret_values_never_in_messages(monkeypatch):
    """A value under a secret-looking key is redacted in every message."""
    from agent import config as config_mod

    monkeypatch.setattr(config_mod, "Settings", WithSecret)
    monkeypatch.setattr(config_mod, "_cross_checks", lambda s: [])
    with pytest.raises(ConfigError) as e:
        config_mod.settings_from_dict({"auth": {"password": "hunter2-secret"}}, env={})
    assert "hunter2" not in str(e.value) and "<redacted>" in str(e.value)
    assert is_secret("sasl_password") and is_secret("api_key") and not is_secret("max_line_bytes")


def test_toml_syntax_error_has_line(tmp_path):
    """A TOML syntax error is one problem with its line number."""
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "x"\n[source\n')
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert len(e.value.problems) == 1 and "line 2" in e.value.problems[0]


def test_missing_file(tmp_path):
    """A missing file is a ConfigError naming the path and the OS cause."""
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in e.value.problems[0] and "No such file" in e.value.problems[0]
