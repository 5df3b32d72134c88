"""Stage 5: build JupiterOne entities and relationships from one record.

The builder is pure: it reads the record, the config and the keys collected so far,
and returns graph objects plus per-record warnings. It never raises for bad data:
a value that cannot be computed becomes a warning naming the record and the field,
and the rest of the record is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jinja2

from ..errors import ValueProblem
from ..jsonio import shown
from ..lang.values import Scope, Value
from .check import KeyIndex
from .properties import compile_properties

if TYPE_CHECKING:  # annotations only: plan.py's modules may import this one
    from .plan import Endpoint, MappedRelationshipSpec, RelationshipSpec, Step


class Built:
    """What one record produced."""

    __slots__ = ("entities", "relationships", "warnings", "skipped_types")

    def __init__(self) -> None:
        self.entities: list[dict] = []
        self.relationships: list[dict] = []
        self.warnings: list[str] = []
        self.skipped_types: set[str] = set()  # entity types this record failed to build


def _with_repeats(pairs, prefix: str) -> list[tuple[str, Value, Any, str, str | None]]:
    """(name, value, its direct JMESPath search or None, message path, name of an earlier
    property with the same expression)."""
    first: dict[tuple, str] = {}
    out = []
    for name, value in pairs:
        identity = (value.kind, repr(value.source))
        out.append((name, value, value.search, f"{prefix}.{name}", first.get(identity)))
        first.setdefault(identity, name)
    return out


class Notes:
    """The warnings of one record. Messages are composed only when something goes wrong,
    so the hot path never formats a string."""

    __slots__ = ("position", "warnings")

    def __init__(self, position: object, warnings: list[str]):
        self.position = position
        self.warnings = warnings

    def add(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.position}: {path}: {message}")


class ItemNotes:
    """The notes of one ``for_each`` item: rule paths (``entities[1].properties.x``) name
    the item (``entities[1] item 3.properties.x``)."""

    __slots__ = ("notes", "base", "where")

    def __init__(self, notes: Notes, base: str, where: str):
        self.notes, self.base, self.where = notes, base, where

    def add(self, path: str, message: str) -> None:
        self.notes.add(path.replace(self.base, self.where, 1), message)


_PRIMITIVES = (str, int, float, bool)


class Lineage:
    """Where a record was fetched: the fan-out ``parent`` entity it was fetched for (None
    outside a fan-out), the ``ancestors`` of that fetch by entity type (the parent, the entity
    the parent was fetched for, and so on up; the nearest of each type), and the ``account``
    (an item of a step's ``accounts``, passed down every fan-out below it; None without one).

    One lineage is shared by every record of one fetch, and by the entities built from them
    that a later step fans out over: memory grows with the parents, not with the records.
    """

    __slots__ = ("parent", "ancestors", "account", "unit")

    def __init__(self, parent: dict | None = None, ancestors: Mapping[str, dict] | None = None, account: Any = None):
        self.parent = parent
        self.ancestors: Mapping[str, dict] = ancestors if ancestors is not None else {}
        self.account = account
        # What the fetch was for, by name (saved state keys its marks so): the parent's _key, or
        # the account; None outside a fan-out or accounts. Named once, not per record.
        self.unit: str | None = (
            str(parent.get("_key")) if parent is not None else None if account is None else account_label(account)
        )

    def describe(self) -> str:
        """What the fetch was for, as messages name it: ``for example_org:o1``, ``for account
        acme``, or nothing."""
        if self.unit is None:
            return ""
        return f"for {self.unit}" if self.parent is not None else f"for account {self.unit}"

    def below(self, entity_type: str, entity: dict) -> Lineage:
        """The lineage of what is fetched for ``entity`` (of ``entity_type``), which was
        built from a record of this lineage: its account, and ancestors one deeper."""
        return Lineage(entity, {**self.ancestors, entity_type: entity}, self.account)


ROOT = Lineage()  # a record of a step that neither fans out nor has accounts


def account_label(account: Any) -> str:
    """An account as messages name it: an entity by its key, text as it is, anything else as
    (shortened) JSON."""
    if isinstance(account, dict) and "_key" in account:
        return str(account["_key"])
    return account if isinstance(account, str) else shown(account)


class GraphBuilder:
    def __init__(
        self,
        step: Step,
        *,
        config: Mapping[str, Any],
        options,
        index: KeyIndex,
        instance_tags: dict[str, Any],
        now: int,
    ):
        self.step = step
        self.config = config
        self.options = options
        self.index = index
        self.now = now
        self.instance_tags = [(f"tag.{name}", value) for name, value in instance_tags.items()]
        # Every rule with the paths its messages use, computed once.
        self.entity_rules = [
            (
                spec,
                f"entities[{i}]",
                compile_properties(
                    _with_repeats(spec.properties, f"entities[{i}].properties"),
                    property_value=property_value,
                    describe=describe,
                ),
                [(f"tag.{name}", value, f"entities[{i}].tags.{name}") for name, value in spec.tags],
                any(name == "displayName" for name, _ in spec.properties),
                f"entities[{i}].key",
            )
            for i, spec in enumerate(step.entities)
        ]
        # Each rule with its verb and message paths, made once (not per record).
        self.relationship_rules = [
            (
                spec,
                f"relationships[{i}]",
                spec.relationship_class.lower(),
                f"relationships[{i}].from",
                f"relationships[{i}].to",
            )
            for i, spec in enumerate(step.relationships)
        ]
        self.mapped_rules = [
            MappedRule(spec, f"mapped_relationships[{i}]") for i, spec in enumerate(step.mapped_relationships)
        ]

    def scope(self, record: Any, lineage: Lineage = ROOT) -> Scope:
        """What the rules of a record see: the record, and where it was fetched (``lineage``:
        its fan-out parent, that parent's ancestors, its account)."""
        variables = {
            "record": record,
            "config": self.config,
            "parent": lineage.parent,
            "ancestors": lineage.ancestors,
            "account": lineage.account,
            "now": self.now,
        }
        return Scope(record, variables, self.options)

    def build(self, record: Any, position: object, lineage: Lineage = ROOT) -> Built:
        built = Built()
        notes = Notes(position, built.warnings)
        scope = self.scope(record, lineage)
        keys_by_type: dict[str, str] = {}  # the entity of each (non-for_each) type this record built
        for rule in self.entity_rules:
            spec, where = rule[0], rule[1]
            if spec.for_each is None:
                entity = self.entity(rule, record, scope, notes, where)
                if entity is None:
                    built.skipped_types.add(spec.type)
                else:
                    built.entities.append(entity)
                    keys_by_type[spec.type] = entity["_key"]
                continue
            for number, item_scope in enumerate(self.item_scopes(spec.for_each, scope, notes, where)):
                entity = self.entity(rule, item_scope.root, item_scope, notes, f"{where} item {number}")
                if entity is None:
                    built.skipped_types.add(spec.type)
                else:
                    built.entities.append(entity)
        for relationship_rule in self.relationship_rules:
            built.relationships.extend(self.relationships(relationship_rule, scope, keys_by_type, notes))
        for mapped_rule in self.mapped_rules:
            built.relationships.extend(self.mapped(mapped_rule, scope, keys_by_type, notes))
        return built

    # -- entities ------------------------------------------------------------------------

    def entity(self, rule, record: Any, scope: Scope, notes: Notes, where: str) -> dict | None:
        spec, base, fill_properties, tags, display_name_set, key_path = rule
        key = as_key(evaluate(spec.key, scope, notes, key_path if where is base else where + ".key"))
        if key is None:
            return None
        if not key:
            notes.add(f"{where}.key", f"the key is {key!r}, not a non-empty string; entity skipped")
            return None
        entity: dict[str, Any] = {"_key": key, "_type": spec.type, "_class": list(spec.classes)}
        fill_properties(
            record,
            scope,
            scope.options.custom_functions,
            notes if where is base else ItemNotes(notes, base, where),
            entity,
        )
        if "displayName" not in entity and isinstance(entity.get("name"), str):
            entity["displayName"] = entity["name"]
        for name, value in self.instance_tags:
            entity[name] = value
        for name, value, path in tags:
            result = property_value(evaluate(value, scope, notes, path), notes, path)
            if result is not None:
                entity[name] = result
        if spec.tags_from is not None:
            found = evaluate(spec.tags_from, scope, notes, f"{where}.tags_from")
            if isinstance(found, dict):
                assign_tags(entity, found, display_name_set=display_name_set)
            elif found is not None:
                notes.add(
                    f"{where}.tags_from", f"expected an object of tag names to values, got {type(found).__name__}"
                )
        if spec.raw_data:
            entity["_rawData"] = [{"name": "default", "rawData": record}]
        return entity

    # -- direct relationships --------------------------------------------------------------

    def relationships(
        self,
        rule: tuple[RelationshipSpec, str, str, str, str],
        scope: Scope,
        keys_by_type: dict[str, str],
        notes: Notes,
    ) -> Iterable[dict]:
        spec, where, verb, where_from, where_to = rule
        relationship_class = spec.relationship_class
        for item_scope in self.item_scopes(spec.for_each, scope, notes, where):
            sources = self.endpoint_keys(spec.source, item_scope, keys_by_type, notes, where_from)
            targets = self.endpoint_keys(spec.target, item_scope, keys_by_type, notes, where_to)
            for source_key in sources:
                for target_key in targets:
                    key = f"{source_key}|{verb}|{target_key}"
                    if key.count("|") != 2 or "\\" in key:  # a part holds a separator: escape it
                        key = relationship_key(source_key, verb, target_key)
                    relationship = {
                        "_key": key,
                        "_type": spec.type,
                        "_class": relationship_class,
                        "_fromEntityKey": source_key,
                        "_toEntityKey": target_key,
                        "displayName": relationship_class,
                    }
                    if spec.properties:
                        relationship.update(self.relationship_properties(spec.properties, item_scope, notes, where))
                    yield relationship

    def endpoint_keys(
        self, endpoint: Endpoint, scope: Scope, keys_by_type: dict[str, str], notes: Notes, where: str
    ) -> list[str]:
        if endpoint.mode == "record":
            key = keys_by_type.get(endpoint.type)
            return [key] if key is not None else []
        if endpoint.mode == "type":
            return list(self.index.keys_by_type.get(endpoint.type, ()))
        assert endpoint.key is not None  # the compiler gives every mode 'key' endpoint a key
        key = as_key(evaluate(endpoint.key, scope, notes, f"{where}.key"))
        return [key] if key else []

    def relationship_properties(self, pairs, scope: Scope, notes: Notes, where: str) -> dict:
        out = {}
        for name, value in pairs:
            result = evaluate(value, scope, notes, f"{where}.properties.{name}")
            if result is None:
                continue
            if isinstance(result, (dict, list)):
                notes.add(
                    f"{where}.properties.{name}",
                    f"relationship properties must be primitive, got {type(result).__name__}; dropped",
                )
                continue
            out[name] = result
        return out

    def item_scopes(self, for_each: Value | None, scope: Scope, notes: Notes, where: str) -> Iterable[Scope]:
        """The scope itself, or one scope per item of ``for_each`` (JMESPath root = the item)."""
        if for_each is None:
            yield scope
            return
        items = evaluate(for_each, scope, notes, f"{where}.for_each")
        if items is None:
            return
        if not isinstance(items, list):
            items = [items]
        variables, options = scope.variables, scope.options
        for item in items:
            yield Scope(item, {**variables, "item": item}, options)

    # -- mapped relationships --------------------------------------------------------------

    def mapped(self, rule: MappedRule, scope: Scope, keys_by_type: dict[str, str], notes: Notes) -> Iterable[dict]:
        spec, where = rule.spec, rule.where
        source_key = keys_by_type.get(spec.source_type)
        if source_key is None:
            return
        functions = scope.options.custom_functions
        fill_target, needed, target_base = rule.fill_target, rule.needed, rule.target_base
        for item in self.items(spec.for_each, scope, notes, where):
            item_scope = self.item_scope(spec.for_each, scope, item) if rule.needs_scope else None
            target = dict(target_base)
            fill_target(item, item_scope, functions, notes, target)
            missing = None
            for name in needed:
                if name not in target:
                    missing = name
                    break
            if missing is not None:
                notes.add(where, f"target has no value for filter key '{missing}'; relationship skipped")
                continue
            mapping: dict[str, Any] = {
                "relationshipDirection": spec.direction,
                "sourceEntityKey": source_key,
                "targetFilterKeys": rule.target_filter_keys,  # shared by every relationship of the rule
                "targetEntity": target,
            }
            if spec.skip_target_creation is not None:
                mapping["skipTargetCreation"] = spec.skip_target_creation
            target_key = target.get("_key") or rule.target_key(target)
            key = f"{source_key}|{rule.verb}|{target_key}"
            if key.count("|") != 2 or "\\" in key:  # a part holds a separator: escape it
                key = relationship_key(source_key, rule.verb, str(target_key))
            relationship = {
                "_key": key,
                "_type": spec.type,
                "_class": spec.relationship_class,
                "_mapping": mapping,
                "displayName": spec.relationship_class,
            }
            if spec.properties:
                assert item_scope is not None  # rule.needs_scope is true when spec.properties is set
                relationship.update(self.relationship_properties(spec.properties, item_scope, notes, where))
            yield relationship

    def items(self, for_each: Value | None, scope: Scope, notes: Notes, where: str) -> list:
        """The record itself, or the items of ``for_each``."""
        if for_each is None:
            return [scope.root]
        found = evaluate(for_each, scope, notes, f"{where}.for_each")
        if found is None:
            return []
        return found if isinstance(found, list) else [found]

    @staticmethod
    def item_scope(for_each: Value | None, scope: Scope, item: Any) -> Scope:
        return scope if for_each is None else Scope(item, {**scope.variables, "item": item}, scope.options)


class MappedRule:
    """A mapped relationship rule with what every record needs computed once."""

    __slots__ = (
        "spec",
        "where",
        "verb",
        "fill_target",
        "needs_scope",
        "target_base",
        "target_filter_keys",
        "needed",
        "key_names",
    )

    def __init__(self, spec: MappedRelationshipSpec, where: str):
        self.spec, self.where = spec, where
        self.verb = spec.relationship_class.lower()
        self.fill_target = compile_properties(
            _with_repeats(spec.target_properties, f"{where}.target.properties"),
            property_value=property_value,
            describe=describe,
        )
        # Templates (and relationship properties) see the item's scope; plain JMESPath needs none.
        self.needs_scope = bool(spec.properties) or any(v.search is None for _, v in spec.target_properties)
        self.target_base = {
            name: value for name, value in (("_type", spec.target_type), ("_class", spec.target_class)) if value
        }
        self.target_filter_keys = [list(group) for group in spec.filter_keys]  # never changed: shared
        self.key_names = tuple(name for group in spec.filter_keys for name in group)
        self.needed = tuple(dict.fromkeys(self.key_names))

    def target_key(self, target: dict) -> str:
        """JupiterOne's key for a mapped target without ``_key``: ``FORWARD:_class=User:email=a@b.c``."""
        parts = [self.spec.direction]
        for name in self.key_names:
            parts.append(name + "=" + _key_text(target[name]))
        return ":".join(parts)


def relationship_key(from_key: str, verb: str, to_key: str) -> str:
    """A relationship's ``_key``: JupiterOne's ``FROM|verb|TO``, made unambiguous.

    Joined as they are, keys holding the separator collide: ``a|has|b`` to ``c`` and ``a``
    to ``b|has|c`` would both be ``a|has|b|has|c``. So in each of the three parts a
    backslash becomes ``\\\\`` and a ``|`` becomes ``\\|``; read left to right, an
    unescaped ``|`` always separates, so different (from, verb, to) never give the same key
    (the encoding is injective). A part with neither character is left as it is, so the
    keys of ordinary ids are JupiterOne's own, byte for byte.
    """
    if "|" in from_key or "\\" in from_key:
        from_key = _escape_key_part(from_key)
    if "|" in verb or "\\" in verb:
        verb = _escape_key_part(verb)
    if "|" in to_key or "\\" in to_key:
        to_key = _escape_key_part(to_key)
    return f"{from_key}|{verb}|{to_key}"


def _escape_key_part(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _key_text(value: Any) -> str:
    if value.__class__ is str:
        return value
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------------------
# Values


def evaluate(value: Value, scope: Scope, notes: Notes, path: str) -> Any:
    """Evaluate one compiled value; a failure becomes a warning and None."""
    try:
        return value.evaluate(scope)
    except Exception as exc:  # a JMESPath type error on an unexpected record shape, say
        notes.add(path, describe(exc))
    return None


def describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return exc.message or str(exc)
    if isinstance(exc, ValueProblem):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def as_key(value: Any) -> str | None:
    """A rendered key: text as is, a number as its text; anything else is no key."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def property_value(value: Any, notes: Notes, path: str) -> Any:
    """Entity properties are primitives or arrays of primitives; anything else is dropped with a warning."""
    if value is None or isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, list):
        kept = [v for v in value if v is not None]
        if any(isinstance(v, (dict, list)) for v in kept):
            notes.add(path, "an array of objects cannot be an entity property; dropped")
            return None
        return kept
    notes.add(path, "an object cannot be an entity property (map its fields, or keep it in _rawData); dropped")
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
