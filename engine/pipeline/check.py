"""Stage 6: check graph objects before they are written.

One :class:`GraphChecker` per run sees every entity and relationship. It enforces the
JupiterOne rules that make a graph uploadable: keys of at least 10 characters, unique
across entities and relationships; ``name``/``displayName`` and the data-model
properties each class requires; relationships whose endpoints exist. Whatever fails is
not written, is counted per type, and makes that type a partial dataset so a later sync
never deletes what it did not see.

Identity is exact: keys are compared as whole strings, never by a hash alone. The key index
keeps a large run's keys on disk, and in memory only the recent ones and a filter of a few
bytes a key (see :class:`KeyIndex`): a run of four million keys peaks near 110 MB.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from .. import datamodel
from ..errors import OutputError

MIN_KEY_LENGTH = 10

# A run's first keys are held as strings (exact, fast, about 160 bytes a key); past this
# many (2,000 records making an entity and three relationships each) they go to disk.
SPILL_AT = 1 << 13
# Once on disk, keys are written a generation at a time; the last two stay in memory.
GENERATION = 1 << 12
# Up to this many keys on disk, the filter is the set of their hashes (set speed, about 70
# bytes a key: 18 MB at most); past it, a Bloom filter (3 to 6 bytes a key, slower to ask).
HASHES_AT_MOST = 1 << 18
# Keys looked up in the unindexed files before they are indexed (SQLite) once and for all.
SEARCHES_BEFORE_INDEX = 8
_SQLITE_CACHE_KIB = 1024  # SQLite's page cache for the indexed keys
_CHUNK = 1 << 12  # keys inserted in one statement (SQLite parses its JSON array whole)
_READ = 1 << 20  # bytes read at a time from the files of keys

ENTITY, RELATIONSHIP = 0, 1

# The hash the on-disk index's filters are built on. A filter only ever rules a key out (its
# hash is not in the set, or one of its bits is not set: the key was never written); a key
# it lets through is looked up and compared in full. Tests replace it (with a constant, say)
# to make every key collide.
_hash = hash


class KeyIndex:
    """Every key accepted so far, entities and relationships (one namespace), compared exactly:
    what duplicates are found against and what relationships resolve against.

    A run's first :data:`SPILL_AT` keys are held as strings, in two sets (``entities``,
    ``relationships``). Past that, keys go to disk (:class:`_KeysOnDisk`) a generation of
    :data:`GENERATION` keys at a time, and memory holds, however large the graph:

    * the strings of the current generation and of the previous one (``old_*``), and of the
      entities recently found on disk (``found``: endpoints are mostly entities of the same
      record or a few hot ones, such as an account);
    * a filter of the keys on disk, which rules out every new key but a few without reading
      the disk: the set of their hashes up to :data:`HASHES_AT_MOST` keys (as fast as the
      strings, and half their memory), then a Bloom filter (3 to 6 bytes a key).

    A key the filter lets through is looked for in the recent strings, then on disk, where it
    is compared whole: a hash never decides alone. Only the keys of ``listed_types`` (those
    ``{type: X}`` endpoints enumerate) are kept as lists in memory.
    """

    def __init__(
        self,
        listed_types: frozenset[str] = frozenset(),
        *,
        spill_dir: Path | None = None,
        spill_at: int | None = None,
    ) -> None:
        self.types: set[str] = set()
        self.listed_types = listed_types
        self.keys_by_type: dict[str, list[str]] = {}
        self.entities: set[str] = set()  # every key so far; once on disk, the current generation's
        self.relationships: set[str] = set()
        self.spill_dir = spill_dir
        self.room = SPILL_AT if spill_at is None else spill_at  # keys until the generation ends
        self.disk: _KeysOnDisk | None = None
        self.old_entities: set[str] = set()
        self.old_relationships: set[str] = set()
        self.found: set[str] = set()
        self.hashes: set[int] | None = set()  # the filter while it is a set of hashes
        self.filters: list[tuple[bytearray, int]] = []  # then, Bloom filters
        self.filter_room = 0
        self.count = 0  # keys on disk

    # -- questions -----------------------------------------------------------------------

    # GraphChecker asks these inline (they run for every key): change both together.

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is the key of an accepted entity."""
        return key in self.entities or (self.disk is not None and self.entity_on_disk(key))

    def seen(self, key: str) -> bool:
        """Whether ``key`` is taken, by an entity or a relationship."""
        return key in self.entities or key in self.relationships or (self.disk is not None and self.seen_on_disk(key))

    @property
    def spilled(self) -> bool:
        return self.disk is not None

    # -- additions (of keys not seen) ------------------------------------------------------

    def add(self, key: str, entity_type: str) -> None:
        """An accepted entity."""
        self.types.add(entity_type)
        if entity_type in self.listed_types:
            self.keys_by_type.setdefault(entity_type, []).append(key)
        self.entities.add(key)
        self.room -= 1
        if self.room < 0:
            self.next_generation()

    def add_relationship(self, key: str) -> None:
        self.relationships.add(key)
        self.room -= 1
        if self.room < 0:
            self.next_generation()

    def next_generation(self) -> None:
        """Write the current generation to disk and start the next (the first time: spill)."""
        if self.disk is None:
            self.disk = _KeysOnDisk(self.spill_dir)
        entities, relationships = self.entities, self.relationships
        self.disk.append(entities, ENTITY)
        self.disk.append(relationships, RELATIONSHIP)
        self.count += len(entities) + len(relationships)
        if self.hashes is not None:
            self.hashes.update(map(_hash, entities))
            self.hashes.update(map(_hash, relationships))
            if self.count > HASHES_AT_MOST:
                self._to_bloom_filter()
        else:
            self._filter_keys(entities)
            self._filter_keys(relationships)
        entities |= self.found  # looked up on disk: recent for one more generation
        self.old_entities, self.old_relationships = entities, relationships
        self.entities, self.relationships, self.found = set(), set(), set()
        self.room = GENERATION

    def spill(self) -> None:
        """Move the keys to disk now (they go by themselves past :data:`SPILL_AT`)."""
        if self.disk is None:
            self.next_generation()

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()

    # -- on disk -------------------------------------------------------------------------

    def _filtered_out(self, key: str) -> bool:
        """Whether the filter rules ``key`` out: certainly not on disk."""
        hashes = self.hashes
        if hashes is not None:
            return _hash(key) not in hashes
        return self._bloom_rules_out(key)

    def _bloom_rules_out(self, key: str) -> bool:
        h = _hash(key)
        for bits, mask in self.filters:
            p = h & mask
            if bits[p >> 3] >> (p & 7) & 1:
                step = h >> 32
                p = (h + step) & mask
                if bits[p >> 3] >> (p & 7) & 1:
                    p = (h + 2 * step) & mask
                    if bits[p >> 3] >> (p & 7) & 1:
                        return False
        return True

    def seen_on_disk(self, key: str) -> bool:
        """Whether ``key`` is taken by a key written to disk (or recently read back)."""
        hashes = self.hashes
        if hashes is not None:
            if _hash(key) not in hashes:  # nearly every new key ends here
                return False
        elif self._bloom_rules_out(key):
            return False
        if key in self.old_entities or key in self.old_relationships or key in self.found:
            return True
        assert self.disk is not None
        return self.disk.kind(key) is not None

    def entity_on_disk(self, key: str) -> bool:
        """Whether ``key`` is an entity key written to disk (or recently read back)."""
        if key in self.found:
            return True
        if key in self.old_entities:
            self._keep(key)
            return True
        if self._filtered_out(key) or key in self.relationships or key in self.old_relationships:
            return False
        assert self.disk is not None
        if self.disk.kind(key) != ENTITY:
            return False
        self._keep(key)
        return True

    def _keep(self, key: str) -> None:
        """Keep an entity key found in the previous generation or on disk at hand."""
        self.found.add(key)
        self.room -= 1
        if self.room < 0:
            self.next_generation()

    # The Bloom filter: filters of at least 24 bits a key with 3 bits set by key (under 0.2%
    # false positives), the next twice the size of the last when it is full. The bit
    # positions come from the key's 64-bit hash (h1 + i * h2, Kirsch and Mitzenmacher).

    def _to_bloom_filter(self) -> None:
        """Replace the set of hashes with a Bloom filter of every key on disk (read back once);
        the keys on disk are indexed now: the filter's false positives are looked up there."""
        assert self.disk is not None
        self.hashes = None
        self._grow_filter(2 * self.count)
        for keys in self.disk.all_keys():
            self._filter_keys(keys)
        self.disk.index()

    def _grow_filter(self, capacity: int) -> None:
        bits = 1 << (capacity * 24 - 1).bit_length()
        self.filters.append((bytearray(bits >> 3), bits - 1))
        self.filter_room = bits // 24

    def _filter_keys(self, keys: Collection[str]) -> None:
        bits, mask = self.filters[-1]
        for key in keys:
            h = _hash(key)
            step = h >> 32
            p = h & mask
            bits[p >> 3] |= 1 << (p & 7)
            p = (h + step) & mask
            bits[p >> 3] |= 1 << (p & 7)
            p = (h + 2 * step) & mask
            bits[p >> 3] |= 1 << (p & 7)
        self.filter_room -= len(keys)
        if self.filter_room <= 0:
            self._grow_filter((mask + 1) // 24 * 2)


class _KeysOnDisk:
    """The keys a run wrote to disk: first appended to two files (entities, relationships), one
    JSON string a line, which costs next to nothing; looked up there by a search through the
    file (``\\n"key"\\n``: a raw newline or quote never occurs inside a JSON string, so a line
    matches whole or not at all). After :data:`SEARCHES_BEFORE_INDEX` lookups, or once the
    filter is a Bloom filter (whose false positives are looked up), the keys are indexed in
    a SQLite table (:class:`_Table`) and go there from then on.

    The files are unnamed temporary files (nothing is left behind, even by a killed run), in
    ``directory`` or the system's temporary directory."""

    def __init__(self, directory: Path | None):
        self.where = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        try:
            # Open for the run; closed by close(), or when the keys are indexed.
            self.files = [tempfile.TemporaryFile(dir=self.where) for _ in (ENTITY, RELATIONSHIP)]  # noqa: SIM115
            for file in self.files:
                file.write(b"\n")
        except OSError as exc:
            raise OutputError(f"cannot write the key index of the run in {self.where}: {_reason(exc)}") from None
        self.table: _Table | None = None
        self.searches = 0

    def append(self, keys: Collection[str], kind: int) -> None:
        if not keys:
            return
        if self.table is not None:
            self.table.insert(list(keys), kind)
            return
        file = self.files[kind]
        try:
            file.seek(0, os.SEEK_END)
            file.write(_lines(list(keys)))
        except OSError as exc:
            raise OutputError(f"cannot write the key index of the run in {self.where}: {_reason(exc)}") from None

    def kind(self, key: str) -> int | None:
        """ENTITY or RELATIONSHIP if ``key`` was written, else None."""
        if self.table is None:
            self.searches += 1
            if self.searches <= SEARCHES_BEFORE_INDEX:
                return self._search(key)
            self.index()
        assert self.table is not None
        return self.table.kind(key)

    def _search(self, key: str) -> int | None:
        needles = {b"\n" + _json(key, ascii=True) + b"\n"}
        with contextlib.suppress(TypeError, ValueError):  # not UTF-8: written in the ASCII form only
            needles.add(b"\n" + _json(key) + b"\n")
        longest = max(map(len, needles))
        try:
            for kind, file in enumerate(self.files):
                file.seek(0)
                tail = b""
                while block := file.read(_READ):
                    block = tail + block
                    if any(needle in block for needle in needles):
                        return kind
                    tail = block[-longest:]
        except OSError as exc:
            raise OutputError(f"cannot read the key index of the run in {self.where}: {_reason(exc)}") from None
        return None

    def index(self) -> None:
        """Index the keys written so far in a SQLite table; the files go."""
        if self.table is not None:
            return
        table = _Table(self.where)
        for kind, keys in self._from_files():
            table.insert(keys, kind)
        for file in self.files:
            file.close()
        self.table = table

    def all_keys(self) -> Iterator[list[str]]:
        for _, keys in self._from_files() if self.table is None else self.table.all_keys():
            yield keys

    def _from_files(self) -> Iterator[tuple[int, list[str]]]:
        """``(kind, keys)`` in blocks, read back from the files."""
        try:
            for kind, file in enumerate(self.files):
                file.seek(0)
                tail = b""
                while block := file.read(_READ):
                    lines = (tail + block).split(b"\n")
                    tail = lines.pop()
                    keys = [line for line in lines if line]
                    if keys:
                        yield kind, json.loads(b"[" + b",".join(keys) + b"]")
        except OSError as exc:
            raise OutputError(f"cannot read the key index of the run in {self.where}: {_reason(exc)}") from None

    def close(self) -> None:
        for file in self.files:
            file.close()
        if self.table is not None:
            self.table.close()


def _json(value: Any, *, ascii: bool = False) -> bytes:
    """JSON text of ``value``: orjson's (UTF-8), or json's ASCII form (which also carries lone
    surrogates, as escapes)."""
    if ascii:
        return json.dumps(value, separators=(",", ":")).encode()
    return orjson.dumps(value)


def _lines(keys: list[str]) -> bytes:
    """``keys`` as JSON strings, one a line (each line ends with a newline)."""
    try:
        array = _json(keys)
    except (TypeError, ValueError):  # a lone surrogate: not UTF-8
        array = _json(keys, ascii=True)
    # Between the strings of the array is '","' and nowhere else: a raw quote is always a delimiter.
    return array[1:-1].replace(b'","', b'"\n"') + b"\n"


class _Table:
    """Keys in a SQLite table (``key`` text, or the bytes of a key that is not UTF-8, which
    never equal a text value; ``kind``), in an unnamed temporary file: it is unlinked as soon
    as it is open, so nothing is left behind, even by a killed run. The whole run is one
    transaction, with no journal: the file is scratch. Keys go in as JSON arrays SQLite
    expands itself (``json_each``: half the cost of ``executemany``); keys JSON cannot carry
    intact (holding a NUL, or a lone surrogate) go in one by one."""

    SELECT = "SELECT kind FROM keys WHERE key = ?"
    INSERT = "INSERT INTO keys (key, kind) VALUES (?, ?)"
    INSERT_ARRAY = "INSERT INTO keys (key, kind) SELECT value, ? FROM json_each(?)"

    def __init__(self, directory: Path):
        import sqlite3  # only large runs need it

        self.where = directory
        self.Error = sqlite3.Error
        try:
            handle, name = tempfile.mkstemp(prefix=".etl-keys-", suffix=".sqlite", dir=directory)
            os.close(handle)
            try:
                self.db = sqlite3.connect(name, isolation_level=None)
                for pragma in (
                    "journal_mode = OFF",
                    "synchronous = OFF",
                    "locking_mode = EXCLUSIVE",
                    f"cache_size = -{_SQLITE_CACHE_KIB}",
                ):
                    self.db.execute(f"PRAGMA {pragma}")
                self.db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY, kind INTEGER NOT NULL) WITHOUT ROWID")
                self.db.execute("BEGIN")
            finally:
                os.unlink(name)  # the open connection keeps the file
        except (OSError, self.Error) as exc:
            raise OutputError(f"cannot write the key index of the run in {directory}: {_reason(exc)}") from None
        try:
            self.db.execute("SELECT count(*) FROM json_each('[]')").fetchone()
            self.arrays = True
        except self.Error:  # a SQLite built without JSON
            self.arrays = False

    def insert(self, keys: list[str], kind: int) -> None:
        keys.sort()  # SQLite inserts keys in order faster
        try:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                array = _json_array(chunk) if self.arrays else None
                if array is not None:
                    self.db.execute(self.INSERT_ARRAY, (kind, array))
                else:
                    self.db.executemany(self.INSERT, ((_stored(key), kind) for key in chunk))
        except self.Error as exc:
            raise OutputError(f"cannot write the key index of the run in {self.where}: {_reason(exc)}") from None

    def kind(self, key: str) -> int | None:
        try:
            row = self.db.execute(self.SELECT, (_stored(key),)).fetchone()
        except self.Error as exc:
            raise OutputError(f"cannot read the key index of the run: {_reason(exc)}") from None
        return None if row is None else row[0]

    def all_keys(self) -> Iterator[tuple[int, list[str]]]:
        try:
            cursor = self.db.execute("SELECT kind, key FROM keys")
            while rows := cursor.fetchmany(_CHUNK):
                for kind in (ENTITY, RELATIONSHIP):
                    keys = [_text(key) for n, key in rows if n == kind]
                    if keys:
                        yield kind, keys
        except self.Error as exc:
            raise OutputError(f"cannot read the key index of the run: {_reason(exc)}") from None

    def close(self) -> None:
        self.db.close()


def _json_array(keys: list[str]) -> bytes | None:
    """``keys`` as a JSON array SQLite reads back exactly, or None if it cannot."""
    try:
        array = orjson.dumps(keys)
    except TypeError:  # a lone surrogate: not UTF-8
        return None
    return None if b"\\u0000" in array else array  # SQLite's JSON ends a string at a NUL


def _text(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def _stored(key: str) -> str | bytes:
    """How a key is stored: as text, or (a lone surrogate: not UTF-8) as its bytes."""
    try:
        key.encode()
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")
    return key


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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
    def __init__(self, listed_types: frozenset[str] = frozenset(), *, spill_dir: Path | None = None):
        self.index = KeyIndex(listed_types, spill_dir=spill_dir)
        self.reports: dict[str, TypeReport] = {}

    def report(self, graph_type: str) -> TypeReport:
        return self.reports.setdefault(graph_type, TypeReport())

    def close(self) -> None:
        """Drop the on-disk key index, if the run grew one (it goes with the object anyway)."""
        self.index.close()

    # -- entities ------------------------------------------------------------------------

    def check_entity(self, entity: dict) -> Verdict:
        key, entity_type = entity["_key"], entity["_type"]
        problems = entity_problems(entity)
        if problems:
            for message in problems:
                self.report(entity_type).add_invalid(message, key)
            return Verdict.INVALID
        # KeyIndex.seen, inline (this runs for every entity), with the filter's set of hashes
        # asked first: it rules out nearly every new key once the index is on disk.
        index, hashes = self.index, self.index.hashes
        if (
            key in index.entities
            or key in index.relationships
            or (index.disk is not None and (hashes is None or _hash(key) in hashes) and index.seen_on_disk(key))
        ):
            self.report(entity_type).duplicates += 1
            return Verdict.DUPLICATE
        index.add(key, entity_type)
        return Verdict.ACCEPT

    # -- relationships -------------------------------------------------------------------

    def check_relationship(self, relationship: dict) -> Verdict:
        key = relationship["_key"]
        if len(key) < MIN_KEY_LENGTH:
            self.report(relationship["_type"]).add_invalid(f"_key shorter than {MIN_KEY_LENGTH} characters", key)
            return Verdict.INVALID
        # KeyIndex.seen, __contains__ and add_relationship, inline: as in check_entity.
        index, hashes = self.index, self.index.hashes
        on_disk = index.disk is not None
        if (
            key in index.entities
            or key in index.relationships
            or (on_disk and (hashes is None or _hash(key) in hashes) and index.seen_on_disk(key))
        ):
            self.report(relationship["_type"]).duplicates += 1
            return Verdict.DUPLICATE
        mapping = relationship.get("_mapping")
        if mapping is not None:
            source = mapping["sourceEntityKey"]
            if source not in index.entities and not (on_disk and index.entity_on_disk(source)):
                return Verdict.DANGLING
        else:
            source, target = relationship["_fromEntityKey"], relationship["_toEntityKey"]
            for end in (source, target):
                if end not in index.entities and end not in index.found and not (on_disk and index.entity_on_disk(end)):
                    return Verdict.DANGLING
        index.relationships.add(key)
        index.room -= 1
        if index.room < 0:
            index.next_generation()
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
