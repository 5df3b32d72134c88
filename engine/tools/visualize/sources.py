"""What a page is drawn from (:class:`GraphSource`): an output directory, read one file at a
time with :mod:`engine.output` (:class:`DirectorySource`), or a caller's iterables, e.g. a
query's answer (:class:`IterableSource`)."""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ...jsonio import decode_json, encode_json
from ...output import OutputDir, read_graph_file


class GraphSource(Protocol):
    """Entities and relationships that can each be read more than once."""

    def entities(self) -> Iterable[dict]: ...

    def relationships(self) -> Iterable[dict]: ...

    def mappings(self) -> Iterable[dict]:
        """The ``_mapping`` of each mapped relationship (read before the entities)."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """An output directory (or its graph/ folder), read one file at a time."""

    output: OutputDir

    @classmethod
    def open(cls, directory: Path) -> DirectorySource:
        return cls(OutputDir.open(directory, summary_required=False))

    def entities(self) -> Iterable[dict]:
        return self.output.objects("entities")

    def relationships(self) -> Iterable[dict]:
        return self.output.objects("relationships")

    def mappings(self) -> Iterator[dict]:
        """Parses only the files that mention ``"_mapping"`` (one that cannot be read is
        reported when the relationships are read)."""
        for path in self.output.files("relationships"):
            try:
                if b'"_mapping"' not in path.read_bytes():
                    continue
            except OSError:
                continue
            for relationship in read_graph_file(path, "relationships"):
                if isinstance(relationship.get("_mapping"), dict):
                    yield relationship["_mapping"]


class IterableSource:
    """A caller's iterables: the entities are read once; the relationships twice - as they
    are when they are a collection (a list, say), else from a temporary file written as
    they are first read."""

    def __init__(self, entities: Iterable[dict], relationships: Iterable[dict], scratch: Path | None):
        self._entities = entities
        self._relationships = relationships
        self._scratch = scratch
        self._copy: IO[bytes] | None = None

    def entities(self) -> Iterable[dict]:
        return self._entities

    def relationships(self) -> Iterator[dict]:
        if isinstance(self._relationships, Collection):
            yield from self._relationships
        elif self._copy is None:
            self._copy = tempfile.TemporaryFile(dir=self._scratch)  # noqa: SIM115 - closed by close()
            for relationship in self._relationships:
                self._copy.write(encode_json(relationship) + b"\n")
                yield relationship
        else:
            self._copy.seek(0)
            for line in self._copy:
                yield decode_json(line)

    def mappings(self) -> Iterator[dict]:
        for relationship in self.relationships():
            if isinstance(relationship.get("_mapping"), dict):
                yield relationship["_mapping"]

    def close(self) -> None:
        if self._copy is not None:
            self._copy.close()
