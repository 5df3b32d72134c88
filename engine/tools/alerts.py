"""Alert rules: on the difference between two runs, and J1QL questions to the graph store.

A rules file is YAML; each rule is of one of two kinds::

    rules:
      - name: new-admin-user               # unique in the file
        description: A new user is an administrator   # optional
        on: added                          # added | removed | changed | became
        type: acme_user                    # the entity _type
        where: admin                       # optional JMESPath predicate

      - name: users-not-employees          # a query rule (JupiterOne's shape): evaluated on a store
        queries:                           # or question: {queries: [...]}, as JupiterOne exports
          - name: query0                   # optional (query0, query1, ...)
            query: FIND User THAT !IS Person
        condition: queries.query0.total > 0    # optional (this is the default); or in JupiterOne's
                                               # list form, also as operations[].when.condition

What ``where`` sees, per ``on``:

* ``added``: the entity in NEW.
* ``removed``: the entity in OLD. Never for a type that is partial in either run.
* ``changed``: the entity in NEW, plus ``_old`` (the entity in OLD) and ``_changed``
  (the sorted names of the properties that changed). Fires only if a property changed.
* ``became``: the predicate is evaluated twice, on the entity in OLD with OLD's clock and
  on the entity in NEW with NEW's clock; fires when it was false and is now true, whether
  or not a property changed (time passing is enough: "now expires within 30 days").
  ``where`` is required.

Entities are seen without ``_rawData``. The JMESPath functions are the engine's
(``to_epoch_ms``, ``now_ms``, ``days_ago_ms``, ...); ``now_ms()`` is the clock given with
``--as-of`` (default: now). Every expression is compiled once, when the file is loaded. A
``where`` naming a property that no entity of the rule's type has, in either run, is warned of.

A query rule fires when its condition on the queries' totals holds
(:func:`evaluate_query_rules`, given an open store: ``date.now`` is the clock). Its queries are
parsed when the file is loaded, each problem located in the file.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import jmespath
import jmespath.lexer

from ..errors import (
    EXIT_ALERTS,
    EXIT_NO_ALERTS,
    EXIT_RULE_FAILED,
    ExpressionError,
    Location,
    MappingError,
    Problem,
    RulesError,
    did_you_mean,
)
from ..lang.functions import jmespath_options
from ..lang.values import compile_jmespath, is_truthy
from ..output import OutputDir
from ..pipeline.load import SourceMap, describe_type, format_path, parse_yaml
from .diff import ADDED, CHANGED, REMOVED, UNCHANGED, Comparison, Event, value_text

if TYPE_CHECKING:  # the query language is imported when a file has query rules (it loads SQLAlchemy)
    from ..query.rules import Question, QuestionAlert
    from ..store.connect import Store

BECAME = "became"
QUERY = "query"
KINDS = (ADDED, REMOVED, CHANGED, BECAME)
RULE_FIELDS = ("name", "description", "on", "type", "where")
REQUIRED_FIELDS = ("name", "on", "type")
QUERY_RULE_FIELDS = ("name", "description", "queries", "condition", "question", "operations")
# JupiterOne rule fields etl reads past: it evaluates rules when asked, and prints or returns alerts
J1_RULE_FIELDS = ("id", "specVersion", "pollingInterval", "outputs", "templates", "tags", "version", "notifyOnFailure",
                  "triggerActionsOnNewEntitiesOnly", "ignorePreviousResults", "labels")  # fmt: skip
ALERT_SAMPLE = 20  # items of a query alert's answer printed as text


@dataclass(frozen=True)
class Rule:
    index: int
    name: str
    on: str
    type: str
    where: Any  # a compiled JMESPath expression, or None: every entity
    where_source: str | None
    description: str | None
    location: Location

    @property
    def label(self) -> str:
        return f"rules[{self.index}] ({self.name})"

    def matches(self, entity: dict, options: jmespath.Options) -> bool:
        return self.where is None or is_truthy(self.where.search(entity, options=options))


@dataclass(frozen=True)
class QueryRule:
    """A J1QL question: named queries and a condition on their totals."""

    index: int
    name: str
    question: Question
    description: str | None
    location: Location
    on = QUERY

    @property
    def label(self) -> str:
        return f"rules[{self.index}] ({self.name})"


@dataclass(frozen=True)
class RuleSet:
    path: Path
    rules: tuple[Rule | QueryRule, ...]

    @property
    def diff_rules(self) -> tuple[Rule, ...]:
        """The rules on the change between two runs."""
        return tuple(r for r in self.rules if isinstance(r, Rule))

    @property
    def query_rules(self) -> tuple[QueryRule, ...]:
        """The rules that ask the graph store."""
        return tuple(r for r in self.rules if isinstance(r, QueryRule))


# ----------------------------------------------------------------------------------------
# Loading


def load_rules(path: Path) -> RuleSet:
    """Read and check a rules file; raises RulesError listing every problem, located."""
    display = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([Problem(None, "", f"cannot read rules file {display}: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise RulesError([Problem(None, "", f"{display} is not UTF-8 text: {exc.reason}")]) from None
    return parse_rules(text, display, Path(path))


def parse_rules(text: str, filename: str, path: Path | None = None) -> RuleSet:
    try:
        data, source = parse_yaml(text, filename)
    except MappingError as exc:  # YAML syntax, duplicate keys, an empty file
        raise RulesError(
            [Problem(p.location, p.path, p.message.replace("the mapping file", "the rules file")) for p in exc.problems]
        ) from None
    problems: list[Problem] = []
    rules = _check(data, source, problems)
    if problems:
        raise RulesError(problems)
    return RuleSet(path or Path(filename), tuple(rules))


def _check(data: Any, source: SourceMap, problems: list[Problem]) -> list[Rule | QueryRule]:
    if not isinstance(data, dict):
        problems.append(source.problem((), "a rules file must be a mapping with a 'rules' list at the top level"))
        return []
    for key in data:
        if key != "rules":
            problems.append(source.problem((key,), f"unknown key '{key}'{_did_you_mean(key, ('rules',))}", key=True))
    if "rules" not in data:
        problems.append(source.problem((), "missing required key 'rules' (a list of rules)"))
        return []
    if not isinstance(data["rules"], list):
        problems.append(source.problem(("rules",), f"must be a list of rules, not {describe_type(data['rules'])}"))
        return []
    rules: list[Rule | QueryRule] = []
    names: dict[str, int] = {}  # rule name -> index of the rule that has it
    for index, item in enumerate(data["rules"]):
        is_query = isinstance(item, dict) and ("queries" in item or "question" in item)
        rule = (
            _check_query_rule(index, item, source, problems) if is_query else _check_rule(index, item, source, problems)
        )
        if rule is None:
            continue
        if rule.name in names:
            problems.append(
                source.problem(
                    ("rules", index, "name"), f"duplicate rule name '{rule.name}' (also rules[{names[rule.name]}])"
                )
            )
            continue
        names[rule.name] = index
        rules.append(rule)
    return rules


def _check_rule(index: int, item: Any, source: SourceMap, problems: list[Problem]) -> Rule | None:
    path = ("rules", index)
    if not isinstance(item, dict):
        problems.append(source.problem(path, f"a rule must be a mapping, not {describe_type(item)}"))
        return None
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in item and path + ("on",) in source.keys:
        item = {("on" if k is True else k): v for k, v in item.items()}
    before = len(problems)
    meant = set()
    for key in item:
        if key not in RULE_FIELDS:
            problems.append(
                source.problem(
                    path + (str(key),), f"unknown field '{key}'{_did_you_mean(str(key), RULE_FIELDS)}", key=True
                )
            )
            meant.update(difflib.get_close_matches(str(key), RULE_FIELDS, n=1, cutoff=0.6))
    for name in REQUIRED_FIELDS:
        if name not in item and name not in meant:  # a misspelt field is reported once
            problems.append(source.problem(path, f"missing required field '{name}'"))
    for name in ("name", "type", "description", "where"):
        if name in item and not (isinstance(item[name], str) and item[name].strip()):
            problems.append(
                source.problem(path + (name,), f"must be a non-empty string, not {describe_type(item[name])}")
            )
    on = item.get("on")
    if "on" in item and on not in KINDS:
        problems.append(
            source.problem(
                path + ("on",),
                f"must be one of {', '.join(KINDS)}, not "
                f"{json.dumps(on) if not isinstance(on, str) else repr(on)}"
                f"{_did_you_mean(str(on), KINDS)}",
            )
        )
    if on == BECAME and "where" not in item:
        problems.append(source.problem(path, "a rule 'on: became' needs a 'where' predicate (what the entity became)"))
    compiled = None
    where = item.get("where")
    if isinstance(where, str) and where.strip():
        try:
            compiled = compile_jmespath(where, frozenset())
            _check_negated_paths(where, compiled.parsed)
        except ExpressionError as exc:
            problems.append(
                Problem(
                    source.locate_in_scalar(path + ("where",), exc.offset), format_path(path + ("where",)), str(exc)
                )
            )
    if len(problems) > before:
        return None
    return Rule(index, item["name"], on, item["type"], compiled, where, item.get("description"), source.locate(path))


def _check_negated_paths(text: str, tree: dict) -> None:
    """JMESPath reads ``!_old.admin`` as ``(!_old).admin``: a field of a boolean, always null.
    Nobody means that; say how to write it."""

    def negated_path(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        children = node.get("children") or []
        if node.get("type") == "subexpression" and children and children[0].get("type") == "not_expression":
            return True
        return any(negated_path(child) for child in children)

    if not negated_path(tree):
        return
    tokens = list(jmespath.lexer.Lexer().tokenize(text))
    for index, token in enumerate(tokens[:-2]):
        if (
            token["type"] == "not"
            and tokens[index + 1]["type"] in ("unquoted_identifier", "quoted_identifier")
            and tokens[index + 2]["type"] == "dot"
        ):
            end = index + 1
            while (
                end + 2 < len(tokens)
                and tokens[end + 1]["type"] == "dot"
                and tokens[end + 2]["type"] in ("unquoted_identifier", "quoted_identifier")
            ):
                end += 2
            path = text[tokens[index + 1]["start"] : tokens[end]["end"]]
            head = text[tokens[index + 1]["start"] : tokens[index + 1]["end"]]
            raise ExpressionError(
                f"'!{path}' reads as '(!{head}){path[len(head) :]}', a field of a boolean "
                f"(always null); write '!({path})'",
                token["start"],
            )
    first_not = next((t["start"] for t in tokens if t["type"] == "not"), 0)
    raise ExpressionError(
        "'!' applies to the first name of a path only ('!a.b' is '(!a).b', always null); write '!(a.b)'", first_not
    )


def _did_you_mean(word: str, options: tuple[str, ...]) -> str:
    return did_you_mean(word, options) or f"; expected one of: {', '.join(options)}"


def _check_query_rule(index: int, item: dict, source: SourceMap, problems: list[Problem]) -> QueryRule | None:
    """A rule whose body is named J1QL queries and a condition (JupiterOne's alert rules)."""
    path: tuple = ("rules", index)
    if True in item and path + ("on",) in source.keys:  # YAML 1.1 reads the key `on` as true
        item = {("on" if k is True else k): v for k, v in item.items()}
    before = len(problems)
    for key in item:
        if key not in QUERY_RULE_FIELDS and key not in J1_RULE_FIELDS:
            hint = _did_you_mean(str(key), QUERY_RULE_FIELDS)
            if key in RULE_FIELDS:
                hint = "; a query rule has queries and a condition, not on/type/where"
            problems.append(source.problem(path + (str(key),), f"unknown field '{key}'{hint}", key=True))
    for name in ("name", "description"):
        if name in item and not (isinstance(item[name], str) and item[name].strip()):
            message = f"must be a non-empty string, not {describe_type(item[name])}"
            problems.append(source.problem(path + (name,), message))
    if "name" not in item:
        problems.append(source.problem(path, "missing required field 'name'"))
    from ..query.rules import question_of

    question, issues = question_of(item)
    for issue in issues:
        where = path + issue.path
        if issue.offset is not None:
            problems.append(Problem(source.locate_in_scalar(where, issue.offset), format_path(where), issue.message))
        else:
            problems.append(source.problem(where, issue.message, key=issue.key))
    if len(problems) > before or question is None:
        return None
    return QueryRule(index, item["name"], question, item.get("description"), source.locate(path))


# ----------------------------------------------------------------------------------------
# Evaluating


@dataclass(frozen=True)
class Alert:
    rule: Rule
    key: str
    type: str
    display_name: Any
    changes: dict | None  # for changed and became: the properties that changed

    def to_json(self) -> dict:
        out = {
            "rule": self.rule.name,
            "on": self.rule.on,
            "_type": self.type,
            "_key": self.key,
            "displayName": self.display_name,
            "description": self.rule.description,
        }
        if self.changes is not None:
            out["changes"] = self.changes
        return out


class RaisedAlerts:
    """What evaluating a rules file raised: its exit code (a rule that failed beats alerts),
    and the alerts as JSON. Both reports below are one."""

    alerts: list
    errors: list[str]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_RULE_FAILED
        return EXIT_ALERTS if self.alerts else EXIT_NO_ALERTS

    def to_json(self) -> list[dict]:
        return [alert.to_json() for alert in self.alerts]


@dataclass
class AlertReport(RaisedAlerts):
    rules: RuleSet
    old: OutputDir
    new: OutputDir
    now: int
    old_now: int
    alerts: list[Alert] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a rule that could not be evaluated on an entity
    warnings: list[str] = field(default_factory=list)
    partial_types: frozenset[str] = frozenset()


def default_old_clock(old: OutputDir, new: OutputDir, now: int) -> int:
    """OLD's clock when none is given: ``now`` moved back by the time between the two runs'
    starts (from their summaries), or ``now`` when a summary does not say."""
    old_start, new_start = old.started_ms, new.started_ms
    if old_start is None or new_start is None:
        return now
    return now - max(0, new_start - old_start)


def evaluate_rules(
    rules: RuleSet, old_path: Path, new_path: Path, *, now: int | None = None, old_now: int | None = None
) -> AlertReport:
    """The alerts the diff rules of ``rules`` raise for the change OLD -> NEW, evaluated with the
    clock ``now`` (epoch ms, default: the current time; OLD's side of ``became`` rules with
    ``old_now``, default: :func:`default_old_clock`). Query rules are not evaluated here
    (:func:`evaluate_query_rules` asks a store)."""
    old, new = OutputDir.open(old_path, "OLD"), OutputDir.open(new_path, "NEW")
    if now is None:
        now = int(time.time() * 1000)
    if old_now is None:
        old_now = default_old_clock(old, new, now)
    report = AlertReport(rules, old, new, now, old_now)
    diff_rules = rules.diff_rules
    by_event: dict[tuple[str, str], list[Rule]] = {}
    for rule in diff_rules:
        kinds = {ADDED: [ADDED], REMOVED: [REMOVED], CHANGED: [CHANGED], BECAME: [CHANGED, UNCHANGED]}[rule.on]
        for kind in kinds:
            by_event.setdefault((rule.type, kind), []).append(rule)
    options, old_options = jmespath_options(now=now), jmespath_options(now=old_now)
    wants_unchanged = any(rule.on == BECAME for rule in diff_rules)
    seen = _PropertiesSeen()
    comparison = Comparison(seen.watch(old), seen.watch(new), unchanged=wants_unchanged)
    for event in comparison:
        if event.collection != "entities":
            continue
        for rule in by_event.get((event.type, event.kind), ()):
            if _fires(rule, event, options, old_options, report):
                entity = event.latest
                changes = event.changes if event.kind in (CHANGED, UNCHANGED) else None
                report.alerts.append(
                    Alert(rule, event.key, event.type, entity.get("displayName", entity.get("name")), changes)
                )
    report.alerts.sort(key=lambda a: (a.rule.index, a.key))
    report.partial_types = comparison.partial_types
    seen_types = comparison.types["entities"]
    for rule in diff_rules:
        if rule.type not in seen_types:
            hint = did_you_mean(rule.type, seen_types)
            report.warnings.append(f"{rules.path}: {rule.label}: no entity of type '{rule.type}' in OLD or NEW{hint}")
            continue
        known = seen.properties[rule.type]
        for name in sorted(where_properties(rule) - known):
            report.warnings.append(
                f"{rules.path}: {rule.label}: where names the property '{name}', which no {rule.type} has in "
                f"OLD or NEW{did_you_mean(name, known)}"
            )
    return report


class _PropertiesSeen:
    """The property names of each entity type, noted as a comparison reads the runs."""

    def __init__(self) -> None:
        self.properties: dict[str, set[str]] = {}

    def watch(self, source: OutputDir) -> Any:
        """``source`` as a comparison reads it (an :class:`~engine.tools.diff.ObjectSource`)."""
        noted = self.properties

        def all_objects(drop: frozenset[str] = frozenset()) -> Any:
            for collection, obj in source.all_objects(drop):
                if collection == "entities":
                    noted.setdefault(obj["_type"], set()).update(obj)
                yield collection, obj

        return SimpleNamespace(path=source.path, partial_types=source.partial_types, all_objects=all_objects)


def where_properties(rule: Rule) -> set[str]:
    """The entity properties a rule's ``where`` reads: names looked up on the entity itself (not
    inside a projection or filter, which read elements), and ``_old.name`` of a changed rule."""
    found: set[str] = set()

    def walk(node: Any, at_entity: bool) -> None:
        if not isinstance(node, dict):
            return
        kind, children = node.get("type"), node.get("children") or []
        if kind == "field":
            if at_entity and node.get("value") not in ("_old", "_changed"):
                found.add(node["value"])
            return
        if kind == "subexpression" and len(children) == 2:
            left = children[0]
            walk(left, at_entity)
            is_old = at_entity and left.get("type") == "field" and left.get("value") == "_old"
            walk(children[1], is_old)  # _old.admin reads admin; a.b reads b of a, not of the entity
            return
        if kind in ("index_expression", "projection", "value_projection", "filter_projection", "flatten", "pipe"):
            if children:
                walk(children[0], at_entity)
            for child in children[1:]:
                walk(child, False)
            return
        if kind == "expref":
            return
        for child in children:
            walk(child, at_entity)

    if rule.where is not None:
        walk(rule.where.parsed, True)
    return found


def _fires(rule: Rule, event: Event, options, old_options, report: AlertReport) -> bool:
    try:
        # ADDED events have NEW's object only, REMOVED ones OLD's only; CHANGED and UNCHANGED
        # (the events of 'changed' and 'became' rules) have both.
        if rule.on == BECAME:
            assert event.new is not None
            return rule.matches(event.new, options) and not _matches_or_false(rule, event, old_options, report)
        if rule.on == CHANGED:
            assert event.new is not None
            scope = dict(event.new, _old=event.old, _changed=sorted(event.changes))
            return rule.matches(scope, options)
        entity = event.new if rule.on == ADDED else event.old
        assert entity is not None
        return rule.matches(entity, options)
    except Exception as exc:  # a function given the wrong type by an odd entity
        report.errors.append(
            f"{report.rules.path}: {rule.label}: where {rule.where_source!r} failed on {event.key}: {exc}"
        )
        return False


def _matches_or_false(rule: Rule, event: Event, old_options, report: AlertReport) -> bool:
    try:
        assert event.old is not None  # a 'became' rule's event is CHANGED or UNCHANGED: it has OLD's object
        return rule.matches(event.old, old_options)
    except Exception as exc:
        report.errors.append(
            f"{report.rules.path}: {rule.label}: where {rule.where_source!r} failed on {event.key} in OLD: {exc}"
        )
        return True  # unknown before: do not claim it became true


def iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds").replace("+00:00", "Z")


def format_alerts(report: AlertReport) -> str:
    """The text report of ``etl alerts``."""
    count = len(report.alerts)
    lines = [f"{report.rules.path}: {report.old.path} -> {report.new.path}, as of {iso(report.now)}"]
    if any(rule.on == BECAME for rule in report.rules.rules):
        lines[0] += f" (OLD as of {iso(report.old_now)})"
    for alert in report.alerts:
        name = f" {value_text(alert.display_name)}" if alert.display_name is not None else ""
        lines.append(f"  [{alert.rule.name}] {alert.rule.on} {alert.type} {alert.key}{name}")
        if alert.rule.description:
            lines.append(f"      {alert.rule.description}")
        for prop, change in (alert.changes or {}).items():
            lines.append(f"      {prop}: {value_text(change['old'])} -> {value_text(change['new'])}")
    if report.partial_types:
        lines.append(f"Partial types (never reported as removed): {', '.join(sorted(report.partial_types))}")
    lines.append(f"{count} alert{'s' if count != 1 else ''}." if count else "No alerts.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Query rules: questions to the graph store


@dataclass
class QueryAlertReport(RaisedAlerts):
    rules: RuleSet
    store: str  # the store's label (no password)
    now: int
    alerts: list[QuestionAlert] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def evaluate_query_rules(rules: RuleSet, store: Store, *, now: int | None = None) -> QueryAlertReport:
    """Ask ``store`` every query rule of ``rules`` (the diff rules are ignored): an alert for
    each rule whose condition holds. ``now`` (epoch ms, default: the current time) is
    ``date.now``. Raises StoreError when the store cannot be read."""
    from ..query.rules import QuestionAlert

    if now is None:
        now = int(time.time() * 1000)
    report = QueryAlertReport(rules, store.label, now)
    for rule in rules.query_rules:
        asked = rule.question.ask(store, now=now)
        if asked.fired:
            report.alerts.append(QuestionAlert(rule.name, rule.description, rule.question, asked))
    return report


def format_query_alerts(report: QueryAlertReport) -> str:
    """The text report of the query rules: each alert with (a sample of) what its queries found."""
    lines = [f"{report.rules.path}: store {report.store}, as of {iso(report.now)}"]
    for alert in report.alerts:
        lines.extend(alert.lines(ALERT_SAMPLE))
    count = len(report.alerts)
    lines.append(f"{count} alert{'s' if count != 1 else ''}." if count else "No alerts.")
    return "\n".join(lines)
