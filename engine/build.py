"""Stage 5: build JupiterOne entities and relationships from one record.

The builder is pure: it reads the record, the config and the keys collected so far,
and returns graph objects plus per-record warnings. It never raises for bad data:
a value that cannot be computed becomes a warning naming the record and the field,
and the rest of the record is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jinja2

from .expressions import Scope, Value, ValueProblem
from .plan import EntitySpec, Endpoint, MappedRelationshipSpec, RelationshipSpec, Step


@dataclass
class Built:
    """What one record produced."""

    entities: list[dict] = field(default_factory=list)
    relationships: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped_types: set[str] = field(default_factory=set)  # entity types this record failed to build


class KeyIndex:
    """Every entity key accepted so far, with its type: what relationships resolve against."""

    def __init__(self) -> None:
        self.type_of: dict[str, str] = {}
        self.keys_by_type: dict[str, list[str]] = {}

    def add(self, key: str, entity_type: str) -> None:
        self.type_of[key] = entity_type
        self.keys_by_type.setdefault(entity_type, []).append(key)

    def __contains__(self, key: str) -> bool:
        return key in self.type_of


class GraphBuilder:
    def __init__(self, step: Step, *, config: Mapping[str, Any], options, index: KeyIndex,
                 instance_tags: dict[str, Any], now: int):
        self.step = step
        self.config = config
        self.options = options
        self.index = index
        self.instance_tags = instance_tags
        self.now = now

    def scope(self, record: Any, parent: Any = None) -> Scope:
        variables = {"record": record, "config": self.config, "parent": parent, "now": self.now}
        return Scope(record, variables, self.options)

    def build(self, record: Any, position: str, parent: Any = None) -> Built:
        built = Built()
        scope = self.scope(record, parent)
        keys_by_type: dict[str, str] = {}  # the entity of each (non-for_each) type this record built
        for index, spec in enumerate(self.step.entities):
            where = f"{position}: entities[{index}]"
            if spec.for_each is None:
                entity = self.entity(spec, record, scope, where, built.warnings)
                if entity is None:
                    built.skipped_types.add(spec.type)
                else:
                    built.entities.append(entity)
                    keys_by_type[spec.type] = entity["_key"]
                continue
            for number, item_scope in enumerate(self.item_scopes(spec.for_each, scope, where, built.warnings)):
                entity = self.entity(spec, item_scope.root, item_scope, f"{where} item {number}", built.warnings)
                if entity is None:
                    built.skipped_types.add(spec.type)
                else:
                    built.entities.append(entity)
        for index, spec in enumerate(self.step.relationships):
            where = f"{position}: relationships[{index}]"
            built.relationships.extend(self.relationships(spec, scope, keys_by_type, where, built.warnings))
        for index, spec in enumerate(self.step.mapped_relationships):
            where = f"{position}: mapped_relationships[{index}]"
            built.relationships.extend(self.mapped(spec, scope, keys_by_type, where, built.warnings))
        return built

    # -- entities ------------------------------------------------------------------------

    def entity(self, spec: EntitySpec, record: Any, scope: Scope, where: str, warnings: list[str]) -> dict | None:
        key = as_key(evaluate(spec.key, scope, f"{where}.key", warnings))
        if key is None:
            return None
        if not key:
            warnings.append(f"{where}.key: the key is {key!r}, not a non-empty string; entity skipped")
            return None
        entity: dict[str, Any] = {"_key": key, "_type": spec.type, "_class": list(spec.classes)}
        for name, value in spec.properties:
            result = property_value(evaluate(value, scope, f"{where}.properties.{name}", warnings),
                                    f"{where}.properties.{name}", warnings)
            if result is not None:
                entity[name] = result
        if "displayName" not in entity and isinstance(entity.get("name"), str):
            entity["displayName"] = entity["name"]
        for name, value in self.instance_tags.items():
            entity[f"tag.{name}"] = value
        for name, value in spec.tags:
            result = property_value(evaluate(value, scope, f"{where}.tags.{name}", warnings),
                                    f"{where}.tags.{name}", warnings)
            if result is not None:
                entity[f"tag.{name}"] = result
        if spec.tags_from is not None:
            tags = evaluate(spec.tags_from, scope, f"{where}.tags_from", warnings)
            if tags is not None:
                if isinstance(tags, dict):
                    assign_tags(entity, tags, display_name_set=any(n == "displayName" for n, _ in spec.properties))
                else:
                    warnings.append(f"{where}.tags_from: expected an object of tag names to values, "
                                    f"got {type(tags).__name__}")
        if spec.raw_data:
            entity["_rawData"] = [{"name": "default", "rawData": record}]
        return entity

    # -- direct relationships --------------------------------------------------------------

    def relationships(self, spec: RelationshipSpec, scope: Scope, keys_by_type: dict[str, str],
                      where: str, warnings: list[str]) -> Iterable[dict]:
        for item_scope in self.item_scopes(spec.for_each, scope, where, warnings):
            sources = self.endpoint_keys(spec.source, item_scope, keys_by_type, f"{where}.from", warnings)
            targets = self.endpoint_keys(spec.target, item_scope, keys_by_type, f"{where}.to", warnings)
            for source_key in sources:
                for target_key in targets:
                    relationship = {
                        "_key": f"{source_key}|{spec.relationship_class.lower()}|{target_key}",
                        "_type": spec.type,
                        "_class": spec.relationship_class,
                        "_fromEntityKey": source_key,
                        "_toEntityKey": target_key,
                        "displayName": spec.relationship_class,
                    }
                    relationship.update(self.relationship_properties(spec.properties, item_scope, where, warnings))
                    yield relationship

    def endpoint_keys(self, endpoint: Endpoint, scope: Scope, keys_by_type: dict[str, str], where: str,
                      warnings: list[str]) -> list[str]:
        if endpoint.mode == "record":
            key = keys_by_type.get(endpoint.type)
            return [key] if key is not None else []
        if endpoint.mode == "type":
            return list(self.index.keys_by_type.get(endpoint.type, ()))
        key = as_key(evaluate(endpoint.key, scope, f"{where}.key", warnings))
        return [key] if key else []

    def relationship_properties(self, pairs, scope: Scope, where: str, warnings: list[str]) -> dict:
        out = {}
        for name, value in pairs:
            result = evaluate(value, scope, f"{where}.properties.{name}", warnings)
            if result is None:
                continue
            if isinstance(result, (dict, list)):
                warnings.append(f"{where}.properties.{name}: relationship properties must be primitive, "
                                f"got {type(result).__name__}; dropped")
                continue
            out[name] = result
        return out

    def item_scopes(self, for_each: Value | None, scope: Scope, where: str, warnings: list[str]) -> Iterable[Scope]:
        """The scope itself, or one scope per item of ``for_each`` (JMESPath root = the item)."""
        if for_each is None:
            yield scope
            return
        items = evaluate(for_each, scope, f"{where}.for_each", warnings)
        if items is None:
            return
        if not isinstance(items, list):
            items = [items]
        for item in items:
            yield Scope(item, {**scope.variables, "item": item}, scope.options)

    # -- mapped relationships --------------------------------------------------------------

    def mapped(self, spec: MappedRelationshipSpec, scope: Scope, keys_by_type: dict[str, str], where: str,
               warnings: list[str]) -> Iterable[dict]:
        source_key = keys_by_type.get(spec.source_type)
        if source_key is None:
            return
        for item_scope in self.item_scopes(spec.for_each, scope, where, warnings):
            target: dict[str, Any] = {}
            if spec.target_type:
                target["_type"] = spec.target_type
            if spec.target_class:
                target["_class"] = spec.target_class
            for name, value in spec.target_properties:
                result = property_value(evaluate(value, item_scope, f"{where}.target.properties.{name}", warnings),
                                        f"{where}.target.properties.{name}", warnings)
                if result is not None:
                    target[name] = result
            missing = [k for group in spec.filter_keys for k in group if k not in target]
            if missing:
                warnings.append(f"{where}: target has no value for filter key '{missing[0]}'; relationship skipped")
                continue
            mapping: dict[str, Any] = {
                "relationshipDirection": spec.direction,
                "sourceEntityKey": source_key,
                "targetFilterKeys": [list(group) for group in spec.filter_keys],
                "targetEntity": target,
            }
            if spec.skip_target_creation is not None:
                mapping["skipTargetCreation"] = spec.skip_target_creation
            target_key = target.get("_key") or target_entity_key(spec.direction, spec.filter_keys, target)
            relationship = {
                "_key": f"{source_key}|{spec.relationship_class.lower()}|{target_key}",
                "_type": spec.type,
                "_class": spec.relationship_class,
                "_mapping": mapping,
                "displayName": spec.relationship_class,
            }
            relationship.update(self.relationship_properties(spec.properties, item_scope, where, warnings))
            yield relationship


def target_entity_key(direction: str, filter_keys, target: dict) -> str:
    """JupiterOne's key for a mapped target without ``_key``: ``FORWARD:_class=User:email=a@b.c``."""
    parts = [direction]
    for group in filter_keys:
        parts.extend(f"{name}={_key_text(target[name])}" for name in group)
    return ":".join(parts)


def _key_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------------------
# Values


def evaluate(value: Value, scope: Scope, where: str, warnings: list[str]) -> Any:
    """Evaluate one compiled value; a failure becomes a warning and None."""
    try:
        return value.evaluate(scope)
    except jinja2.UndefinedError as exc:
        warnings.append(f"{where}: {exc.message}")
    except ValueProblem as exc:
        warnings.append(f"{where}: {exc}")
    except Exception as exc:  # a JMESPath type error on an unexpected record shape, say
        warnings.append(f"{where}: {type(exc).__name__}: {exc}")
    return None


def as_key(value: Any) -> str | None:
    """A rendered key: text as is, a number as its text; anything else is no key."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def property_value(value: Any, where: str, warnings: list[str]) -> Any:
    """Entity properties are primitives or arrays of primitives; anything else is dropped with a warning."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        kept = [v for v in value if v is not None]
        if any(isinstance(v, (dict, list)) for v in kept):
            warnings.append(f"{where}: an array of objects cannot be an entity property; dropped")
            return None
        return kept
    warnings.append(f"{where}: an object cannot be an entity property (map its fields, or keep it in "
                    f"_rawData); dropped")
    return None


_INTEGER = re.compile(r"^\d+$")
_DECIMAL = re.compile(r"^\d+\.\d+$")


def parse_tag_value(value: Any) -> Any:
    """JupiterOne's parseStringPropertyValue: "true"/"false" -> bool, digits -> numbers."""
    if not isinstance(value, str):
        return value
    if value in ("true", "false"):
        return value == "true"
    if _INTEGER.match(value):
        return int(value)
    if _DECIMAL.match(value):
        return float(value)
    return value


def assign_tags(entity: dict, tags: dict, *, display_name_set: bool) -> None:
    """JupiterOne's ``assignTags`` for a map of tags (SDK ``tagging.ts``)."""
    for name, value in tags.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            continue
        entity[f"tag.{name}"] = parse_tag_value(value)
        text = str(value)
        if text.lower() == "true" or text == "":
            entity.setdefault("tags", [])
            if name not in entity["tags"]:
                entity["tags"].append(name)
        lowered = name.lower()
        if lowered == "name" and text:
            if not display_name_set:
                entity["displayName"] = text
            entity.setdefault("name", text)
        if lowered in ("classification", "owner", "email"):
            entity[lowered] = text.lower()
