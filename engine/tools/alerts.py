"""Alert rules over the difference between two runs.

A rules file is YAML::

    rules:
      - name: new-admin-user               # unique in the file
        description: A new user is an administrator   # optional
        on: added                          # added | removed | changed | became
        type: acme_user                    # the entity _type
        where: admin                       # optional JMESPath predicate

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
``--as-of`` (default: now). Every expression is compiled once, when the file is loaded.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

BECAME = "became"
KINDS = (ADDED, REMOVED, CHANGED, BECAME)
RULE_FIELDS = ("name", "description", "on", "type", "where")
REQUIRED_FIELDS = ("name", "on", "type")


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
class RuleSet:
    path: Path
    rules: tuple[Rule, ...]


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


def _check(data: Any, source: SourceMap, problems: list[Problem]) -> list[Rule]:
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
    rules: list[Rule] = []
    names: dict[str, int] = {}  # rule name -> index of the rule that has it
    for index, item in enumerate(data["rules"]):
        rule = _check_rule(index, item, source, problems)
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


@dataclass
class AlertReport:
    rules: RuleSet
    old: OutputDir
    new: OutputDir
    now: int
    old_now: int
    alerts: list[Alert] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a rule that could not be evaluated on an entity
    warnings: list[str] = field(default_factory=list)
    partial_types: frozenset[str] = frozenset()

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_RULE_FAILED
        return EXIT_ALERTS if self.alerts else EXIT_NO_ALERTS

    def to_json(self) -> list[dict]:
        return [alert.to_json() for alert in self.alerts]


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
    """The alerts ``rules`` raise for the change OLD -> NEW, evaluated with the clock ``now``
    (epoch ms, default: the current time; OLD's side of ``became`` rules with ``old_now``,
    default: :func:`default_old_clock`)."""
    old, new = OutputDir.open(old_path, "OLD"), OutputDir.open(new_path, "NEW")
    if now is None:
        now = int(time.time() * 1000)
    if old_now is None:
        old_now = default_old_clock(old, new, now)
    report = AlertReport(rules, old, new, now, old_now)
    by_event: dict[tuple[str, str], list[Rule]] = {}
    for rule in rules.rules:
        kinds = {ADDED: [ADDED], REMOVED: [REMOVED], CHANGED: [CHANGED], BECAME: [CHANGED, UNCHANGED]}[rule.on]
        for kind in kinds:
            by_event.setdefault((rule.type, kind), []).append(rule)
    options, old_options = jmespath_options(now=now), jmespath_options(now=old_now)
    wants_unchanged = any(rule.on == BECAME for rule in rules.rules)
    comparison = Comparison(old, new, unchanged=wants_unchanged)
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
    for rule in rules.rules:
        if rule.type not in seen_types:
            hint = did_you_mean(rule.type, seen_types)
            report.warnings.append(f"{rules.path}: {rule.label}: no entity of type '{rule.type}' in OLD or NEW{hint}")
    return report


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
