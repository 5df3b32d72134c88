"""Compiling a step's graph rules: entities, relationships and mapped relationships."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .. import datamodel
from ..errors import did_you_mean
from ..lang.template_checks import TEMPLATE_VARIABLES
from ..lang.values import Value
from .compile_values import ValueCompiler
from .load import PathT, mapping_schema
from .plan import Endpoint, EntitySpec, MappedRelationshipSpec, RelationshipSpec


@lru_cache(maxsize=1)
def _type_rule() -> tuple[re.Pattern[str], str]:
    """What an entity ``_type`` must look like, as the schema says (its pattern and hint):
    relationship types and the target types of mapped relationships are held to it too."""
    spec = mapping_schema()["definitions"]["entity"]["properties"]["type"]
    return re.compile(spec["pattern"]), spec.get("x-hint", f"it must match {spec['pattern']}")


def type_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot be a ``_type`` (None when it can), with the identifier it
    most likely meant."""
    pattern, hint = _type_rule()
    if isinstance(value, str) and pattern.fullmatch(value):  # all of it: '$' also matches before a last newline
        return None
    text = str(value)
    shown = repr(text) if not text.isprintable() else f"'{text}'"
    meant = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    suggestion = f" (did you mean '{meant}'?)" if pattern.fullmatch(meant) else ""
    return f"{shown} is not a valid {what}: {hint}{suggestion}"


# Entity properties a ``tags_from`` map may set besides tags (build.assign_tags: a tag named
# Name sets name; Classification, Owner and Email set those properties).
TAGS_FROM_SETS = frozenset({"name", "classification", "owner", "email"})
_NOT_LITERAL = object()  # a property whose value is an expression or a template: known at run time


def required_properties(classes: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], str]]:
    """What the graph checks require of an entity of ``classes`` (as ``check.py`` merges them:
    every entity's, then each class's in order): property -> (allowed JSON types, who requires it)."""
    required = {name: (allowed, "every JupiterOne entity") for name, allowed in datamodel.ENTITY_REQUIRED.items()}
    for class_name in classes:
        for name, allowed in datamodel.CLASS_REQUIRED.get(class_name, {}).items():
            required[name] = (allowed, f"the class {class_name}")
    return required


def _literal(raw: Any) -> Any:
    """The value of a property written as a literal (``{value: x}``, a number, a boolean,
    null, a list), or ``_NOT_LITERAL`` for an expression or a template."""
    if isinstance(raw, dict) and len(raw) == 1 and "value" in raw:
        return raw["value"]
    if isinstance(raw, (str, dict)):
        return _NOT_LITERAL
    return raw


class RuleCompiler(ValueCompiler):
    """Compiles the entity and relationship rules of the step being compiled."""

    def scope_for(self, step_spec: dict, rule_spec: dict | None = None) -> frozenset[str]:
        """Template variables of a rule: ``parent`` and ``ancestors`` only in fan-out steps,
        ``account`` only where the records can have one, ``item`` only under for_each."""
        variables = set(TEMPLATE_VARIABLES) | {"ancestors", "account"}
        if "for_each" not in step_spec:
            variables -= {"parent", "ancestors"}
        if not self.lineage(step_spec.get("id", ""))[1]:
            variables.discard("account")
        if rule_spec is None or "for_each" not in rule_spec:
            variables.discard("item")
        return frozenset(variables)

    def lineage(self, step_id: str) -> tuple[frozenset[str], bool]:
        """What the records of a step can have been fetched for: the entity types its
        ``ancestors`` can hold, and whether they can have an ``account``."""
        cache = self.__dict__.setdefault("_lineages", {})
        if step_id not in cache:
            cache[step_id] = step_lineage(self.data, step_id)
        return cache[step_id]

    def check_fan_out_type(self, entity_type: str, path: PathT, spec: dict, declared_types: dict) -> None:
        """A type a step runs once per entity of (``for_each``, ``accounts: {type}``) must be
        built by a step it depends on."""
        owners = declared_types.get(entity_type)
        if owners is None:
            self.problem(path, f"unknown entity type '{entity_type}'{did_you_mean(entity_type, declared_types)}")
        elif not set(owners) & ancestors(self.data, spec["id"]) and self.dependencies_known(spec["id"]):
            self.problem(
                path,
                f"'{entity_type}' is built by step '{owners[0]}', which "
                f"this step does not depend on; add it to depends_on",
            )

    def entity(self, spec: dict, path: PathT) -> EntitySpec | None:
        self.variables = self.scope_for(self.current_step, spec)
        problem = type_problem(spec["type"], "entity _type")  # the schema's pattern lets "acme_user\n" by
        if problem:
            self.problem(path + ("type",), problem)
        classes = (spec["class"],) if isinstance(spec["class"], str) else tuple(spec["class"])
        for c_index, name in enumerate(classes):
            if name not in datamodel.ENTITY_CLASSES:
                where = path + ("class",) if isinstance(spec["class"], str) else path + ("class", c_index)
                self.problem(where, f"unknown JupiterOne class '{name}'{did_you_mean(name, datamodel.ENTITY_CLASSES)}")
        key = self.template(spec["key"], path + ("key",))
        for_each = self.for_each(spec, path)
        properties = self.value_map(spec.get("properties"), path + ("properties",))
        tags = self.value_map(spec.get("tags"), path + ("tags",))
        tags_from = self.expression(spec["tags_from"], path + ("tags_from",)) if "tags_from" in spec else None
        self.check_required_properties(spec, classes, path)
        if key is None:
            return None
        return EntitySpec(
            resource=spec.get("resource", spec["type"]),
            type=spec["type"],
            classes=classes,
            for_each=for_each,
            key=key,
            properties=properties,
            tags=tags,
            tags_from=tags_from,
            raw_data=spec.get("raw_data", True),
            partial=spec.get("partial", False),
            duplicates=spec.get("duplicates", "keep-first"),
        )

    def check_required_properties(self, spec: dict, classes: tuple[str, ...], path: PathT) -> None:
        """The data-model properties the graph checks require (``check.entity_problems``) that
        this rule never sets, or sets to a literal null: every entity it built would be refused
        at run time, so it is a problem now. ``displayName`` defaults to ``name``, and
        ``tags_from`` may set ``name``, as the builder does."""
        written = spec.get("properties") or {}
        settable = set(map(str, written)) | (TAGS_FROM_SETS if "tags_from" in spec else set())
        for name, (allowed, owner) in required_properties(classes).items():
            if "null" in allowed or name == "displayName":  # a missing name is the one problem
                continue
            if name not in settable:
                self.problem(
                    path + ("properties",) if "properties" in spec else path,
                    f"{owner} requires the property '{name}', and this rule never sets it: every entity it "
                    f"builds would be refused. Add '{name}' under properties",
                )
            elif name in written and _literal(written[name]) is None:
                self.problem(
                    path + ("properties", name),
                    f"{owner} requires the property '{name}', and this rule sets it to null: every entity it "
                    f"builds would be refused",
                )

    def dependencies_known(self, step_id: str) -> bool:
        """False when some (indirect) dependency of the step is not a step: that is
        reported already, and what the step can see is then unknown."""
        ids = {s["id"] for s in self.data["steps"]}
        return ancestors(self.data, step_id) <= ids

    def endpoint(self, raw: Any, path: PathT, record_types: set[str], declared_types: dict) -> Endpoint | None:
        if isinstance(raw, str):
            if raw not in record_types:
                where = "this step's entities" if record_types else "this step (it builds no entities)"
                if raw in self.for_each_types:
                    self.problem(
                        path,
                        f"'{raw}' is built with for_each (many per record); name one of them "
                        f"with {{type: {raw}, key: ...}}",
                    )
                elif raw in declared_types:
                    self.problem(
                        path,
                        f"'{raw}' is built by another step; name one of its entities with "
                        f"{{type: {raw}, key: ...}} (or every one with {{type: {raw}}})",
                    )
                else:
                    self.problem(
                        path, f"'{raw}' is not an entity type built in {where}{did_you_mean(raw, record_types)}"
                    )
                return None
            return Endpoint("record", raw)
        entity_type = raw["type"]
        if entity_type not in declared_types:
            self.problem(
                path + ("type",), f"unknown entity type '{entity_type}'{did_you_mean(entity_type, declared_types)}"
            )
            return None
        owners = declared_types[entity_type]
        step_id = self.data["steps"][path[1]]["id"]
        if not set(owners) & (ancestors(self.data, step_id) | {step_id}) and self.dependencies_known(step_id):
            self.problem(
                path + ("type",),
                f"'{entity_type}' is built by step '{owners[0]}', which this step "
                f"does not depend on; add it to depends_on",
            )
            return None
        if "key" in raw:
            key = self.template(raw["key"], path + ("key",))
            return None if key is None else Endpoint("key", entity_type, key)
        return Endpoint("type", entity_type)

    def for_each(self, spec: dict, path: PathT) -> Value | None:
        return self.expression(spec["for_each"], path + ("for_each",)) if "for_each" in spec else None

    def relationship(
        self, spec: dict, path: PathT, record_types: set[str], declared_types: dict
    ) -> RelationshipSpec | None:
        self.variables = self.scope_for(self.current_step, spec)
        source = self.endpoint(spec["from"], path + ("from",), record_types, declared_types)
        target = self.endpoint(spec["to"], path + ("to",), record_types, declared_types)
        properties = self.value_map(spec.get("properties"), path + ("properties",))
        for_each = self.for_each(spec, path)
        if "type" in spec:
            problem = type_problem(spec["type"], "relationship _type")
            if problem:
                self.problem(path + ("type",), problem)
        if source is None or target is None:
            return None
        rel_class = spec["class"]
        return RelationshipSpec(
            relationship_class=rel_class,
            type=spec.get("type") or datamodel.relationship_type(rel_class, source.type, target.type),
            source=source,
            target=target,
            properties=properties,
            for_each=for_each,
            partial=spec.get("partial", False),
        )

    def mapped_relationship(self, spec: dict, path: PathT, record_types: set[str]) -> MappedRelationshipSpec | None:
        self.variables = self.scope_for(self.current_step, spec)
        source_type = spec["source"]
        if source_type not in record_types:
            self.problem(
                path + ("source",),
                f"'{source_type}' is not an entity type built in this step{did_you_mean(source_type, record_types)}",
            )
        target = spec["target"]
        target_type = target.get("type")
        target_class = target.get("class")
        if target_class is not None and target_class not in datamodel.ENTITY_CLASSES:
            self.problem(
                path + ("target", "class"),
                f"unknown JupiterOne class '{target_class}'{did_you_mean(target_class, datamodel.ENTITY_CLASSES)}",
            )
        if target_type is not None and (problem := type_problem(target_type, "target _type")):
            self.problem(path + ("target", "type"), problem)
        rel_type = spec.get("type")
        if rel_type is not None and (problem := type_problem(rel_type, "relationship _type")):
            self.problem(path + ("type",), problem)
        if rel_type is None:
            if target_type is None:
                self.problem(path, "give the relationship a 'type', or the target a 'type' to derive it from")
                return None
            rel_type = datamodel.relationship_type(spec["class"], "mapping_source", target_type)
        target_properties = self.value_map(target.get("properties"), path + ("target", "properties"))
        known_target_keys = {name for name, _ in target_properties}
        known_target_keys |= {"_type"} if target_type else set()
        known_target_keys |= {"_class"} if target_class else set()
        filter_keys = tuple(tuple(group) for group in spec.get("filter_keys") or [["_type", "_key"]])
        missing_default = [k for k in ("_type", "_key") if k not in known_target_keys]
        if "filter_keys" not in spec and missing_default:
            self.problem(
                path,
                f"filter_keys defaults to [[_type, _key]], but the target has no "
                f"{' and no '.join(missing_default)}; declare filter_keys (e.g. [[_class, email]])",
            )
            filter_keys = ()
        for g_index, group in enumerate(filter_keys):
            for k_index, name in enumerate(group):
                if name not in known_target_keys:
                    self.problem(
                        path + ("filter_keys", g_index, k_index),
                        f"filter key '{name}' is not a property of the target{did_you_mean(name, known_target_keys)}",
                    )
        properties = self.value_map(spec.get("properties"), path + ("properties",))
        for_each = self.for_each(spec, path)
        if source_type not in record_types:
            return None
        return MappedRelationshipSpec(
            relationship_class=spec["class"],
            type=rel_type,
            source_type=source_type,
            direction=spec.get("direction", "FORWARD"),
            target_type=target_type,
            target_class=target_class,
            target_properties=target_properties,
            filter_keys=filter_keys,
            skip_target_creation=spec.get("skip_target_creation"),
            properties=properties,
            for_each=for_each,
            partial=spec.get("partial", False),
        )


def step_lineage(data: dict, step_id: str) -> tuple[frozenset[str], bool]:
    """The entity types the ``ancestors`` of a step's records can hold, and whether the records
    can have an ``account``: a step with ``accounts`` has one; a fan-out step's records have
    its ``for_each`` type as an ancestor, and what the records that type's entities were built
    from had (of any step that builds it)."""
    steps: dict[str, dict] = {s["id"]: s for s in data["steps"]}
    owners: dict[str, list[str]] = {}
    for owner_id, owner in steps.items():
        for entity in owner.get("entities") or ():
            owners.setdefault(entity["type"], []).append(owner_id)

    def walk(current: str, seen: frozenset[str]) -> tuple[frozenset[str], bool]:
        spec = steps.get(current) or {}
        parent_type = spec.get("for_each")
        has_account = "accounts" in spec
        if not isinstance(parent_type, str) or current in seen:
            return frozenset(), has_account
        types = {parent_type}
        for owner in owners.get(parent_type, ()):
            found, account = walk(owner, seen | {current})
            types |= found
            has_account = has_account or account
        return frozenset(types), has_account

    return walk(step_id, frozenset())


def ancestors(data: dict, step_id: str) -> set[str]:
    """Every step ``step_id`` depends on, directly or not (as written; cycles are reported elsewhere)."""
    depends = {s["id"]: s.get("depends_on") or [] for s in data["steps"]}
    seen: set[str] = set()
    pending = list(depends.get(step_id, []))
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(depends.get(current, []))
    return seen
