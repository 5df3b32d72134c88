"""Stage 6: check graph objects before they are written.

One :class:`GraphChecker` per run sees every entity and relationship. It enforces the
JupiterOne rules that make a graph uploadable: keys of at least 10 characters, unique
across entities and relationships; ``name``/``displayName`` and the data-model
properties each class requires; relationships whose endpoints exist. Whatever fails is
not written, is counted per type, and makes that type a partial dataset so a later sync
never deletes what it did not see.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from .. import datamodel

MIN_KEY_LENGTH = 10


class KeyIndex:
    """The entity keys accepted so far: what relationships resolve against.

    Keys are kept as their 64-bit hashes (a third of the memory of the strings; a
    collision among a million keys has a chance of about 1 in 30 million), except for the
    ``listed_types`` whose keys relationships enumerate (``{type: X}`` endpoints).
    """

    def __init__(self, listed_types: frozenset[str] = frozenset()) -> None:
        self.hashes: set[int] = set()
        self.types: set[str] = set()
        self.listed_types = listed_types
        self.keys_by_type: dict[str, list[str]] = {}

    def add(self, key: str, entity_type: str) -> None:
        self.hashes.add(hash(key))
        self.types.add(entity_type)
        if entity_type in self.listed_types:
            self.keys_by_type.setdefault(entity_type, []).append(key)

    def __contains__(self, key: str) -> bool:
        return hash(key) in self.hashes


class Verdict(Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    DANGLING = "dangling"  # a direct relationship whose endpoint is not (yet) known


@dataclass
class TypeReport:
    duplicates: int = 0
    invalid: Counter = field(default_factory=Counter)  # message -> count
    example_keys: dict = field(default_factory=dict)  # message -> first key
    dangling: int = 0

    def add_invalid(self, message: str, key: str) -> None:
        self.invalid[message] += 1
        self.example_keys.setdefault(message, key)


class GraphChecker:
    def __init__(self, listed_types: frozenset[str] = frozenset()):
        self.index = KeyIndex(listed_types)
        self.relationship_keys: set[int] = set()  # hashes, as in KeyIndex
        self.reports: dict[str, TypeReport] = {}

    def report(self, graph_type: str) -> TypeReport:
        return self.reports.setdefault(graph_type, TypeReport())

    # -- entities ------------------------------------------------------------------------

    def check_entity(self, entity: dict) -> Verdict:
        key, entity_type = entity["_key"], entity["_type"]
        problems = entity_problems(entity)
        if problems:
            for message in problems:
                self.report(entity_type).add_invalid(message, key)
            return Verdict.INVALID
        digest = hash(key)
        if digest in self.index.hashes or digest in self.relationship_keys:
            self.report(entity_type).duplicates += 1
            return Verdict.DUPLICATE
        self.index.add(key, entity_type)
        return Verdict.ACCEPT

    # -- relationships -------------------------------------------------------------------

    def check_relationship(self, relationship: dict) -> Verdict:
        key = relationship["_key"]
        if len(key) < MIN_KEY_LENGTH:
            self.report(relationship["_type"]).add_invalid(f"_key shorter than {MIN_KEY_LENGTH} characters", key)
            return Verdict.INVALID
        digest, entities = hash(key), self.index.hashes
        if digest in entities or digest in self.relationship_keys:
            self.report(relationship["_type"]).duplicates += 1
            return Verdict.DUPLICATE
        mapping = relationship.get("_mapping")
        if mapping is not None:
            if hash(mapping["sourceEntityKey"]) not in entities:
                return Verdict.DANGLING
        elif hash(relationship["_fromEntityKey"]) not in entities or hash(relationship["_toEntityKey"]) not in entities:
            return Verdict.DANGLING
        self.relationship_keys.add(digest)
        return Verdict.ACCEPT

    def dangling(self, relationship: dict) -> None:
        self.report(relationship["_type"]).dangling += 1

    # -- summaries -----------------------------------------------------------------------

    def incomplete_types(self) -> set[str]:
        """Types some object of which was not written because it was invalid or dangling."""
        return {t for t, r in self.reports.items() if r.invalid or r.dangling}

    def describe(self, graph_type: str) -> list[str]:
        report = self.reports.get(graph_type)
        if report is None:
            return []
        lines = []
        # Only entity duplicates are told: a repeated record repeats its relationships too.
        if report.duplicates and graph_type in self.index.types:
            lines.append(f"{graph_type}: {report.duplicates} duplicate key(s); kept the first of each")
        for message, count in report.invalid.items():
            lines.append(
                f"{graph_type}: {count} object(s) not written: {message} (e.g. {report.example_keys[message]})"
            )
        if report.dangling:
            lines.append(
                f"{graph_type}: {report.dangling} relationship(s) not written: an endpoint entity does not exist"
            )
        return lines


@lru_cache(maxsize=256)
def _required(classes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    required = dict(datamodel.ENTITY_REQUIRED)
    for class_name in classes:
        required.update(datamodel.CLASS_REQUIRED.get(class_name, {}))
    return required


def entity_problems(entity: dict) -> list[str]:
    """What makes an entity unacceptable to JupiterOne's data model, if anything."""
    problems = []
    if len(entity["_key"]) < MIN_KEY_LENGTH:
        problems.append(f"_key shorter than {MIN_KEY_LENGTH} characters")
    named = "name" in entity
    for name, allowed in _required(tuple(entity["_class"])).items():
        if name == "displayName" and not named:
            continue  # it defaults to name: one problem, one message
        if name not in entity:
            if "null" not in allowed:
                problems.append(f"missing required property '{name}'")
            continue
        actual = datamodel.json_type(entity[name])
        if actual not in allowed:
            problems.append(f"property '{name}' must be {' or '.join(allowed)}, not {actual}")
    return problems
