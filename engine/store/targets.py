"""What a mapped relationship's target is: the rules shared by the store's mapper and
``etl visualize``'s resolver (which imports :func:`filter_key_groups` from here).

* ``targetFilterKeys`` is an OR of AND-groups (:func:`filter_key_groups`); a flat list of
  names is one group per name; none given is the SDK's default ``[['_type', '_key']]``.
* A group is usable only when the ``targetEntity`` has a value for each of its keys.
* ``_class`` matches when the target's class (a name or a list) is a subset of the entity's
  class list; every other key matches by JSON equality of the values (an array matches an
  equal array only; ``1`` is not ``true``) - :func:`matches`.
"""

from __future__ import annotations

from typing import Any

from .jsontext import canonical


def filter_key_groups(mapping: dict) -> list[tuple[str, ...]]:
    """``targetFilterKeys`` as a list of AND-groups; the SDK's default is ``[['_type', '_key']]``."""
    keys = mapping.get("targetFilterKeys")
    if not isinstance(keys, list) or not keys:
        return [("_type", "_key")]
    groups: list[tuple[str, ...]] = []
    for group in keys:
        if isinstance(group, str):  # the flat form: each key its own group (OR)
            groups.append((group,))
        elif isinstance(group, list):
            groups.append(tuple(map(str, group)))
    return groups


def class_set(value: Any) -> set[str]:
    if isinstance(value, list):
        return {str(v) for v in value}
    return set() if value is None else {str(value)}


def usable_groups(mapping: dict) -> list[tuple[str, ...]]:
    """The groups the target entity has every value for."""
    target = mapping.get("targetEntity")
    if not isinstance(target, dict):
        return []
    return [g for g in filter_key_groups(mapping) if g and all(k in target for k in g)]


def matches(group: tuple[str, ...], target: dict, entity: dict) -> bool:
    """Does ``entity`` (a graph object, with ``_key``, ``_type``, ``_class``) match ``target`` on
    every key of ``group``?"""
    for name in group:
        if name == "_class":
            if not class_set(target.get("_class")) <= class_set(entity.get("_class")):
                return False
        elif name not in entity or canonical(entity[name]) != canonical(target[name]):
            return False
    return True


def identity_pairs(mapping: dict) -> list[tuple[str, Any]]:
    """The (key, value) pairs that name a target: its first usable group's, else all its values."""
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    usable = usable_groups(mapping)
    return [(k, target[k]) for k in usable[0]] if usable else sorted(target.items())


def placeholder_key(mapping: dict) -> str:
    """The ``_key`` of the placeholder entity the mapper creates for an unmatched target: the
    same for every mapped relationship naming the same target."""
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    parts = [f"{k}={v if isinstance(v, str) else canonical(v)}" for k, v in identity_pairs(mapping)]
    return ":".join([f"placeholder:{target.get('_type', '')}", *parts])
