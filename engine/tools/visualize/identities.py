"""What a relationship's end finds an entity by, with the mapper's rules
(:mod:`engine.store.targets`): a ``_key`` (:func:`key_identity`), or a mapped target's filter-key
values (:class:`TargetGroups`); where each identity leads (:class:`IdentityIndex`, a temporary
SQLite database, so memory stays flat in the size of the input); and what names the placeholder
of a mapped target nothing matches (:func:`placeholder_identity`)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...store.jsontext import canonical
from ...store.targets import class_set, filter_key_groups  # the mapper's rules, shared with the store

LOOKUP_BATCH = 500  # identities per SQL statement


def as_text(value: Any) -> str:
    """A property value as text: a string as it is, None as ``""``, anything else as JSON (what the
    page shows, and what a ``_key`` is compared by)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _identity(keys: tuple[str, ...], values: list, classes: tuple[str, ...] | None) -> bytes:
    """What a mapped target finds an entity by: ``g:`` and a digest of the filter keys, their
    values and the classes asked for (collisions: 2**-128)."""
    return b"g:" + hashlib.blake2b(canonical([list(keys), values, classes]).encode(), digest_size=16).digest()


def key_identity(key: Any) -> bytes:
    """What a relationship's end finds an entity by: ``k:`` and its ``_key``."""
    return b"k:" + as_text(key).encode()


@dataclass
class TargetGroups:
    """The filter-key groups mapped relationships find their targets by, each with the class
    sets its targets ask for (only for groups with ``_class``); read from the relationships
    before the entities, so that each entity is indexed under what will be looked up."""

    groups: dict[tuple[str, ...], set[tuple[str, ...]]] = field(default_factory=dict)
    plain: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)  # each group without _class
    target_types: set[str] = field(default_factory=set)
    mapped: int = 0

    @classmethod
    def scan(cls, mappings: Iterable[dict]) -> TargetGroups:
        found = cls()
        for mapping in mappings:
            found.add(mapping)
        return found

    def add(self, mapping: dict) -> None:
        self.mapped += 1
        target = mapping.get("targetEntity")
        target = target if isinstance(target, dict) else {}
        self.target_types.add(as_text(target.get("_type")))
        for group in filter_key_groups(mapping):
            if not group:
                continue
            if group not in self.groups:
                self.groups[group] = set()
                self.plain[group] = tuple(k for k in group if k != "_class")
            if "_class" in group and all(k in target for k in group):
                self.groups[group].add(tuple(sorted(class_set(target.get("_class")))))

    def entity_identities(self, entity: dict) -> list[bytes]:
        """Every identity a mapped target can find ``entity`` by, besides its ``_key``."""
        found = []
        for group, wanted in self.groups.items():
            plain = self.plain[group]
            if not all(k in entity for k in plain):
                continue
            if "_class" not in group:
                found.append(_identity(plain, [entity[k] for k in plain], None))
            elif wanted:
                values, classes = [entity[k] for k in plain], class_set(entity.get("_class"))
                found.extend(_identity(plain, values, w) for w in wanted if classes.issuperset(w))
        return found

    @staticmethod
    def target_identities(mapping: dict) -> Iterator[bytes]:
        """The identities a mapped relationship's target is looked up by, one per usable group, in order."""
        target = mapping.get("targetEntity")
        if not isinstance(target, dict):
            return
        for group in filter_key_groups(mapping):
            if not group or not all(k in target for k in group):
                continue
            plain = tuple(k for k in group if k != "_class")
            classes = tuple(sorted(class_set(target.get("_class")))) if "_class" in group else None
            yield _identity(plain, [target[k] for k in plain], classes)


class IdentityIndex:
    """Where each identity of the input's entities leads: the number of the node the entity is
    drawn as, or NULL for an entity that is not drawn. The first entity with an identity keeps
    it. A private temporary SQLite database (on disk past a small cache), so memory does not
    grow with the input."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("CREATE TABLE ids (id BLOB PRIMARY KEY, node INTEGER) WITHOUT ROWID")

    def add(self, rows: list[tuple[bytes, int | None]]) -> None:
        """Record ``(identity, node number or None)`` rows; an identity already recorded keeps its node."""
        self.db.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", rows)

    def find(self, identities: Iterable[bytes]) -> dict[bytes, int | None]:
        """The identities an entity has, each with the number of its node (None: not drawn)."""
        wanted = list(identities)
        found: dict[bytes, int | None] = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            found.update(self.db.execute(f"SELECT id, node FROM ids WHERE id IN ({marks})", part))
        return found

    def undraw(self, first: int) -> None:
        """Entities drawn as node ``first`` and after are not drawn after all."""
        self.db.execute("UPDATE ids SET node = NULL WHERE node >= ?", (first,))

    def close(self) -> None:
        self.db.close()


def placeholder_identity(mapping: dict) -> bytes:
    """What names a placeholder: the target's first usable group's values, else all its values."""
    return hashlib.blake2b(canonical(placeholder_pairs(mapping)).encode(), digest_size=16).digest()


def placeholder_pairs(mapping: dict) -> list[tuple[str, Any]]:
    """The target's ``(filter key, value)`` pairs that name and label its placeholder: those of its
    first group with every key present, else all of its properties."""
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    usable = [g for g in filter_key_groups(mapping) if g and all(k in target for k in g)]
    return [(k, target[k]) for k in usable[0]] if usable else sorted(target.items())
