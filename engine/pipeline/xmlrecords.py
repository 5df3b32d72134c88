"""XML into JSON-like documents, streamed, with hostile input refused (``response.xml``).

The convention (docs/mapping-format.md, "XML"):

* An element with neither attributes nor child elements is its text, whitespace trimmed
  (``null`` when empty).
* Any other element is an object: its attributes (``attribute_prefix`` + name), its child
  elements by name - a name that repeats gives a list, in document order (names in ``lists``
  always give a list) - and its text, when not blank, under ``text_key``. An attribute whose
  name a child element also has is kept as ``@name``.
* Namespaces: ``strip`` (the default) keeps local names (``soap:Body`` and ``{urn:x}Body``
  are both ``Body``; ``xmlns`` declarations are dropped); ``keep`` keeps names as written
  (``soap:Body``).
* Without ``element``, a file is one document, ``{root name: root value}``. With ``element``
  (a name matched at any depth, or a ``/`` path from the root), every such element is one
  document, converted as it ends and then forgotten: a file of any size streams.

Hostile XML: the parser is expat, fed a chunk at a time. A document that declares an entity
(``<!ENTITY``: the billion laughs, external entities) is refused as a whole; no external DTD
or entity is ever fetched. A DOCTYPE without entities is read as usual.

A malformed record (with ``element``) is skipped with a warning and the records after it are
kept: the parser starts again at the next record element, inside the same ancestors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from xml.parsers import expat

from ..errors import BodyFormatError
from .plan import XmlFormat

CHUNK = 64 * 1024
Warn = Callable[[str], None]


class _Refused(Exception):
    """Raised from a handler: the document declares an entity (never expanded, never fetched)."""


class _Frame:
    """An element being built: its attributes, children and text."""

    __slots__ = ("name", "attributes", "children", "text")

    def __init__(self, name: str, attributes: dict[str, str]):
        self.name = name
        self.attributes = attributes
        self.children: dict[str, Any] = {}
        self.text: list[str] = []


class XmlDocuments:
    """The documents of one XML file; :meth:`read` yields them from a binary stream."""

    def __init__(self, spec: XmlFormat, name: str, warn: Warn):
        self.spec = spec
        self.file = name
        self.warn = warn
        element = spec.element
        self.anywhere = element[-1] if element and not spec.rooted else None  # a name matched at any depth
        self.path = element if spec.rooted else None  # a path from the root
        self.streaming = bool(element)
        self.names: list[str] = []  # the open elements, as matched (local names or as written)
        self.raw_names: list[tuple[str, dict[str, str]]] = []  # as written, with attributes (to restart)
        self.frames: list[_Frame] = []
        self.record_depth: int | None = None  # the depth of the record element being built
        self.ready: list[Any] = []  # documents completed by the last chunk
        self.record_start: tuple[int, int] | None = None  # (absolute offset, line) of the record being built

    # -- names -------------------------------------------------------------------------

    def local(self, name: str) -> str:
        if self.spec.namespaces == "keep":
            return name
        return name.rsplit(":", 1)[-1]

    def is_record(self) -> bool:
        if self.anywhere is not None:
            return self.names[-1] == self.anywhere
        return tuple(self.names) == self.path

    # -- the parser and its handlers -------------------------------------------------------

    def parser(self) -> Any:
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.characters
        parser.EntityDeclHandler = self.refuse_entity
        parser.UnparsedEntityDeclHandler = self.refuse_unparsed
        parser.ExternalEntityRefHandler = self.refuse_external
        return parser

    def refuse_entity(self, name: str, *args: Any) -> None:
        raise _Refused(f"it declares the entity '{name}'")

    def refuse_unparsed(self, name: str, *args: Any) -> None:
        raise _Refused(f"it declares the unparsed entity '{name}'")

    def refuse_external(self, context: Any, base: Any, system_id: Any, public_id: Any) -> int:
        raise _Refused(f"it refers to the external entity {system_id!r}")

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.raw_names.append((name, attributes))
        self.names.append(self.local(name))
        if self.record_depth is None and (not self.streaming or self.is_record()):
            self.record_depth = len(self.names)
            self.record_start = self.position()
        if self.record_depth is not None:
            self.frames.append(_Frame(self.names[-1], self.attributes(attributes)))

    def attributes(self, attributes: dict[str, str]) -> dict[str, str]:
        prefix = self.spec.attribute_prefix
        out = {}
        for name, value in attributes.items():
            if name == "xmlns" or name.startswith("xmlns:"):
                continue
            out[prefix + self.local(name)] = value
        return out

    def characters(self, text: str) -> None:
        if self.frames:
            self.frames[-1].text.append(text)

    def end(self, name: str) -> None:
        depth = len(self.names)
        self.raw_names.pop()
        self.names.pop()
        if self.record_depth is None:
            return
        frame = self.frames.pop()
        value = self.value(frame)
        if depth > self.record_depth:
            self.attach(self.frames[-1], frame.name, value)
            return
        self.record_depth = None
        self.record_start = None
        self.ready.append(value if self.streaming else {frame.name: value})

    def value(self, frame: _Frame) -> Any:
        text = "".join(frame.text).strip()
        if not frame.attributes and not frame.children:
            return text or None
        out: dict[str, Any] = dict(frame.attributes)
        for name, child in frame.children.items():
            if name in out:  # an attribute of the same name keeps its value as @name
                out["@" + name] = out.pop(name)
            out[name] = list(child) if isinstance(child, _Many) else child
        if text:
            out[self.spec.text_key] = text
        return out

    def attach(self, parent: _Frame, name: str, value: Any) -> None:
        children = parent.children
        if name in children:
            existing = children[name]
            if isinstance(existing, _Many):
                existing.append(value)
            else:
                children[name] = _Many([existing, value])
        elif name in self.spec.lists:
            children[name] = _Many([value])
        else:
            children[name] = value

    # -- reading ---------------------------------------------------------------------------

    def position(self) -> tuple[int, int]:
        """(absolute byte offset, line) of the parser's current event."""
        return self.base + self.active.CurrentByteIndex, self.line_base + self.active.CurrentLineNumber

    def read(self, stream: BinaryIO) -> Iterator[Any]:
        """Every document of the file, as each is completed."""
        self.active = self.parser()
        self.base = 0  # the absolute offset of the active parser's byte 0
        self.line_base = 0  # lines before the active parser's line 1
        self.buffer = bytearray()  # the bytes from buffer_start on: what a restart may need
        self.buffer_start = 0
        self.lines_trimmed = 0  # newlines before buffer_start
        self.parsed = 0  # absolute offset: the bytes before it were fed to a parser
        self.skipping: int | None = None  # after a malformed record: where to look for the next one
        while True:
            chunk = stream.read(CHUNK)
            final = not chunk
            self.buffer += chunk
            while True:
                if self.skipping is not None and not self.resume():
                    break  # the next record has not arrived (yet)
                data = bytes(self.buffer[self.parsed - self.buffer_start :])
                self.parsed = self.buffer_start + len(self.buffer)
                try:
                    self.active.Parse(data, final)
                except _Refused as exc:
                    raise BodyFormatError(
                        f"refused to read {self.file} as XML: {exc} (entity declarations are how XML bombs and "
                        f"external entity attacks work; they are never expanded)"
                    ) from None
                except expat.ExpatError as exc:
                    yield from self.completed()
                    self.recover(exc)
                    continue
                yield from self.completed()
                break
            if final:
                return
            self.trim()

    def completed(self) -> list[Any]:
        ready, self.ready = self.ready, []
        return ready

    def recover(self, error: expat.ExpatError) -> None:
        """A malformed record is skipped (with a warning) and reading goes on at the next
        record element; anywhere else, the file cannot be read."""
        line = self.line_base + error.lineno
        message = expat.ErrorString(error.code)
        if self.record_start is None or self.record_depth is None or not self.streaming:
            hint = "" if self.streaming else " (give response.xml.element to keep the other records of a file)"
            raise BodyFormatError(
                f"{self.file} is not well-formed XML: line {line}, column {error.offset + 1}: {message}{hint}"
            )
        record = self.names[self.record_depth - 1] if len(self.names) >= self.record_depth else "record"
        self.warn(
            f"{self.file}: line {line}: the <{record}> record starting at line {self.record_start[1]} is "
            f"malformed XML ({message}); skipped, the records after it are kept"
        )
        ancestors = self.raw_names[: self.record_depth - 1]
        error_at = self.base + self.active.ErrorByteIndex
        self.frames.clear()
        self.record_depth = None
        self.record_start = None
        self.raw_names = list(ancestors)
        self.names = [self.local(name) for name, _ in ancestors]
        self.skipping = max(error_at, self.buffer_start)

    def record_pattern(self) -> re.Pattern[bytes]:
        """The start tag of a record element (with any namespace prefix)."""
        name = (self.anywhere or (self.path[-1] if self.path else "")).rsplit(":", 1)[-1]
        return re.compile(rb"<(?:[\w.-]+:)?" + re.escape(name.encode()) + rb"[\s/>]")

    def resume(self) -> bool:
        """After a malformed record: a new parser, started at the next record element in the
        buffer, inside the ancestors the record had. False while none has arrived yet."""
        assert self.skipping is not None
        found = self.record_pattern().search(self.buffer, self.skipping - self.buffer_start)
        if found is None:
            return False
        start = self.buffer_start + found.start()
        prefix = "".join(
            "<" + name + "".join(f' {k}="{_escape(v)}"' for k, v in attributes.items()) + ">"
            for name, attributes in self.raw_names
        ).encode()
        self.raw_names.clear()
        self.names.clear()
        self.active = self.parser()
        self.base = start - len(prefix)
        self.line_base = self.lines_trimmed + self.buffer[: found.start()].count(b"\n")
        self.skipping = None
        self.parsed = start
        self.active.Parse(prefix, False)
        return True

    def trim(self) -> None:
        """Forget the buffered bytes no restart can need: those before the record being built,
        or before the place the next record is looked for."""
        if self.skipping is not None:
            keep = max(self.skipping, self.buffer_start + len(self.buffer) - 256)  # a start tag split in two
        elif self.record_start is not None:
            keep = self.record_start[0]
        else:
            keep = self.parsed
        cut = min(keep, self.parsed) - self.buffer_start
        if cut <= 0:
            return
        self.lines_trimmed += self.buffer[:cut].count(b"\n")
        del self.buffer[:cut]
        self.buffer_start += cut
        if self.skipping is not None:
            self.skipping = max(self.skipping, self.buffer_start)


class _Many(list):
    """The values of a repeated child element (a list the converter may still append to)."""


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
