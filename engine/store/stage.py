"""Stage a run: its objects as rows of a staging table, read file by file, before the merge.

:func:`object_row` is the one conversion of a graph object to a stored row (and
:func:`row_object` the way back). Staging streams an output directory through
:mod:`engine.output` one graph file at a time, so memory holds one file's objects:

* SQLite: each collection is written to a scratch SQLite file by :func:`stage_to_file`; for a
  large run the two collections are staged at the same time by two worker processes (the
  JSON work is Python's, and a 2-core machine has two). The load then attaches the files.
* PostgreSQL: rows are sent with ``COPY`` into temporary tables of the load's transaction
  (the server parses them while Python reads the next file).

A duplicate ``_key`` in one collection is an :class:`~engine.errors.OutputDirError`.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from ..errors import OutputDirError
from ..output import RAW_DATA, OutputDir, read_graph_file
from .jsontext import dumps

STAGE_COLUMNS = ("_key", "_type", "_class", "properties", "_fromEntityKey", "_toEntityKey", "_mapping")
DIGEST_VERSION = b"etl-store-1"  # part of every run digest: bump when object_row changes
BATCH = 5000

Row = tuple[str, str, str, str, str | None, str | None, str | None]


@dataclass
class StageInfo:
    """What staging one collection found."""

    count: int = 0
    filter_keys: set[str] = field(default_factory=set)  # property names the mapped relationships filter on
    files: list[tuple[str, str]] = field(default_factory=list)  # (path in the graph, sha256) of each file read


def object_row(obj: dict) -> Row:
    """The stored row of a graph object (its ``_key`` and ``_type`` already checked to be strings).

    ``_class`` goes to its column as a list; when the object gave a string it also stays in the
    properties, so the object reads back as it was. ``_rawData`` is not stored. ``obj`` is left
    as it was (this is the loader's innermost loop: a copy and a few pops, no comprehension)."""
    properties = obj.copy()
    key = properties.pop("_key")
    graph_type = properties.pop("_type")
    properties.pop(RAW_DATA, None)
    source = properties.pop("_fromEntityKey", None)
    target = properties.pop("_toEntityKey", None)
    mapping = properties.pop("_mapping", None)
    classes = properties.get("_class")
    if type(classes) is list and all(type(c) is str for c in classes):
        del properties["_class"]
    else:
        classes = [classes] if isinstance(classes, str) else []
    if source is not None and not isinstance(source, str):
        properties["_fromEntityKey"], source = source, None
    if target is not None and not isinstance(target, str):
        properties["_toEntityKey"], target = target, None
    if mapping is not None and not isinstance(mapping, dict):
        properties["_mapping"], mapping = mapping, None
    try:  # orjson directly: this runs once per object
        class_text = orjson.dumps(classes).decode()
        properties_text = orjson.dumps(properties, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # a value orjson cannot write (an integer beyond 64 bits): the slow path
        class_text, properties_text = dumps(classes), dumps(properties)
    return (
        key,
        graph_type,
        class_text,
        properties_text,
        source,
        target,
        None if mapping is None else dumps(mapping),
    )


def row_object(
    key: str,
    graph_type: str,
    classes: Any,
    properties: dict,
    source: str | None = None,
    target: str | None = None,
    mapping: Any = None,
) -> dict:
    """A stored row back as the graph object (the inverse of :func:`object_row`)."""
    obj: dict[str, Any] = {"_key": key, "_type": graph_type, "_class": classes}
    obj.update(properties)
    if source is not None:
        obj["_fromEntityKey"] = source
    if target is not None:
        obj["_toEntityKey"] = target
    if mapping is not None:
        obj["_mapping"] = mapping
    return obj


def mapping_filter_keys(mapping: Any) -> set[str]:
    """The property names a mapping's targetFilterKeys use (``_class``, ``_type``, ``_key`` aside)."""
    from .targets import filter_key_groups

    if not isinstance(mapping, dict):
        return set()
    return {k for group in filter_key_groups(mapping) for k in group} - {"_class", "_type", "_key"}


def collection_rows(output: OutputDir, collection: str, info: StageInfo) -> Iterator[list[Row]]:
    """The rows of one collection, a graph file at a time (each file's digest noted in ``info``)."""
    for path in output.files(collection):
        info.files.append((_name(output, collection, path), file_digest(path)))
        objects = read_graph_file(path, collection)
        rows = [object_row(obj) for obj in objects]
        info.count += len(rows)
        if collection == "relationships":
            for obj in objects:
                if "_mapping" in obj:
                    info.filter_keys |= mapping_filter_keys(obj["_mapping"])
        yield rows


def _name(output: OutputDir, collection: str, path: Path) -> str:
    return f"{collection}/{path.relative_to(output.graph)}"


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot read it: {exc.strerror}") from None


def run_digest(
    output: OutputDir, integration: str, partial_types: frozenset[str], files: list[tuple[str, str]] | None = None
) -> str:
    """A digest of everything a load reads from a run: every graph file's bytes (in order), the
    partial types and the integration. Equal digests mean loading the run again changes nothing.
    ``files`` are the file digests staging noted (else the files are read here)."""
    if files is None:
        files = [(_name(output, c, p), file_digest(p)) for c in ("entities", "relationships") for p in output.files(c)]
    digest = hashlib.sha256(DIGEST_VERSION)
    digest.update(dumps([integration, sorted(partial_types)]).encode())
    for name, file_hash in files:
        digest.update(f"\0{name}\0{file_hash}".encode())
    return digest.hexdigest()


def run_bytes(output: OutputDir) -> int:
    """The size of a run's graph files (to decide whether staging is worth two processes)."""
    return sum(p.stat().st_size for c in ("entities", "relationships") for p in output.files(c))


# -- SQLite: a scratch file per collection ---------------------------------------------------


SCRATCH_TABLE = "stage"


def stage_to_file(output_path: str, collection: str, scratch: str) -> StageInfo:
    """Write one collection of the run at ``output_path`` into the SQLite file ``scratch`` (table
    ``stage``, unique on ``_key``). Runs in a worker process or in-process."""
    output = OutputDir.open(Path(output_path))
    info = StageInfo()
    db = sqlite3.connect(scratch, isolation_level=None)
    try:
        db.execute("PRAGMA page_size=16384")  # as the store's (connect.py): a quarter as many pages to write
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-65536")  # the unique index sorts every key
        columns = ", ".join(f'"{c}" TEXT' for c in STAGE_COLUMNS)
        db.execute(f"CREATE TABLE {SCRATCH_TABLE} ({columns})")
        db.execute("BEGIN")
        with without_cycle_collector():
            for rows in collection_rows(output, collection, info):
                insert_sqlite(db, SCRATCH_TABLE, rows)
        try:
            db.execute(f"CREATE UNIQUE INDEX {SCRATCH_TABLE}_key ON {SCRATCH_TABLE} (_key)")
        except sqlite3.IntegrityError:
            (key,) = db.execute(
                f"SELECT _key FROM {SCRATCH_TABLE} GROUP BY _key HAVING count(*) > 1 ORDER BY _key LIMIT 1"
            ).fetchone()
            raise OutputDirError(f"{output.path}: two {collection} have the _key {key!r}") from None
        db.execute("COMMIT")
    finally:
        db.close()
    return info


@contextmanager
def without_cycle_collector() -> Iterator[None]:
    """Python's cycle collector paused (a load's, a staging worker's): the objects a load makes -
    parsed from JSON, read from the store - hold no cycles, so reference counting frees them; the
    collector would only rescan them as they pile up (a quarter of the time spent reading graph
    files; a third of the mapper's, which holds a chunk of mapped relationships and their
    candidates)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def insert_sqlite(db: Any, table: str, rows: list[Row]) -> None:
    """Insert staging rows into ``table`` with ``db.executemany`` (a sqlite3 connection or
    cursor): one statement per set of NULL columns, which are left out. sqlite3 binds ``None``
    only after looking for an adapter (an AttributeError raised and caught inside), about 1 µs a
    value - as long as inserting the rest of an entity's row, whose last three columns are NULL."""
    groups: dict[tuple[bool, bool, bool], list[Row]] = {}
    for row in rows:  # the first four columns are never NULL
        groups.setdefault((row[4] is None, row[5] is None, row[6] is None), []).append(row)
    for nulls, group in groups.items():
        kept = [0, 1, 2, 3, *(4 + i for i, null in enumerate(nulls) if not null)]
        names = ", ".join(f'"{STAGE_COLUMNS[i]}"' for i in kept)
        statement = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(kept))})"
        db.executemany(statement, map(itemgetter(*kept), group))


def copy_rows(cursor: Any, table: str, rows: Iterator[list[Row]]) -> None:
    """PostgreSQL: send rows into ``table`` with one COPY."""
    columns = ", ".join(f'"{c}"' for c in STAGE_COLUMNS)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for batch in rows:
            for row in batch:
                copy.write_row(row)


def batched(rows: Iterator[Row], size: int = BATCH) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
