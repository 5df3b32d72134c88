"""Stage 1: read a mapping file, keep every node's position, check it against the JSON Schema.

The YAML is parsed once with PyYAML's safe loader. While the node tree is walked we
record where each key and value sits, so that every later problem (schema, JMESPath,
Jinja, references) can be reported as ``file:line:col: path: message``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import Location, MappingError, Problem
from ..jsonio import shown

# Limits that keep hostile files (alias bombs, absurd nesting) from eating the machine.
MAX_NODES = 200_000
MAX_DEPTH = 64

PathT = tuple  # a path into the document: ('steps', 2, 'entities', 0, 'key')


def format_path(path: PathT) -> str:
    """('steps', 2, 'entities', 0, 'key') -> 'steps[2].entities[0].key'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Where each key and value of a loaded document starts in its file."""

    file: str
    values: dict[PathT, yaml.Mark] = field(default_factory=dict)
    keys: dict[PathT, yaml.Mark] = field(default_factory=dict)
    scalars: dict[PathT, yaml.ScalarNode] = field(default_factory=dict)

    def locate(self, path: PathT, *, key: bool = False) -> Location:
        """The position of ``path``'s value (or key), or of its nearest ancestor."""
        marks = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            mark = marks.get(probe) or self.values.get(probe)
            if mark is not None:
                return Location(self.file, mark.line + 1, mark.column + 1)
            probe = probe[:-1]
        mark = self.values.get(())
        if mark is None:
            return Location(self.file, 1, 1)
        return Location(self.file, mark.line + 1, mark.column + 1)

    def locate_in_scalar(self, path: PathT, offset: int) -> Location:
        """The position in the file of character ``offset`` of the scalar value at ``path``.

        The value's characters are matched, in order, against the scalar's source text,
        skipping what YAML removed (quotes, escapes, indentation, a block indicator line),
        so quoted, multi-line and block scalars are located exactly.
        """
        node = self.scalars.get(tuple(path))
        if node is None or node.start_mark.buffer is None:
            return self.locate(path)
        buffer, start = node.start_mark.buffer, node.start_mark.index
        raw = buffer[start : node.end_mark.index]
        if node.style in ("'", '"'):
            position = 1
        elif node.style in ("|", ">"):
            position = raw.find("\n") + 1
        else:
            position = 0
        for index, char in enumerate(node.value[: max(offset, 0) + 1]):
            while position < len(raw) and raw[position] != char and not (char == " " and raw[position] == "\n"):
                position += 1
            if index < offset:
                position += 1
        absolute = start + min(position, len(raw))
        line = buffer.count("\n", 0, absolute) + 1
        column = absolute - buffer.rfind("\n", 0, absolute)
        return Location(self.file, line, column)

    def problem(self, path: PathT, message: str, *, key: bool = False) -> Problem:
        return Problem(self.locate(path, key=key), format_path(path), message)


@dataclass(frozen=True)
class LoadedMapping:
    data: dict
    source: SourceMap


def load_mapping(path: str | Path) -> LoadedMapping:
    """Parse and schema-check a mapping file. Raises MappingError listing every problem."""
    path = Path(path)
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([Problem(None, "", f"cannot read mapping file {display}: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise MappingError([Problem(None, "", f"{display} is not UTF-8 text: {exc.reason}")]) from None
    return load_mapping_text(text, display)


def load_mapping_text(text: str, filename: str) -> LoadedMapping:
    data, source = parse_yaml(text, filename)
    problems = check_schema(data, source)
    if problems:
        raise MappingError(problems)
    return LoadedMapping(data, source)


class _TooDeep(Exception):
    """The composer met a node nested deeper than MAX_DEPTH."""

    def __init__(self, path: PathT, mark: yaml.Mark):
        super().__init__()
        self.path = path
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, stopping at the first node nested deeper than MAX_DEPTH: PyYAML
    composes a node's children recursively (a document nested thousands deep, such as
    ``[[[[...]]]]``, would exhaust Python's stack) and scans deep nesting in quadratic time,
    so the nesting is refused while composing, before the rest is read. The path and
    position are those ``_walk`` gives to a document nested too deep."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.trail: list = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        if parent is None or (index is None and self.check_event(yaml.ScalarEvent)):  # the root, a plain key
            return super().compose_node(parent, index)
        merged = isinstance(index, yaml.ScalarNode) and index.value == "<<"  # merged at its mapping's level
        if not merged:
            if isinstance(parent, yaml.SequenceNode):
                self.trail.append(index)
            elif index is None:  # a mapping's key
                self.trail.append("?")
            else:
                self.trail.append(index.value if isinstance(index, yaml.ScalarNode) else str(index.start_mark))
        try:
            if len(self.trail) > MAX_DEPTH and not self.check_event(yaml.AliasEvent):
                key = isinstance(index, yaml.Node) and not merged
                raise _TooDeep(tuple(self.trail), index.start_mark if key else self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            if not merged:
                self.trail.pop()


def parse_yaml(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Safe-load YAML, recording positions. Refuses duplicate keys, bombs and deep nesting."""
    source = SourceMap(filename)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise MappingError(
            [
                Problem(
                    Location(filename, line, column),
                    "",
                    f"YAML error: character {exc.character!r} is not allowed in YAML",
                )
            ]
        ) from None
    try:
        try:
            node = loader.get_single_node()
        except _TooDeep as exc:
            location = Location(filename, exc.mark.line + 1, exc.mark.column + 1)
            message = f"nesting deeper than {MAX_DEPTH} levels; refusing to load it"
            raise MappingError([Problem(location, format_path(exc.path), message)]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = Location(filename, mark.line + 1, mark.column + 1) if mark else None
            reason = exc.problem or exc.context or "invalid YAML"
            if exc.problem and exc.context and exc.context_mark:
                started = exc.context_mark
                reason += f" ({exc.context} started at line {started.line + 1}, column {started.column + 1})"
            reason += _indentation_hint(exc.problem or "")
            raise MappingError([Problem(loc, "", f"YAML syntax error: {reason}")]) from None
        except yaml.YAMLError as exc:
            raise MappingError([Problem(Location(filename, 1, 1), "", f"YAML error: {exc}")]) from None
        if node is None:
            raise MappingError([Problem(Location(filename, 1, 1), "", "the mapping file is empty")])
        problems: list[Problem] = []
        _walk(node, (), source, problems, [0])
        if problems:
            raise MappingError(problems)
        try:
            data = _string_keys(loader.construct_document(node))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            loc = Location(filename, mark.line + 1, mark.column + 1) if mark else None
            raise MappingError([Problem(loc, "", f"YAML error: {exc.problem}")]) from None
    finally:
        loader.dispose()
    return data, source


# PyYAML's messages that, in a hand-written file, nearly always mean a line indented wrong.
_INDENTATION_PROBLEMS = (
    "expected <block end>",
    "mapping values are not allowed here",
    "did not find expected key",
    "did not find expected '-' indicator",
)
_INDENTATION_HINT = (
    "check the indentation of this line and the one above it (YAML uses spaces; items of one "
    "list or mapping must start in the same column)"
)


def _indentation_hint(problem: str) -> str:
    """``; <hint>`` when PyYAML's ``problem`` is the symptom of an indentation mistake (or a tab)."""
    if "'\\t'" in problem:  # found character '\t' that cannot start any token
        return "; YAML indents with spaces, not tabs: replace the tab with spaces"
    if problem.startswith(_INDENTATION_PROBLEMS):
        return f"; {_INDENTATION_HINT}"
    return ""


def _string_keys(value: Any) -> Any:
    """Mapping keys written as numbers (``on_status: {404: skip}``) become text, as in JSON."""
    if isinstance(value, dict):
        return {
            (str(k) if isinstance(k, int) and not isinstance(k, bool) else k): _string_keys(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _walk(node: yaml.Node, path: PathT, source: SourceMap, problems: list[Problem], count: list[int]) -> None:
    count[0] += 1
    source.values.setdefault(path, node.start_mark)
    if count[0] > MAX_NODES:
        raise MappingError(
            [
                source.problem(
                    path,
                    f"the document has more than {MAX_NODES} nodes (an alias bomb?); refusing to load it",
                    key=True,
                )
            ]
        )
    if len(path) > MAX_DEPTH:
        raise MappingError(
            [source.problem(path, f"nesting deeper than {MAX_DEPTH} levels; refusing to load it", key=True)]
        )
    if isinstance(node, yaml.ScalarNode):
        source.scalars.setdefault(path, node)
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _walk(child, path + (index,), source, problems, count)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if key == "<<":  # merge key: its contents are merged by the constructor
                _walk(value_node, path, source, problems, count)
                continue
            if key in seen:
                first = seen[key]
                problems.append(
                    Problem(
                        Location(source.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        format_path(path + (key,)),
                        f"duplicate key '{key}' (first defined on line {first.line + 1})",
                    )
                )
                continue
            seen[key] = key_node.start_mark
            source.keys.setdefault(path + (key,), key_node.start_mark)
            _walk(value_node, path + (key,), source, problems, count)


# ----------------------------------------------------------------------------------------
# JSON Schema


@lru_cache(maxsize=1)
def mapping_schema() -> dict:
    """The JSON Schema of mapping format v1, as shipped inside the package."""
    text = resources.files("engine").joinpath("schema/mapping.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = mapping_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_schema(data: Any, source: SourceMap) -> list[Problem]:
    """Every schema violation in ``data``, phrased for humans and located in the file."""
    if not isinstance(data, dict):
        return [source.problem((), "a mapping file must be a YAML mapping (key: value pairs) at the top level")]
    problems: list[Problem] = []
    for error in _validator().iter_errors(data):
        problems.extend(_explain(error, source))
    # A misspelt key ("stepz", did you mean 'steps'?) also leaves its real key missing;
    # the did-you-mean says it all.
    meant = {
        (p.path.rpartition(".")[0], m.group(1))
        for p in problems
        if (m := re.search(r"\(did you mean '([^']+)'\?\)$", p.message)) and "unknown key" in p.message
    }
    problems = [
        p
        for p in problems
        if not ((m := re.match(r"missing required key '([^']+)'$", p.message)) and (p.path, m.group(1)) in meant)
    ]
    # One location may collect the same message from several schema branches.
    unique = {(str(p.location), p.path, p.message): p for p in problems}
    return list(unique.values())


_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def describe_type(value: Any) -> str:
    """'a mapping', 'a list', 'a string'... for messages about a YAML value."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _explain(error: jsonschema.ValidationError, source: SourceMap) -> list[Problem]:
    path = tuple(error.absolute_path)
    validator = error.validator
    if validator in ("oneOf", "anyOf") and error.context:
        return _explain_branches(error, source)
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in error.schema.get("properties", {}):
                continue
            if any(_matches(p, key) for p in error.schema.get("patternProperties", {})):
                continue
            hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            why = (
                f" (did you mean '{hint[0]}'?)"
                if hint
                else (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
            )
            out.append(source.problem(path + (key,), f"unknown key '{key}'{why}", key=True))
        return out
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [source.problem(path, f"missing required key '{missing}'")]
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = f"{describe_type(error.instance)} ({shown(error.instance, 40)})"
        return [source.problem(path, f"expected {expected}, got {got}")]
    if validator == "enum":
        options = [str(o) for o in error.validator_value]
        hint = difflib.get_close_matches(str(error.instance), options, n=1, cutoff=0.5) or _same_letters(
            error.instance, options
        )
        if hint:
            return [
                source.problem(path, f"{_quoted(error.instance)} is not an allowed value; did you mean '{hint[0]}'?")
            ]
        return [source.problem(path, f"{_quoted(error.instance)} is not one of: {', '.join(options)}")]
    if validator == "pattern":
        hint = error.schema.get("x-hint")
        message = f"{_quoted(error.instance)} is not valid" + (
            f": {hint}" if hint else f" (must match {error.validator_value})"
        )
        return [source.problem(path, message)]
    if validator == "propertyNames":
        return [source.problem(path, error.message)]
    return [source.problem(path, error.message)]


def _quoted(value: Any) -> str:
    """A value in a message: 'HAS', or its escaped form when it holds characters that do not
    print (a tab, a newline), so that the message stays on one line."""
    text = str(value)
    return f"'{text}'" if text.isprintable() else repr(text)


def _same_letters(value: Any, options: list[str]) -> list[str]:
    """The option ``value`` spells with other case or punctuation ('has', 'H-A-S' for 'HAS')."""
    letters = re.sub(r"[^a-z0-9]", "", str(value).lower())
    return [o for o in options if re.sub(r"[^a-z0-9]", "", o.lower()) == letters][:1] if letters else []


def _explain_branches(error: jsonschema.ValidationError, source: SourceMap) -> list[Problem]:
    """For a oneOf/anyOf failure, explain the branch the author most plausibly meant."""
    branches: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    instance = error.instance

    def plausibility(item: tuple[int, list[jsonschema.ValidationError]]) -> tuple:
        index, errors = item
        branch = error.validator_value[index]
        type_ok = not any(e.validator == "type" and e.path == error.path for e in errors)
        overlap = 0
        if isinstance(instance, dict):
            overlap = len(set(instance) & set(_branch_properties(branch)))
        return (type_ok, overlap, -len(errors))

    _, best = max(branches.items(), key=plausibility)
    explained: list[Problem] = []
    for sub in best:
        explained.extend(_explain(sub, source))
    if not explained:
        explained.append(source.problem(tuple(error.absolute_path), error.message))
    return explained


def _branch_properties(branch: dict) -> list[str]:
    if "$ref" in branch:
        ref = branch["$ref"]
        if ref.startswith("#/definitions/"):
            branch = mapping_schema()["definitions"][ref.split("/")[-1]]
    return list(branch.get("properties", {}))


def _matches(pattern: str, key: Any) -> bool:
    return isinstance(key, str) and re.search(pattern, key) is not None
