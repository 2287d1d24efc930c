"""Routes: compiled once per file where the file decides, per record where a record field does."""

from __future__ import annotations

import pytest

from agent.config import settings_from_dict
from pipelines.errors import ConfigError
from pipelines.routes import RouteCondition, Router, RouteSettings, RoutingSettings

SINKS = ["search", "lake", "errors"]
FILE = {"kubernetes": {"namespace": "prod-shop", "pod": "cart-1", "container": "app"},
        "log": {"file": {"path": "/var/log/containers/cart.log"}}}


def route(name: str, sinks: list[str], *when: RouteCondition, final: bool = False) -> RouteSettings:
    return RouteSettings(name=name, sinks=sinks, all=not when, when=list(when), final=final)


def router(unmatched: str, *routes: RouteSettings) -> Router:
    return Router(RoutingSettings(unmatched, list(routes)), SINKS)


def test_file_fields_decide_once_per_file() -> None:
    """Tests on kubernetes fields give one mask for the whole file, no per-record function."""
    r = router("drop", route("prod", ["search"], RouteCondition("kubernetes.namespace", glob="prod-*")),
               route("all", ["lake"]))
    fr = r.for_file(FILE)
    assert fr.per_record is None and r.names(fr.mask) == ["search", "lake"]
    other = r.for_file({**FILE, "kubernetes": {"namespace": "dev"}})
    assert other.per_record is None and r.names(other.mask) == ["lake"]


def test_record_fields_decide_per_record() -> None:
    """A test on `level` is left to each record; text comparison of numbers; absent fails."""
    r = router("lake", route("errors", ["errors"], RouteCondition("level", one_of=["error", "fatal"])),
               route("status", ["search"], RouteCondition("http.status", prefix="5")))
    fn = r.for_file(FILE).per_record
    assert fn is not None
    assert r.names(fn({"level": "error"})) == ["errors"]
    assert r.names(fn({"level": "info", "http": {"status": 503}})) == ["search"]
    assert r.names(fn({"level": "fatal", "http": {"status": 502}})) == ["search", "errors"]
    assert r.names(fn({"message": "no level"})) == ["lake"]  # unmatched


def test_final_stops_later_routes() -> None:
    """A matching final route keeps the record from the routes after it; a failing one does not."""
    r = router("drop", route("audit", ["errors"], RouteCondition("kubernetes.container", equals="audit"),
                             final=True),
               route("all", ["lake"]))
    assert r.names(r.for_file({"kubernetes": {"container": "audit"}}).mask) == ["errors"]
    assert r.names(r.for_file(FILE).mask) == ["lake"]


def test_file_test_failing_removes_the_route_for_the_file() -> None:
    """A route whose file test fails is not evaluated per record at all."""
    r = router("drop", route("dev-errors", ["errors"], RouteCondition("kubernetes.namespace", equals="dev"),
                             RouteCondition("level", equals="error")))
    fr = r.for_file(FILE)
    assert fr.per_record is None and fr.mask == 0
    dev = r.for_file({"kubernetes": {"namespace": "dev"}})
    assert dev.per_record is not None
    assert r.names(dev.per_record({"level": "error"})) == ["errors"] and dev.per_record({}) == 0


def test_regex_negate_and_absent_field() -> None:
    """regex searches anywhere; negate inverts, and passes when the field is absent."""
    r = router("search", route("noisy", ["lake"], RouteCondition("message", regex=r"timeout|refused")),
               route("untraced", ["errors"], RouteCondition("trace_id", glob="*", negate=True)))
    fn = r.for_file(FILE).per_record
    assert fn is not None
    assert r.names(fn({"message": "connection refused", "trace_id": "ab"})) == ["lake"]
    assert r.names(fn({"message": "ok"})) == ["errors"]
    assert r.names(fn({"message": "ok", "trace_id": "ab"})) == ["search"]


def test_no_routes_send_everything_everywhere() -> None:
    r = router("")
    assert r.for_file(FILE).mask == 0b111


def test_config_with_sinks_and_routes() -> None:
    """[sinks.<name>] and [[routing.routes]] validate into settings; sink_tables keeps their order."""
    s = settings_from_dict({
        "sinks": {"search": {"type": "elasticsearch"}, "lake": {"type": "kafka", "kafka": {"topic": "t"}}},
        "routing": {"unmatched": "lake", "routes": [
            {"name": "errors", "sinks": ["search"], "when": [{"field": "level", "equals": "error"}]}]},
    }, env={})
    assert list(s.sink_tables()) == ["search", "lake"]
    assert s.sinks["lake"].kafka.topic == "t" and s.routing.routes[0].when[0].equals == "error"


def test_config_route_problems_all_reported() -> None:
    """Unknown sinks, two tests in one condition, a bad regex, a missing unmatched: every one named."""
    with pytest.raises(ConfigError) as err:
        settings_from_dict({
            "sinks": {"a": {"type": "null"}, "b": {"type": "kafka", "kafka": {"acks": "1"}}},
            "routing": {"routes": [{"name": "r", "sinks": ["a", "nope"],
                                    "when": [{"field": "level", "equals": "x", "prefix": "y"},
                                             {"field": "msg", "regex": "("}]}]},
        }, env={})
    text = "\n".join(err.value.problems)
    assert "routing.routes[0].sinks[1]: expected one of the declared sinks (a, b), got 'nope'" in text
    assert ("routing.routes[0].when[0]: expected exactly one of equals, one_of, prefix, glob, regex, "
            "got equals, prefix") in text
    assert "routing.routes[0].when[1].regex: expected a regular expression" in text
    assert "routing.unmatched: expected the sink for records no route takes" in text
    assert "sinks.b.kafka.acks: expected 'all' while sinks.b.kafka.idempotence = true" in text


def test_config_sink_and_sinks_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="either one \\[sink\\] table or named"):
        settings_from_dict({"sink": {"type": "null"}, "sinks": {"a": {"type": "null"}}}, env={})


def test_config_two_file_sinks_in_one_directory_is_an_error() -> None:
    with pytest.raises(ConfigError, match="sinks.b.path: expected a directory no other sink writes"):
        settings_from_dict({"sinks": {"a": {"type": "file", "path": "/tmp/x"},
                                      "b": {"type": "file", "path": "/tmp/x/"}}}, env={})


def test_config_sink_names_must_be_plain() -> None:
    """A sink name becomes a file name and a label value: no slashes or spaces."""
    with pytest.raises(ConfigError, match="sinks.a/b: expected a name of letters"):
        settings_from_dict({"sinks": {"a/b": {"type": "null"}}}, env={})
    with pytest.raises(ConfigError, match="sinks.worker-1: expected a name .* not starting with 'worker-'"):
        settings_from_dict({"sinks": {"worker-1": {"type": "null"}}}, env={})  # a worker's directory
