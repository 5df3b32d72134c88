"""Tools for mapping authors, built on run observers: preview, coverage and explain.

* :class:`Preview` keeps the requests, a sample of raw records and what was built from
  them, per step (``etl preview``).
* :class:`Coverage` compares the fields the API returned with the fields the mapping's
  expressions read, and finds properties that stayed empty for every record
  (``etl coverage``, ``etl run --coverage``).
* :class:`Explain` finds one entity or relationship and tells where it came from: step,
  request, page, record, and the expression behind each property (``etl explain``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jinja2.nodes
import jmespath

from ..lang.templates import ENVIRONMENT
from ..lang.values import Value
from ..pipeline.build import Built
from ..pipeline.check import entity_problems
from ..pipeline.load import LoadedMapping, format_path
from ..pipeline.plan import MappedRelationshipSpec, Plan, RelationshipSpec, Step
from ..pipeline.runner import Observer

# ----------------------------------------------------------------------------------------
# Preview


@dataclass
class StepSample:
    requests: list[str] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    entities: list[dict] = field(default_factory=list)
    relationships: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Preview(Observer):
    def __init__(self, limit: int):
        self.limit = limit
        self.steps: dict[str, StepSample] = {}

    def sample(self, step: Step) -> StepSample:
        return self.steps.setdefault(step.id, StepSample())

    def page(self, step, page, records, parent) -> None:
        retries = page.attempts - 1
        self.sample(step).requests.append(
            f"{step.request.method} {page.url} -> {page.status}, {len(records)} record(s)"
            + (f", {retries} retr{'y' if retries == 1 else 'ies'}" if retries else "")
            + (f" (for {parent['_key']})" if parent else "")
        )

    def record(self, step, position, record, built: Built) -> None:
        sample = self.sample(step)
        if len(sample.records) < self.limit:
            sample.records.append(record)
            sample.entities.extend(built.entities)
            sample.relationships.extend(built.relationships)
            sample.warnings.extend(built.warnings)

    def report(self, plan: Plan) -> str:
        lines = []
        for step in plan.steps:
            if step.id not in self.steps:
                continue
            sample = self.steps[step.id]
            lines.append(f"== step {step.id}: {step.name}")
            lines.append("requests:")
            lines.extend(f"  {r}" for r in sample.requests or ["(none: built from config)"])
            lines.append(f"records (first {len(sample.records)}):")
            lines.extend(f"  {_compact(r)}" for r in sample.records)
            lines.append(f"entities built from them ({len(sample.entities)}):")
            lines.extend(_indent(_without_raw(e)) for e in sample.entities)
            lines.append(f"relationships built from them ({len(sample.relationships)}):")
            lines.extend(_indent(r) for r in sample.relationships)
            if sample.warnings:
                lines.append("warnings:")
                lines.extend(f"  {w}" for w in sample.warnings)
            lines.append("")
        return "\n".join(lines).rstrip()


def _without_raw(entity: dict) -> dict:
    return {k: v for k, v in entity.items() if k != "_rawData"}


def _compact(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _indent(value: Any) -> str:
    return "\n".join("  " + line for line in json.dumps(value, indent=2, ensure_ascii=False).splitlines())


# ----------------------------------------------------------------------------------------
# Coverage


@dataclass
class StepCoverage:
    records: int = 0
    fields: Counter = field(default_factory=Counter)  # field path -> records having it (non-null)
    filled: Counter = field(default_factory=Counter)  # (entity index, property) -> entities having it
    built: Counter = field(default_factory=Counter)  # entity index -> entities built


class Coverage(Observer):
    def __init__(self):
        self.steps: dict[str, StepCoverage] = {}

    def record(self, step, position, record, built: Built) -> None:
        coverage = self.steps.setdefault(step.id, StepCoverage())
        coverage.records += 1
        coverage.fields.update(set(leaf_paths(record)))
        for index, spec in enumerate(step.entities):
            for entity in (e for e in built.entities if e["_type"] == spec.type):
                coverage.built[index] += 1
                for name, _ in spec.properties:
                    if entity.get(name) not in (None, "", []):
                        coverage.filled[(index, name)] += 1

    def report(self, plan: Plan) -> str:
        lines = []
        for step in plan.steps:
            coverage = self.steps.get(step.id)
            if coverage is None or step.request is None:
                continue
            used = referenced_paths(step)
            unused = sorted(p for p in coverage.fields if not _covered(p, used))
            empty = [
                (index, name, value)
                for index, spec in enumerate(step.entities)
                for name, value in spec.properties
                if coverage.built[index] and not coverage.filled[(index, name)]
            ]
            lines.append(
                f"== step {step.id}: {coverage.records} record(s), {len(coverage.fields)} field(s), "
                f"{len(coverage.fields) - len(unused)} read by the mapping"
            )
            lines.append("fields the API returned that no expression reads:")
            lines.extend(f"  {p}  ({coverage.fields[p]}/{coverage.records} records)" for p in unused)
            if not unused:
                lines.append("  (none)")
            lines.append("properties that were empty for every entity (a typo, or a field this API leaves out):")
            lines.extend(
                f"  entities[{i}].properties.{name}: {value.source}  (0/{coverage.built[i]})"
                for i, name, value in empty
            )
            if not empty:
                lines.append("  (none)")
            lines.append("")
        return "\n".join(lines).rstrip()


def leaf_paths(value: Any, prefix: str = "") -> Iterable[str]:
    """'a.b', 'a.c[]', 'd[].e' for every non-null leaf of a JSON value."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for child in value:
            yield from leaf_paths(child, f"{prefix}[]")
    elif value is not None and prefix:
        yield prefix


def _covered(path: str, used: set[str]) -> bool:
    return any(path == u or path.startswith(u + ".") or path.startswith(u + "[") for u in used if u)


def referenced_paths(step: Step) -> set[str]:
    """Record field paths the step's expressions and templates read (a static approximation)."""
    used: set[str] = set()
    root = frozenset({""})
    values: list[tuple[Value, frozenset[str]]] = [(step.records, root)]
    if step.filter is not None:
        values.append((step.filter, root))
    for spec in step.entities:
        bases = root
        if spec.for_each is not None:
            bases = frozenset(p + "[]" for p in _value_paths(spec.for_each, root, used))
        values.append((spec.key, bases))
        values.extend((v, bases) for _, v in (*spec.properties, *spec.tags))
        if spec.tags_from is not None:
            values.append((spec.tags_from, bases))
    relationship_specs: tuple[RelationshipSpec | MappedRelationshipSpec, ...] = (
        *step.relationships,
        *step.mapped_relationships,
    )
    for rule in relationship_specs:
        bases = root
        if rule.for_each is not None:
            bases = frozenset(p + "[]" for p in _value_paths(rule.for_each, root, used))
        values.extend((v, bases) for _, v in rule.properties)
        if isinstance(rule, MappedRelationshipSpec):
            values.extend((v, bases) for _, v in rule.target_properties)
        else:
            for end in (rule.source, rule.target):
                if end.key is not None:
                    values.append((end.key, bases))
    for value, bases in values:
        _value_paths(value, bases, used)
    used.discard("")
    return used


def _value_paths(value: Value, bases: frozenset[str], used: set[str]) -> set[str]:
    if value.kind == "jmespath":
        return _jmespath_paths(jmespath.compile(value.source).parsed, bases, used)
    if value.kind == "template":
        _template_paths(value.source, bases, used)
    return set()


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def _jmespath_paths(node: dict, bases: Iterable[str], used: set[str]) -> set[str]:
    """Walk a JMESPath AST abstractly: which field paths it reads, and which it yields."""
    kind, children = node["type"], node.get("children", [])
    bases = set(bases)
    if kind == "field":
        result = {_join(b, node["value"]) for b in bases}
        used.update(result)
        return result
    if kind in ("subexpression", "pipe"):
        return _jmespath_paths(children[1], _jmespath_paths(children[0], bases, used), used)
    if kind in ("index_expression", "flatten"):
        return {p if p.endswith("[]") else p + "[]" for p in _jmespath_paths(children[0], bases, used)}
    if kind in ("projection", "value_projection"):
        items = {p if p.endswith("[]") else p + "[]" for p in _jmespath_paths(children[0], bases, used)}
        return _jmespath_paths(children[1], items, used)
    if kind == "filter_projection":
        items = {p if p.endswith("[]") else p + "[]" for p in _jmespath_paths(children[0], bases, used)}
        _jmespath_paths(children[2], items, used)
        return _jmespath_paths(children[1], items, used)
    if kind == "function_expression":
        arguments = [c for c in children if c["type"] != "expref"]
        results = set()
        for argument in arguments:
            results |= _jmespath_paths(argument, bases, used)
        for expref in (c for c in children if c["type"] == "expref"):
            items = {p if p.endswith("[]") else p + "[]" for p in results} or bases
            _jmespath_paths(expref["children"][0], items, used)
        return set()
    if kind == "current":
        return bases
    results = set()
    for child in children:
        if isinstance(child, dict):
            results |= _jmespath_paths(child, bases, used)
    return results if kind in ("or_expression", "and_expression") else set()


def _template_paths(text: str, bases: frozenset[str], used: set[str]) -> None:
    tree = ENVIRONMENT.parse(text)
    for node in tree.find_all(jinja2.nodes.Getattr):
        chain = []
        current: jinja2.nodes.Expr = node
        while isinstance(current, jinja2.nodes.Getattr):
            chain.append(current.attr)
            current = current.node
        if isinstance(current, jinja2.nodes.Name) and current.name in ("record", "item"):
            path = ".".join(reversed(chain))
            roots = {""} if current.name == "record" else bases
            used.update(_join(b, path) for b in roots)


# ----------------------------------------------------------------------------------------
# Explain


@dataclass
class Found:
    step: Step
    position: object  # run.Position: str() gives step, page, URL and record number
    record: Any
    obj: dict
    spec_path: tuple
    spec: Any


class Explain(Observer):
    def __init__(self, key: str):
        self.key = key
        self.found: Found | None = None

    def record(self, step, position, record, built: Built) -> None:
        if self.found is not None:
            return
        for obj in (*built.entities, *built.relationships):
            if obj["_key"] == self.key:
                self.found = Found(step, position, record, obj, *self.locate_spec(step, obj))
                return

    @staticmethod
    def locate_spec(step: Step, obj: dict) -> tuple[tuple, Any]:
        for index, spec in enumerate(step.entities):
            if spec.type == obj["_type"] and "_fromEntityKey" not in obj and "_mapping" not in obj:
                return ("entities", index), spec
        kind = "mapped_relationships" if "_mapping" in obj else "relationships"
        for index, spec in enumerate(getattr(step, kind)):
            if spec.type == obj["_type"]:
                return (kind, index), spec
        return (), None

    def report(self, plan: Plan, loaded: LoadedMapping) -> str:
        found = self.found
        if found is None:
            return f"{self.key}: not built in this run (check the key, or run the step that builds it with --step)"
        step_index = next(i for i, s in enumerate(loaded.data["steps"]) if s["id"] == found.step.id)
        base = ("steps", step_index, *found.spec_path)
        where = loaded.source.locate(base)
        kind = "a relationship" if isinstance(found.obj["_class"], str) else "an entity"
        refused = entity_problems(found.obj) if kind == "an entity" else []
        lines = [
            f"{self.key}",
            f"  {kind} of type {found.obj['_type']}, built by step {found.step.id} ({found.step.name})",
            f"  from {found.position}",
            f"  by the rule at {where} ({format_path(base)})",
            "  property <- expression (mapping location)",
        ]
        if refused:
            lines.insert(2, f"  NOT WRITTEN: the graph checks refused it: {'; '.join(refused)}")
        for name, value in found.obj.items():
            if name == "_rawData":
                continue
            origin = _origin(name, found.spec, base, loaded, plan)
            lines.append(f"    {name} = {json.dumps(value, ensure_ascii=False)}  <- {origin}")
        lines.append("  the record:")
        lines.append(_indent(found.record))
        return "\n".join(lines)


def _raw_rule(loaded: LoadedMapping, base: tuple) -> dict:
    node: Any = loaded.data
    for part in base:
        node = node[part]
    return node


def _origin(name: str, spec: Any, base: tuple, loaded: LoadedMapping, plan: Plan) -> str:
    def at(*path: Any) -> str:
        full = base + path
        return f"{loaded.source.locate(full)} {format_path(full)}"

    pairs = dict(getattr(spec, "properties", ()))
    if name in pairs:
        return f"{pairs[name].source}  ({at('properties', name)})"
    if name == "_key" and hasattr(spec, "key"):
        return f"{spec.key.source}  ({at('key')})"
    relationship = hasattr(spec, "relationship_class")
    if name == "_class":
        return f"the rule's class  ({at('class')})"
    if name == "_type":
        written = "type" in _raw_rule(loaded, base)
        return (
            f"the rule's type  ({at('type')})"
            if written or not relationship
            else "derived from the classes and end types (JupiterOne's rule)"
        )
    if name == "_key" and relationship:
        return "<source key>|<class>|<target key> (JupiterOne's convention)"
    if name == "displayName":
        return "the class (JupiterOne's convention)" if relationship else "defaults to name"
    if name.startswith("tag."):
        tag = name[4:]
        if tag in dict(getattr(spec, "tags", ())):
            return f"{dict(spec.tags)[tag].source}  ({at('tags', tag)})"
        if tag in dict(plan.instance_tags):
            return f"{dict(plan.instance_tags)[tag].source}  ({loaded.source.locate(('tags', tag))} tags.{tag})"
        if getattr(spec, "tags_from", None) is not None:
            return f"tags_from: {spec.tags_from.source}  ({at('tags_from')})"
    if name == "tags" and getattr(spec, "tags_from", None) is not None:
        return f"tags_from (tags whose value is true or empty)  ({at('tags_from')})"
    if name in ("_fromEntityKey", "_toEntityKey"):
        end = spec.source if name == "_fromEntityKey" else spec.target
        detail = (
            end.key.source
            if end.key is not None
            else (f"the {end.type} built from the record" if end.mode == "record" else f"every {end.type}")
        )
        return f"{detail}  ({at('from' if name == '_fromEntityKey' else 'to')})"
    if name == "_mapping":
        return f"target, filter_keys, direction  ({at('target')})"
    return "the engine (JupiterOne relationship conventions)"
