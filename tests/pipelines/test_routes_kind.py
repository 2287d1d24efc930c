"""Routes tell logs from metrics: `kind` is decided when a file's or a target's routing is
built, so it costs nothing per record."""

from __future__ import annotations

from pipelines.routes import LOGS, METRICS, RouteCondition, Router, RouteSettings, RoutingSettings


def router() -> Router:
    return Router(RoutingSettings(unmatched="lake", routes=[
        RouteSettings(name="metrics", sinks=["tsdb"], kind="metrics", all=True, final=True),
        RouteSettings(name="errors", sinks=["search"], kind="logs",
                      when=[RouteCondition(field="level", equals="error")]),
        RouteSettings(name="prod", sinks=["search"],
                      when=[RouteCondition(field="kubernetes.namespace", equals="prod")]),
    ]), ["lake", "search", "tsdb"])


def test_a_metrics_route_takes_metric_records_only():
    r = router()
    assert r.for_file({"host": {"name": "n"}}, METRICS).mask == 0b100
    logs = r.for_file({"log": {"file": {"path": "/a.log"}}, "host": {"name": "n"}}, LOGS)
    assert logs.per_record is not None  # the level test is per record; the metrics route is gone
    assert logs.per_record({"level": "error"}) == 0b010
    assert logs.per_record({"level": "info"}) == 0b001


def test_a_route_of_all_kinds_is_offered_both():
    r = Router(RoutingSettings(unmatched="drop", routes=[
        RouteSettings(name="prod", sinks=["search"],
                      when=[RouteCondition(field="kubernetes.namespace", equals="prod")])]), ["search"])
    assert r.for_file({"kubernetes": {"namespace": "prod"}}, METRICS).mask == 1
    assert r.for_file({"kubernetes": {"namespace": "prod"}}, LOGS).mask == 1
    assert r.for_file({"kubernetes": {"namespace": "dev"}}, METRICS).mask == 0
