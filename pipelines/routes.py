"""Routes: which sinks each record goes to.

    [routing]
    unmatched = "lake"     # where records no route takes go: a sink, or "drop" (counted)

    [[routing.routes]]
    name = "errors"
    when = [{ field = "level", one_of = ["error", "fatal"] }]   # every test must hold
    sinks = ["search"]
    final = false          # true: a record this route takes is not offered to later routes

A record goes to the sinks of every route it matches, in order, until a matching route is
`final`. Without routes every record goes to every sink. A route with `all = true` takes every
record.

`kind = "logs"` or `"metrics"` limits a route to log records or to metric records (Prometheus
scrapes, host metrics: `pipelines.metricrecords`); the default `"all"` offers it both. It is
decided once per file or per scrape target, never per record.

Tests compare a field's value (dotted path; numbers and booleans as text) with `equals`, `one_of`,
`prefix`, `glob` (fnmatch) or `regex` (a search anywhere in the text); `negate = true` inverts
one. A field that is absent fails every test (and passes a negated one).

Routing is decided once per file where it can be: the fields the agent sets from the file
(`kubernetes.namespace`, `.pod`, `.container`, ... of the kubelet file name, `log.file.path`,
`host.name`) are the same for every record of the file, and the agent's values win over an app's,
so tests on them are evaluated when the file's processor is built. Only routes that still depend
on record fields (such as `level`) are evaluated per record, in the chain, where the record is a
dict anyway. The result is a bit mask over the sinks (bit i: sink i in declaration order).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.fields import as_text, getter
from pipelines.options import opt

DROP = "drop"
LOGS, METRICS, ALL_KINDS = "logs", "metrics", "all"  # kinds of records (`RouteSettings.kind`)
RecordRoute = Callable[[dict[str, Any]], int]


@dataclass(slots=True)
class RouteCondition:
    field: str = dataclasses.field(metadata={
        "help": "dotted path of the record field tested (kubernetes.namespace, level, ...)"})
    equals: str = opt("", help="the field's text equals this")
    one_of: list[str] = opt(factory=list, help="the field's text is one of these")
    prefix: str = opt("", help="the field's text starts with this")
    glob: str = opt("", help="the field's text matches this glob (*, ?, [...])")
    regex: str = opt("", help="the field's text contains a match of this regular expression")
    negate: bool = opt(False, help="pass when the test fails (and when the field is absent)")

    def tests(self) -> list[str]:
        """Names of the tests this condition sets (exactly one is valid)."""
        return [t for t in ("equals", "one_of", "prefix", "glob", "regex") if getattr(self, t)]


@dataclass(slots=True)
class RouteSettings:
    name: str = dataclasses.field(metadata={"help": "the route's name (in messages and metrics)"})
    sinks: list[str] = dataclasses.field(metadata={"help": "names of the sinks matching records go to"})
    kind: str = opt(ALL_KINDS, choices=(ALL_KINDS, LOGS, METRICS),
                    help="the records this route is offered: log records, metric records, or all")
    all: bool = opt(False, help="take every record of its kind (instead of `when`)")
    when: list[RouteCondition] = opt(factory=list, help="tests that must all pass: [{field=..., equals=...}]")
    final: bool = opt(False, help="records this route takes are not offered to later routes")


@dataclass(slots=True)
class RoutingSettings:
    unmatched: str = opt("", help='sink for records no route takes, or "drop" (counted); '
                                  "required once routes are declared")
    routes: list[RouteSettings] = opt(factory=list, help="[[routing.routes]] tables: which records go "
                                                         "to which sinks; none: every record to every sink")


def check(routing: RoutingSettings, sinks: list[str]) -> list[tuple[str, str]]:
    """Every problem of the routes against the declared sinks: (key path, what)."""
    problems: list[tuple[str, str]] = []
    routes = routing.routes
    seen: dict[str, int] = {}
    declared = ", ".join(sinks)
    for i, r in enumerate(routes):
        at = f"routing.routes[{i}]"
        if not r.name.strip():
            problems.append((f"{at}.name", f"expected a non-empty name, got {r.name!r}"))
        elif r.name in seen:
            problems.append((f"{at}.name", f"expected a unique name, got {r.name!r} "
                                           f"(also routing.routes[{seen[r.name]}])"))
        seen.setdefault(r.name, i)
        if not r.sinks:
            problems.append((f"{at}.sinks", "expected at least one sink name, got []"))
        for j, s in enumerate(r.sinks):
            if s not in sinks:
                problems.append((f"{at}.sinks[{j}]", f"expected one of the declared sinks ({declared}), "
                                                     f"got {s!r}"))
        if r.all == bool(r.when):
            problems.append((at, f"expected either all = true or a `when` list of tests, got "
                                 f"{'both' if r.all else 'neither'}"))
        for j, c in enumerate(r.when):
            problems += _check_condition(c, f"{at}.when[{j}]")
    unmatched, at = routing.unmatched, "routing.unmatched"
    if routes and not unmatched:
        problems.append((at, f"expected the sink for records no route takes, or {DROP!r} (routes "
                             f"are declared), got nothing"))
    elif unmatched and not routes:
        problems.append((at, f"expected no value without [[routing.routes]], got {unmatched!r}"))
    elif unmatched and unmatched != DROP and unmatched not in sinks:
        problems.append((at, f"expected {DROP!r} or one of the declared sinks ({declared}), "
                             f"got {unmatched!r}"))
    return problems


def _check_condition(c: RouteCondition, at: str) -> list[tuple[str, str]]:
    problems = []
    if not c.field.strip():
        problems.append((f"{at}.field", f"expected a dotted field path, got {c.field!r}"))
    tests = c.tests()
    if len(tests) != 1:
        problems.append((at, f"expected exactly one of equals, one_of, prefix, glob, regex, got "
                             f"{', '.join(tests) if tests else 'none'}"))
    if c.regex:
        try:
            re.compile(c.regex)
        except re.error as exc:
            problems.append((f"{at}.regex", f"expected a regular expression, got {c.regex!r} ({exc})"))
    return problems


@dataclass(frozen=True, slots=True)
class _Test:
    path: str
    get: Callable[[dict[str, Any]], Any]
    passes: Callable[[str], bool]
    negate: bool

    def __call__(self, value: Any) -> bool:
        """Whether a value read from a record passes (None: the field is absent)."""
        if value is None or type(value) in (dict, list):
            return self.negate
        return self.passes(as_text(value)) != self.negate


def _compile_test(c: RouteCondition) -> _Test:
    passes: Callable[[str], Any]
    if c.equals:
        passes = c.equals.__eq__
    elif c.one_of:
        passes = frozenset(c.one_of).__contains__
    elif c.prefix:
        prefix = c.prefix
        passes = lambda v: v.startswith(prefix)  # noqa: E731
    elif c.glob:
        passes = re.compile(fnmatch.translate(c.glob)).match
    else:
        passes = re.compile(c.regex).search
    return _Test(c.field, getter(c.field), lambda v: bool(passes(v)), c.negate)


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    mask: int
    tests: tuple[_Test, ...]   # empty: takes every record (all = true)
    final: bool
    kind: str                  # ALL_KINDS, LOGS or METRICS


@dataclass(frozen=True, slots=True)
class FileRoutes:
    """Routing of one file's records: a constant mask, or a function of the record."""

    mask: int                          # when `per_record` is None: the sinks of every record
    per_record: RecordRoute | None


class Router:
    """Routes compiled against the sink names (bit i = `sinks[i]`)."""

    def __init__(self, routing: RoutingSettings, sinks: list[str]) -> None:
        routes, unmatched = routing.routes, routing.unmatched
        bit = {name: 1 << i for i, name in enumerate(sinks)}
        self.sinks = list(sinks)
        self.everything = (1 << len(sinks)) - 1
        self.routes = [
            _Route(r.name, _mask(r.sinks, bit), tuple(_compile_test(c) for c in r.when), r.final, r.kind)
            for r in routes]
        self.unmatched = (0 if unmatched == DROP else bit[unmatched]) if routes else self.everything

    def for_file(self, fields: dict[str, Any], kind: str = LOGS) -> FileRoutes:
        """Decide what `fields` (the values the agent sets on every record of a file, or of a
        metric target's scrape when `kind` is METRICS) decide; what they do not is left to a
        function of each record."""
        pending: list[tuple[tuple[_Test, ...], int, bool]] = []
        for route in self.routes:
            if route.kind not in (ALL_KINDS, kind):
                continue
            left = []
            for t in route.tests:
                v = t.get(fields)
                if v is None:
                    left.append(t)       # not known from the file: a record field
                elif not t(v):
                    break                # fails for every record of the file
            else:
                pending.append((tuple(left), route.mask, route.final))
                if route.final and not left:
                    break                # takes every record of the file: later routes never see one
        if all(not tests for tests, _, _ in pending):
            return FileRoutes(_walk([(True, m, f) for _, m, f in pending], self.unmatched), None)
        unmatched = self.unmatched

        def per_record(rec: dict[str, Any]) -> int:
            mask, matched = 0, False
            for tests, m, final in pending:
                for t in tests:
                    if not t(t.get(rec)):
                        break
                else:
                    mask |= m
                    matched = True
                    if final:
                        break
            return mask if matched else unmatched

        return FileRoutes(0, per_record)

    def names(self, mask: int) -> list[str]:
        return [s for i, s in enumerate(self.sinks) if mask >> i & 1]


def _walk(outcomes: list[tuple[bool, int, bool]], unmatched: int) -> int:
    mask, matched = 0, False
    for ok, m, final in outcomes:
        if ok:
            mask |= m
            matched = True
            if final:
                break
    return mask if matched else unmatched


def _mask(names: list[str], bit: dict[str, int]) -> int:
    mask = 0
    for n in names:
        mask |= bit[n]
    return mask
