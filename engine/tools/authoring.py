"""Tools for mapping authors, built on run observers: preview, coverage and explain.

* :class:`Preview` keeps the requests, a sample of raw records and what was built from
  them, per step (``etl preview``).
* :class:`Coverage` compares the fields the API returned with the fields the mapping's
  expressions read, and finds properties that stayed empty for every record
  (``etl coverage``, ``etl run --coverage``).
* :class:`Explain` finds one entity or relationship and tells where it came from: step,
  request, page, record, the rule (and ``for_each`` item) that built it, and the expression
  behind each property (``etl explain``).

Their reports stand in for ``etl run``'s summary, so each also shows what the run said about
each step (:func:`run_messages`): errors, warnings and the graph checks' notes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import jinja2.nodes
import jmespath

from ..lang.template_environment import ENVIRONMENT
from ..lang.values import Value, literal
from ..pipeline.build import ROOT, Built, GraphBuilder, Lineage
from ..pipeline.check import entity_problems
from ..pipeline.load import LoadedMapping, format_path
from ..pipeline.observer import Observer
from ..pipeline.plan import EntitySpec, MappedRelationshipSpec, Plan, RelationshipSpec, Step
from ..pipeline.results import DISABLED, RunResult, StepResult

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

    def page(self, step, page, records, lineage: Lineage) -> None:
        for_what = lineage.describe()
        self.sample(step).requests.append(
            f"{step.request.method} {page.url} -> {page.status}, {len(records)} record(s)"
            + _retries(page)
            + (f" ({for_what})" if for_what else "")
        )

    def detail(self, step, page, position) -> None:
        self.sample(step).requests.append(
            f"{step.detail.request.method} {page.url} -> {page.status}{_retries(page)} (detail of {position})"
        )

    def record(self, step, position, record, built: Built, lineage: Lineage = ROOT) -> None:
        sample = self.sample(step)
        if len(sample.records) < self.limit:
            sample.records.append(record)
            sample.entities.extend(built.entities)
            sample.relationships.extend(built.relationships)
            sample.warnings.extend(built.warnings)

    def report(self, plan: Plan, result: RunResult | None = None) -> str:
        """Each step that ran: its requests, sample and what was built, then what the run said
        about it (``result``: errors, warnings, the graph checks' notes; without it, the
        warnings of the sampled records)."""
        lines = []
        for step in plan.steps:
            if step.id not in self.steps and not _ran(step, result):
                continue
            sample = self.steps.get(step.id, StepSample())
            lines.append(f"== step {step.id}: {step.name}")
            lines.append("requests:")
            lines.extend(f"  {r}" for r in sample.requests or [_no_requests(step)])
            lines.append(f"records (first {len(sample.records)}):")
            lines.extend(f"  {_compact(r)}" for r in sample.records)
            lines.append(f"entities built from them ({len(sample.entities)}):")
            lines.extend(_indent(_without_raw(e)) for e in sample.entities)
            lines.append(f"relationships built from them ({len(sample.relationships)}):")
            lines.extend(_indent(r) for r in sample.relationships)
            said = run_messages(step, result) if result is not None else [f"warning: {w}" for w in sample.warnings]
            if said:
                lines.append("warnings and errors:")
                lines.extend(f"  {line}" for line in said)
            lines.append("")
        return "\n".join(lines).rstrip()


def _retries(page) -> str:
    retries = page.attempts - 1
    return f", {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""


def _no_requests(step: Step) -> str:
    return "(none: built from config)" if step.request is None else "(none answered)"


def _step_result(step: Step, result: RunResult | None) -> StepResult | None:
    if result is None:
        return None
    return next((r for r in result.steps if r.step.id == step.id), None)


def _ran(step: Step, result: RunResult | None) -> bool:
    """Whether ``step`` was run (not left out by --step, nor switched off by its ``when``)."""
    step_result = _step_result(step, result)
    return step_result is not None and step_result.status != DISABLED


def run_messages(step: Step, result: RunResult | None) -> list[str]:
    """What the run said about ``step`` - its errors and warnings, and the graph checks' notes
    on its types - as ``etl run``'s summary tells them, for the tools that print a report
    instead of that summary."""
    step_result = _step_result(step, result)
    if result is None or step_result is None:
        return []
    lines = [f"error: {error}" for error in step_result.errors]
    lines.extend(f"warning: {warning}" for warning in step_result.warnings)
    untold = step_result.warning_count - len(step_result.warnings)
    if untold:
        lines.append(f"(and {untold} more warning(s); -vv logs every one)")
    types = set(step.declared_types)
    lines.extend(f"note: {note}" for note in result.graph_notes if note.split(": ", 1)[0] in types)
    return lines


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

    def page(self, step, page, records, lineage) -> None:
        self.steps.setdefault(step.id, StepCoverage())  # a step whose pages held no records is reported too

    def record(self, step, position, record, built: Built, lineage: Lineage = ROOT) -> None:
        coverage = self.steps.setdefault(step.id, StepCoverage())
        coverage.records += 1
        coverage.fields.update(set(leaf_paths(record)))
        for index, spec in enumerate(step.entities):
            for entity in (e for e in built.entities if e["_type"] == spec.type):
                coverage.built[index] += 1
                for name, _ in spec.properties:
                    if entity.get(name) not in (None, "", []):
                        coverage.filled[(index, name)] += 1

    def report(self, plan: Plan, result: RunResult | None = None) -> str:
        """Each step with a request that ran, even one that received no records; with
        ``result`` (when no run summary is printed), what the run said about each step too."""
        lines = []
        for step in plan.steps:
            if step.request is None or (step.id not in self.steps and not _ran(step, result)):
                continue
            coverage = self.steps.get(step.id, StepCoverage())
            if coverage.records:
                lines.extend(self.step_report(step, coverage))
            else:
                lines.append(f"== step {step.id}: 0 records: no API fields to compare")
            said = run_messages(step, result)
            if said:
                lines.append("warnings and errors:")
                lines.extend(f"  {line}" for line in said)
            lines.append("")
        return "\n".join(lines).rstrip()

    @staticmethod
    def step_report(step: Step, coverage: StepCoverage) -> list[str]:
        used = referenced_paths(step)
        unused = sorted(p for p in coverage.fields if not _covered(p, used))
        empty = [
            (index, name, value)
            for index, spec in enumerate(step.entities)
            for name, value in spec.properties
            if coverage.built[index] and not coverage.filled[(index, name)]
        ]
        lines = [
            f"== step {step.id}: {coverage.records} record(s), {len(coverage.fields)} field(s), "
            f"{len(coverage.fields) - len(unused)} read by the mapping",
            "fields the API returned that no expression reads:",
        ]
        lines.extend(f"  {p}  ({coverage.fields[p]}/{coverage.records} records)" for p in unused)
        if not unused:
            lines.append("  (none)")
        lines.append("properties that were empty for every entity (a typo, or a field this API leaves out):")
        lines.extend(
            f"  entities[{i}].properties.{name}: {value.source}  (0/{coverage.built[i]})" for i, name, value in empty
        )
        if not empty:
            lines.append("  (none)")
        return lines


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


RuleSpec: TypeAlias = EntitySpec | RelationshipSpec | MappedRelationshipSpec


@dataclass(frozen=True)
class Rule:
    """The rule of a step that built an object: ``kind`` (entities, relationships,
    mapped_relationships) and ``index`` place it in the step; ``item`` is the number of the
    ``for_each`` item it was built for (0-based; None without for_each), ``item_value`` that item."""

    kind: str
    index: int
    spec: RuleSpec
    item: int | None = None
    item_value: Any = None

    @property
    def path(self) -> tuple:
        return (self.kind, self.index)


@dataclass
class Found:
    step: Step
    position: object  # run.Position: str() gives step, page, URL and record number
    record: Any
    obj: dict
    rule: Rule | None


class Explain(Observer):
    def __init__(self, key: str):
        self.key = key
        self.found: Found | None = None
        self.builder: GraphBuilder | None = None  # the current step's

    def step_started(self, step: Step, builder: GraphBuilder) -> None:
        self.builder = builder

    def record(self, step, position, record, built: Built, lineage: Lineage = ROOT) -> None:
        if self.found is not None:
            return
        for obj in (*built.entities, *built.relationships):
            if obj["_key"] == self.key:
                self.found = Found(step, position, record, obj, self.locate_spec(step, obj, record, lineage))
                return

    def locate_spec(self, step: Step, obj: dict, record: Any = None, lineage: Lineage = ROOT) -> Rule | None:
        """The rule that built ``obj`` from ``record``: of the step's rules of its kind and
        type, the first that builds an object with its key when the record is built again
        with that rule alone (the run is where it was: nothing of the record is checked or
        written yet), and the ``for_each`` item it was built for. Without a builder (or if
        no rule builds it again), the first rule of its kind and type."""
        candidates = _candidates(step, obj)
        if self.builder is not None:
            for rule in candidates:
                if self.builds(step, rule, record, lineage):
                    return self.with_item(step, rule, record, lineage)
        return candidates[0] if candidates else None

    def builds(self, step: Step, rule: Rule, record: Any, lineage: Lineage) -> bool:
        """Whether ``rule`` alone builds an object with the key explained from ``record``."""
        assert self.builder is not None
        built = _builder_like(self.builder, _step_with(step, rule)).build(record, step.id, lineage)
        made = built.entities if rule.kind == "entities" else built.relationships
        return any(obj["_key"] == self.key for obj in made)

    def with_item(self, step: Step, rule: Rule, record: Any, lineage: Lineage) -> Rule:
        """``rule`` with the ``for_each`` item that builds the key (each item built alone)."""
        if rule.spec.for_each is None:
            return rule
        assert self.builder is not None
        try:
            items = rule.spec.for_each.evaluate(self.builder.scope(record, lineage))
        except Exception:  # the build warned about it already; the rule is known anyway
            return rule
        for number, item in enumerate(_as_items(items)):
            alone = replace(rule, spec=replace(rule.spec, for_each=literal([item])))
            if self.builds(step, alone, record, lineage):
                return replace(rule, item=number, item_value=item)
        return rule

    def report(self, plan: Plan, loaded: LoadedMapping, result: RunResult | None = None) -> str:
        found = self.found
        if found is None:
            return self.not_found(plan, result)
        step_index = next(i for i, s in enumerate(loaded.data["steps"]) if s["id"] == found.step.id)
        rule = found.rule
        base = ("steps", step_index, *(rule.path if rule is not None else ()))
        where = loaded.source.locate(base)
        kind = "a relationship" if isinstance(found.obj["_class"], str) else "an entity"
        refused = entity_problems(found.obj) if kind == "an entity" else []
        item = f", for_each item {rule.item}" if rule is not None and rule.item is not None else ""
        lines = [
            f"{self.key}",
            f"  {kind} of type {found.obj['_type']}, built by step {found.step.id} ({found.step.name})",
            f"  from {found.position}",
            f"  by the rule at {where} ({format_path(base)}){item}",
            "  property <- expression (mapping location)",
        ]
        if refused:
            lines.insert(2, f"  NOT WRITTEN: the graph checks refused it: {'; '.join(refused)}")
        for name, value in found.obj.items():
            if name == "_rawData":
                continue
            origin = _origin(name, rule.spec if rule is not None else None, base, loaded, plan)
            lines.append(f"    {name} = {json.dumps(value, ensure_ascii=False)}  <- {origin}")
        if rule is not None and rule.item is not None:
            lines.append(f"  the for_each item ({rule.spec.for_each.source if rule.spec.for_each else ''}):")
            lines.append(_indent(rule.item_value))
        lines.append("  the record:")
        lines.append(_indent(found.record))
        return "\n".join(lines)

    def not_found(self, plan: Plan, result: RunResult | None) -> str:
        """The key was not built; steps that failed may be why."""
        lines = [f"{self.key}: not built in this run (check the key, or run the step that builds it with --step)"]
        for step in plan.steps:
            step_result = _step_result(step, result)
            if step_result is not None and step_result.error:
                lines.append(f"  step {step.id} did not succeed ({step_result.status}): {step_result.error}")
        return "\n".join(lines)


def _as_items(found: Any) -> list:
    """What ``for_each`` found, as the builder takes it: null is no item, a non-list one item."""
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def _candidates(step: Step, obj: dict) -> list[Rule]:
    """The step's rules that build objects of ``obj``'s kind and type, in the order they run."""
    if isinstance(obj["_class"], list):
        kind = "entities"
    elif "_mapping" in obj:
        kind = "mapped_relationships"
    else:
        kind = "relationships"
    specs: tuple[RuleSpec, ...] = getattr(step, kind)
    return [Rule(kind, index, spec) for index, spec in enumerate(specs) if spec.type == obj["_type"]]


def _step_with(step: Step, rule: Rule) -> Step:
    """``step`` with ``rule`` as its only rule of graph objects (and, for a relationship
    rule, the step's entity rules, whose entities its endpoints name)."""
    if rule.kind == "entities":
        assert isinstance(rule.spec, EntitySpec)
        return replace(step, entities=(rule.spec,), relationships=(), mapped_relationships=())
    if rule.kind == "relationships":
        assert isinstance(rule.spec, RelationshipSpec)
        return replace(step, relationships=(rule.spec,), mapped_relationships=())
    assert isinstance(rule.spec, MappedRelationshipSpec)
    return replace(step, relationships=(), mapped_relationships=(rule.spec,))


def _builder_like(builder: GraphBuilder, step: Step) -> GraphBuilder:
    """A builder of ``step`` seeing what ``builder`` sees (config, functions, keys, clock).
    Instance tags are left out: they never make a key."""
    return GraphBuilder(
        step, config=builder.config, options=builder.options, index=builder.index, instance_tags={}, now=builder.now
    )


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
