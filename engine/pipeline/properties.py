"""Entity properties compiled to straight-line Python, once per rule.

An entity rule is a list of (name, value) pairs evaluated on every record. Walking that
list - a loop, a dispatch and a call chain per property - costs more than the values
themselves when most of them are plain field paths. So for each rule the engine writes
the Python a person would write by hand and compiles it once:

* field paths (``certificate.common_name``) become dict lookups, and properties sharing a
  prefix (``certificate.``) look it up once per record;
* other JMESPath values call their compiled search directly; templates and literals
  keep their own evaluation;
* a property repeating an earlier property's expression takes its value.

The result, warnings included, is that of evaluating each property on its own;
``tests/test_fastpath.py`` compares the two on generated records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..lang.values import Value


def _is_dict(value: Any) -> bool:
    return value.__class__ is dict or isinstance(value, dict)


def compile_properties(
    properties: list[tuple[str, Value, Any, str, str | None]], *, property_value: Callable, describe: Callable
) -> Callable:
    """``fill(record, scope, functions, notes, entity)``: evaluate ``properties`` (as the
    builder lists them: name, value, search, message path, same_as) into ``entity``."""
    lines = ["def fill(record, scope, functions, notes, entity):"]
    names: dict[str, Any] = {
        "_is_dict": _is_dict,
        "property_value": property_value,
        "describe": describe,
        "_PRIMITIVES": frozenset((str, int, float, bool)),
    }
    lookups: dict[tuple[str, ...], str] = {(): "root"}  # a path prefix -> the local holding its dict (or None)
    lines.append("    root = record if _is_dict(record) else None")

    def lookup(parts: tuple[str, ...]) -> str:
        """The local variable holding the dict at ``parts`` (or None), defining it if new."""
        if parts in lookups:
            return lookups[parts]
        parent = lookup(parts[:-1])
        variable = f"d{len(lookups)}"
        lookups[parts] = variable
        lines.append(f"    {variable} = {parent}.get({parts[-1]!r}) if {parent} is not None else None")
        lines.append(f"    {variable} = {variable} if _is_dict({variable}) else None")
        return variable

    for number, (name, value, search, path, same_as) in enumerate(properties):
        names[f"V{number}"], names[f"S{number}"], names[f"P{number}"] = value, search, path
        if same_as is not None:
            lines += [f"    if {same_as!r} in entity:", f"        entity[{name!r}] = entity[{same_as!r}]"]
            continue
        if value.field_path is not None:
            parts = value.field_path
            holder = lookup(parts[:-1])
            lines.append(f"    v = {holder}.get({parts[-1]!r}) if {holder} is not None else None")
        else:
            call = f"S{number}(record, functions)" if search is not None else f"V{number}.evaluate(scope)"
            lines += [
                "    try:",
                f"        v = {call}",
                "    except Exception as exc:",
                f"        notes.add(P{number}, describe(exc))",
                "        v = None",
            ]
        lines += [
            "    if v is not None:",
            "        if v.__class__ not in _PRIMITIVES:",
            f"            v = property_value(v, notes, P{number})",
            "        if v is not None:",
            f"            entity[{name!r}] = v",
        ]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<entity properties>", "exec"), names)  # noqa: S102 - our own generated code
    return names["fill"]
