"""Configuration: the shipped default, every problem reported with its key path, env interpolation."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from agent import config as config_mod
from agent.config import describe_settings, is_secret, load_config, settings_from_dict
from agent.settings import Settings
from pipelines.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[2] / "config" / "agent.toml"


def problems(data: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        settings_from_dict(data, env=env or {})
    return e.value.problems


def flat_keys(table: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += flat_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


# --- the shipped default configuration ---

def test_default_config_equals_built_in_defaults_without_env():
    """Without TAILSHIP_* variables, config/agent.toml is exactly Settings() (data_dir aside)."""
    s = load_config(DEFAULT, env={})
    assert s.data_dir == "/var/lib/tailship"
    assert s.source.include == ["/var/log/containers/*.log"]
    assert s == Settings()


def test_default_config_follows_env(monkeypatch):
    """TAILSHIP_LOG_ROOT and TAILSHIP_DATA_DIR (read from os.environ by default) move the paths only."""
    monkeypatch.setenv("TAILSHIP_LOG_ROOT", "/srv/logs")
    monkeypatch.setenv("TAILSHIP_DATA_DIR", "/tmp/d")
    s = load_config(DEFAULT)
    assert s.source.include == ["/srv/logs/containers/*.log"] and s.data_dir == "/tmp/d"
    s.source.include, s.data_dir = Settings().source.include, Settings().data_dir
    assert s == Settings()


def test_default_config_lists_every_option_with_a_comment():
    """Every option appears once in config/agent.toml, in schema order, under its own comment line."""
    lines = DEFAULT.read_text().splitlines()
    keys = flat_keys(tomllib.loads(DEFAULT.read_text()))
    assert keys == [line.split(" = ")[0] for line in describe_settings().splitlines()]
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line


def test_describe_settings_shows_default_help_and_rules():
    """describe_settings renders `path = default  # help (rules)` for every option."""
    lines = describe_settings().splitlines()
    assert len(lines) == len(flat_keys(tomllib.loads(DEFAULT.read_text())))
    assert lines[0] == 'data_dir = "/var/lib/tailship"  # checkpoints and dead letters live here'
    assert ('source.read_from = "head"  # where to start in files present at start without a '
            'checkpoint (one of: head, tail)') in lines
    assert "sink.compression_level = 3  # file sink: zstd level (1..19)" in lines
    assert "batch.linger_ms = 200  # a batch closes this long after its first record (>= 0)" in lines


# --- every problem, each on one line with its key path ---

def test_five_mistakes_five_messages():
    """Five different mistakes give exactly five problems, in file order, each naming its key path."""
    got = problems({"data_dir": 3, "shutdown_timeout_secs": -1,
                    "source": {"read_from": "middle", "includ": ["x"]},
                    "batch": {"linger_ms": "soon"}})
    assert got == [
        "data_dir: expected a string, got 3 (integer)",
        "shutdown_timeout_secs: expected a number >= 0, got -1",
        "source.read_from: expected one of 'head', 'tail', got 'middle'",
        "source.includ: unknown key; did you mean `include`?",
        "batch.linger_ms: expected an integer >= 0, got 'soon' (string)",
    ]


def test_config_error_counts_problems_and_names_source():
    """The ConfigError message starts with its source and the number of problems."""
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"data_dir": 1, "host_name": 2}, env={}, source="cli")
    assert str(e.value).splitlines()[0] == "cli: 2 problem(s)"
    assert e.value.source == "cli"


def test_unknown_key_did_you_mean():
    """An unknown key close to a valid one gets a suggestion, at every depth."""
    assert problems({"sink": {"kafka": {"bootstrap_server": ["h:1"]}}, "batchh": {}}) == [
        "sink.kafka.bootstrap_server: unknown key; did you mean `bootstrap_servers`?",
        "batchh: unknown key; did you mean `batch`?",
    ]


def test_unknown_key_without_close_match_lists_valid_keys():
    """An unknown key with no near match lists the keys of its table."""
    assert problems({"parse": {"zzzz": 1}}) == ["parse.zzzz: unknown key; valid keys here: json, target"]


@pytest.mark.parametrize("data,expected", [
    ({"batch": {"max_records": "10"}}, "batch.max_records: expected an integer >= 1, got '10' (string)"),
    ({"parse": {"json": 1}}, "parse.json: expected true or false, got 1 (integer)"),
    ({"parse": {"json": "true"}}, "parse.json: expected true or false, got 'true' (string)"),
    ({"batch": {"max_records": 1.5}}, "batch.max_records: expected an integer >= 1, got 1.5 (float)"),
    ({"batch": {"max_records": True}}, "batch.max_records: expected an integer >= 1, got True (boolean)"),
    ({"parse": {"target": 7}}, "parse.target: expected a string, got 7 (integer)"),
    ({"source": {"include": ["a", 2]}}, "source.include[1]: expected a string, got 2 (integer)"),
    ({"source": {"include": "a.log"}},
     "source.include: expected an array of strings, got 'a.log' (string)"),
    ({"source": "x"}, "source: expected a table, got 'x' (string)"),
    ({"host_name": {"a": 1}}, "host_name: expected a string, got a table"),
    ({"shutdown_timeout_secs": float("nan")},
     "shutdown_timeout_secs: expected a number >= 0, got nan (float)"),
])
def test_wrong_types(data, expected):
    """Wrong types are named with the expected type and the value's TOML kind; no coercion."""
    assert problems(data) == [expected]


def test_int_accepted_for_float():
    """An integer is a valid number for a float option and becomes a float."""
    s = settings_from_dict({"shutdown_timeout_secs": 5}, env={})
    assert s.shutdown_timeout_secs == 5.0 and type(s.shutdown_timeout_secs) is float


@pytest.mark.parametrize("data,expected", [
    ({"source": {"format": "json"}},
     "source.format: expected one of 'auto', 'docker', 'cri', 'text', got 'json'"),
    ({"sink": {"kafka": {"acks": 1}}}, "sink.kafka.acks: expected one of 'all', '1', '0', got 1 (integer)"),
    ({"sink": {"compression_level": 40}}, "sink.compression_level: expected an integer from 1 to 19, got 40"),
    ({"sink": {"compression_level": 0}}, "sink.compression_level: expected an integer from 1 to 19, got 0"),
    ({"source": {"scan_interval_secs": 0.01}},
     "source.scan_interval_secs: expected a number >= 0.05, got 0.01"),
])
def test_choices_and_ranges(data, expected):
    """Values outside `choices` or `min`/`max` name what is allowed."""
    assert problems(data) == [expected]


def test_range_bounds_are_inclusive():
    """min and max themselves are accepted."""
    s = settings_from_dict({"sink": {"compression_level": 19, "max_in_flight": 1}}, env={})
    assert s.sink.compression_level == 19 and s.sink.max_in_flight == 1


def test_long_values_are_truncated():
    """A long bad value is cut to about 60 characters."""
    [p] = problems({"source": {"read_from": "x" * 500}})
    assert p == f"source.read_from: expected one of 'head', 'tail', got '{'x' * 56}..."


def test_top_level_must_be_a_table():
    """A non-table document is one problem."""
    assert problems([1]) == ["(top level): expected a table, got [1] (array)"]  # type: ignore[arg-type]


# --- ${VAR} interpolation ---

def test_env_interpolation():
    """${VAR}, ${VAR:-default} and $$ are expanded in strings and inside arrays."""
    s = settings_from_dict({"data_dir": "${BASE}/x$$y", "host_name": "${NODE:-fallback}",
                            "source": {"include": ["${ROOT}/a/*.log", "$${ROOT}", "a$b"]}},
                           env={"BASE": "/b", "ROOT": "/r"})
    assert s.data_dir == "/b/x$y" and s.host_name == "fallback"
    assert s.source.include == ["/r/a/*.log", "${ROOT}", "a$b"]


def test_env_default_applies_to_empty_variable():
    """Like a shell, ${VAR:-d} uses d when VAR is empty, and ${VAR} may be empty."""
    s = settings_from_dict({"host_name": "${EMPTY:-d}", "data_dir": "/x${EMPTY}"}, env={"EMPTY": ""})
    assert s.host_name == "d" and s.data_dir == "/x"


def test_numbers_and_booleans_from_env():
    """A whole interpolated string may fill a number or boolean option."""
    s = settings_from_dict({"batch": {"linger_ms": "${LINGER:-250}"}, "parse": {"json": "${J}"},
                            "shutdown_timeout_secs": "${T}"}, env={"J": "false", "T": "2.5"})
    assert s.batch.linger_ms == 250 and s.parse.json is False and s.shutdown_timeout_secs == 2.5


def test_missing_env_var_is_a_problem_per_key():
    """An unset variable without default names the key path and the variable, once each."""
    assert problems({"host_name": "${NOPE}-${NOPE}", "source": {"include": ["ok", "${GONE}/x"]}}) == [
        "host_name: environment variable NOPE is not set and ${NOPE} has no default",
        "source.include[1]: environment variable GONE is not set and ${GONE} has no default",
    ]


def test_malformed_reference():
    """An unterminated or nested ${...} is a problem, not a literal."""
    assert problems({"host_name": "${A:-${B}}", "data_dir": "${oops"}, env={"A": "a", "B": "b"}) == [
        "host_name: malformed ${...}: write ${NAME} or ${NAME:-default} (not nested), and $$ for a literal $",
        "data_dir: malformed ${...}: write ${NAME} or ${NAME:-default} (not nested), and $$ for a literal $",
    ]


def test_env_values_never_shown():
    """A bad value that came from the environment is shown as its ${...} template, never its text."""
    got = problems({"batch": {"linger_ms": "${LINGER}"}, "source": {"read_from": "${FROM}"}},
                   env={"LINGER": "hunter2", "FROM": "s3cret"})
    assert got == ["batch.linger_ms: expected an integer >= 0, got the value of '${LINGER}' (not shown)",
                   "source.read_from: expected one of 'head', 'tail', got the value of '${FROM}' (not shown)"]


def test_interpolate_false_takes_strings_literally():
    """With interpolate=False (command-line values), `$` has no meaning."""
    s = settings_from_dict({"data_dir": "/a/${X}/$$"}, env={}, interpolate=False)
    assert s.data_dir == "/a/${X}/$$"


# --- secrets ---

def test_secret_values_never_in_messages_real_keys():
    """Values under sasl_*, *key* options are redacted; their type is still named."""
    got = problems({"sink": {"kafka": {"sasl_password": 424242, "sasl_mechanism": "hunter2",
                                       "key": 99, "tls_key_file": 31337}}})
    assert got == [
        "sink.kafka.sasl_password: expected a string, got <redacted> (integer)",
        "sink.kafka.sasl_mechanism: expected one of 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', "
        "got <redacted>",
        "sink.kafka.key: expected a string, got <redacted> (integer)",
        "sink.kafka.tls_key_file: expected a string, got <redacted> (integer)",
    ]


@dataclasses.dataclass
class Auth:
    api_token: int = 0
    client_secret: list[str] = dataclasses.field(default_factory=list)
    max_key_bytes: int = dataclasses.field(default=1, metadata={"max": 10})


@dataclasses.dataclass
class FakeSettings:
    auth: Auth = dataclasses.field(default_factory=Auth)
    password: str = ""


def test_secret_values_never_in_messages_fake_schema(monkeypatch):
    """Secret-named keys of any schema are redacted, in scalars and arrays; `_bytes` keys are not."""
    monkeypatch.setattr(config_mod, "Settings", FakeSettings)
    monkeypatch.setattr(config_mod, "_cross_checks", lambda s, walk: None)
    with pytest.raises(ConfigError) as e:
        config_mod.settings_from_dict({"auth": {"api_token": "tok-hunter2", "client_secret": ["ok", 123456],
                                                "max_key_bytes": 11},
                                       "password": ["pw-hunter2"]}, env={})
    assert e.value.problems == [
        "auth.api_token: expected an integer, got <redacted> (string)",
        "auth.client_secret[1]: expected a string, got <redacted> (integer)",
        "auth.max_key_bytes: expected an integer <= 10, got 11",
        "password: expected a string, got <redacted> (array)",
    ]
    assert "hunter2" not in str(e.value) and "123456" not in str(e.value)


def test_is_secret():
    """Secret words anywhere in the key path; `key` except in `_bytes` options."""
    assert all(map(is_secret, ["sasl_username", "api_key", "auth.token", "client_secret", "x.password[0]",
                               "sink.kafka.tls_key_file"]))
    assert not any(map(is_secret, ["max_line_bytes", "max_key_bytes", "source.include[0]", "topic"]))


# --- files ---

def test_toml_syntax_error_has_line_and_column(tmp_path):
    """A TOML syntax error is one problem with its line and column."""
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "x"\n[source\n')
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert e.value.problems == [
        "TOML syntax error at line 2, column 8: Expected ']' at the end of a table declaration"]
    assert e.value.source == str(f)


def test_not_utf8_file(tmp_path):
    """A file that is not UTF-8 is one problem, not a traceback."""
    f = tmp_path / "c.toml"
    f.write_bytes(b'host_name = "\xff"\n')
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert e.value.problems == [f"{f}: not UTF-8 text (byte 13)"]


def test_missing_file(tmp_path):
    """A missing file is a ConfigError naming the path and the OS cause."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_config(missing)
    assert e.value.problems == [f"cannot read {missing}: No such file or directory"]


def test_directory_instead_of_file(tmp_path):
    """A directory given as config file names the OS cause."""
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert e.value.problems == [f"cannot read {tmp_path}: Is a directory"]


def test_file_problems_carry_its_path(tmp_path):
    """Problems in a file are reported with the file as source."""
    f = tmp_path / "c.toml"
    f.write_text('[sink]\ntype = "kafak"\n')
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert str(e.value) == (f"{f}: 1 problem(s)\n"
                            "sink.type: expected one of 'file', 'stdout', 'null', 'kafka', "
                            "'elasticsearch', got 'kafak'")


# --- cross-field checks ---

def test_cross_field_checks():
    """Options that contradict each other are each reported, naming both keys."""
    got = problems({"sink": {"retry_initial_ms": 500, "retry_max_ms": 100, "kafka": {"acks": "1"}},
                    "batch": {"max_bytes": 8 << 20, "memory_limit_bytes": 4 << 20},
                    "source": {"include": [], "read_chunk_bytes": 8 << 20}})
    assert got == [
        "sink.retry_initial_ms: expected at most sink.retry_max_ms (100), got 500",
        "batch.max_bytes: expected at most batch.memory_limit_bytes (4194304), got 8388608",
        "source.read_chunk_bytes: expected at most source.read_budget_bytes (4194304), got 8388608",
        "source.include: expected at least one glob pattern, got []",
        "sink.kafka.acks: expected 'all' while sink.kafka.idempotence = true (or set that to false), got '1'",
    ]


def test_a_sinks_memory_limit_is_part_of_the_shared_one():
    """A sink's own budget above the shared budget would never bind."""
    assert problems({"batch": {"memory_limit_bytes": 4 << 20},
                     "sinks": {"a": {"type": "null", "memory_limit_bytes": 8 << 20},
                               "b": {"type": "null", "memory_limit_bytes": 4 << 20}}}) == [
        "sinks.a.memory_limit_bytes: expected at most batch.memory_limit_bytes (4194304), got 8388608"]


def test_sink_checks_skip_rejected_types_and_paths():
    """Routes are not checked against the name of a rejected sink type, nor output directories
    compared where a path was rejected."""
    assert problems({"sink": {"type": "bogus"},
                     "routing": {"unmatched": "kafka",
                                 "routes": [{"name": "r", "sinks": ["kafka"], "all": True}]}}) == [
        "sink.type: expected one of 'file', 'stdout', 'null', 'kafka', 'elasticsearch', got 'bogus'"]
    assert problems({"sinks": {"a": {"type": "file"}, "b": {"type": "file", "path": 5}}}) == [
        "sinks.b.path: expected a string, got 5 (integer)"]


def test_cross_field_equal_values_pass():
    """Equal bounds are allowed, and acks may differ from 'all' without idempotence."""
    s = settings_from_dict({"sink": {"retry_initial_ms": 100, "retry_max_ms": 100,
                                     "kafka": {"acks": "1", "idempotence": False}},
                            "source": {"read_chunk_bytes": 4096, "read_budget_bytes": 4096}}, env={})
    assert s.sink.retry_max_ms == 100 and s.sink.kafka.acks == "1"


def test_empty_include_pattern():
    """An include pattern that is empty (e.g. from an empty variable) is a problem."""
    assert problems({"source": {"include": ["/a/*.log", "${EMPTY}"]}}, env={"EMPTY": ""}) == [
        "source.include[1]: expected a non-empty glob pattern, got the value of '${EMPTY}' (not shown)"]


def test_cross_checks_skip_rejected_values():
    """A cross-field check involving a rejected value adds no second, misleading problem."""
    assert problems({"sink": {"retry_initial_ms": 50000, "retry_max_ms": "x"}}) == [
        "sink.retry_max_ms: expected an integer >= 1, got 'x' (string)"]


def test_allowed_roots_are_absolute_and_never_system_directories():
    """A relative root (it would depend on the working directory) and /proc, /sys, /dev are
    problems; an absolute root is taken."""
    assert problems({"source": {"allowed_roots": ["/var/log/pods", "logs", "/proc/1", "/dev"]}}) == [
        "source.allowed_roots[1]: expected an absolute directory, got 'logs'",
        "source.allowed_roots[2]: expected a directory apart from /proc, /sys, /dev (never read), "
        "got '/proc/1'",
        "source.allowed_roots[3]: expected a directory apart from /proc, /sys, /dev (never read), "
        "got '/dev'"]
    s = settings_from_dict({"source": {"allowed_roots": ["/var/log/pods"], "max_open_files": 500}}, env={})
    assert s.source.allowed_roots == ["/var/log/pods"] and s.source.max_open_files == 500
