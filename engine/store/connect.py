"""Open a store: one SQLAlchemy engine, the same code for SQLite and PostgreSQL.

SQLite is set up for one writer and many readers: WAL journal (readers never block the
writer), ``synchronous=NORMAL`` (a crash loses no committed load and corrupts nothing), pages of
16 KiB in a new store (:data:`SQLITE_PAGE_SIZE`), a busy
timeout (a second writer waits for the first instead of failing: ``?timeout=SECONDS`` in the URL,
default 600), and transactions begun by etl itself - ``BEGIN IMMEDIATE`` for writes, so a
writer takes the database lock before it reads what it will change.

PostgreSQL writers of different instances run at the same time; :meth:`Store.lock` takes a
transaction-scoped advisory lock (per instance, and one for the mapper) so that loads of the
same instance, and the mapper's work, serialise.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import StoreError
from ..jsonio import decode_json
from ..secrets import log_redaction
from . import schema
from .jsontext import dumps
from .url import POSTGRESQL, SQLITE, StoreUrl

SQLITE_BUSY_TIMEOUT = 600.0  # seconds a writer waits for another one's lock
SQLITE_CACHE_KIB = 65536
# A new store's page size (SQLite's default is 4 KiB; a file keeps the size it was created with).
# A large load writes every page twice (to the WAL, then into the file at the checkpoint): with
# 16 KiB pages its B-trees are shallower, there are a quarter as many pages to write and copy, and
# loading 1,000,000 entities + 1,000,000 relationships takes a fifth less time in the merge and
# the commit. Row lookups read 16 KiB pages, still one page per level.
SQLITE_PAGE_SIZE = 16384
_LOCK_NAMESPACE = 0x45544C  # "ETL": the first key of every advisory lock etl takes
_SCHEMA_LOCK = "etl:schema"
_MAPPER_LOCK = "etl:mapper"


class Store:
    """An open store. ``with store.write() as conn:`` is one write transaction; ``store.read()``
    one consistent read. Database errors become :class:`StoreError`."""

    def __init__(self, url: StoreUrl, engine: Engine):
        self.url = url
        self.engine = engine
        self.dialect = url.dialect
        self.label = url.label

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, waiting for another writer)."""
        with self.errors(), self.engine.connect() as conn:
            conn = conn.execution_options(etl_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: every query in it sees the same state of the store."""
        with self.errors(), self.engine.connect() as conn:
            if self.dialect == POSTGRESQL:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection whose transactions the caller manages (the loader's staging needs it)."""
        with self.errors(), self.engine.connect() as conn:
            yield conn

    def lock(self, conn: Connection, name: str) -> None:
        """Hold ``name``'s lock until the transaction ends (PostgreSQL: an advisory lock; SQLite's
        write transaction already holds the database lock)."""
        if self.dialect == POSTGRESQL:
            key = zlib.crc32(name.encode()) - 2**31  # signed int4
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_NAMESPACE, key)))

    def lock_instance(self, conn: Connection, instance: str) -> None:
        self.lock(conn, f"etl:instance:{instance}")

    def lock_mapper(self, conn: Connection) -> None:
        self.lock(conn, _MAPPER_LOCK)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Database errors as :class:`StoreError` naming the store (nothing was committed)."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(describe(exc, self.label)) from None

    def close(self) -> None:
        self.engine.dispose()


def describe(exc: SQLAlchemyError, label: str) -> str:
    """A one-line message for a database error."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    text = " ".join(str(original).split()) or type(original).__name__
    hint = ""
    lowered = text.lower()
    if "connection" in lowered and ("refused" in lowered or "failed" in lowered):
        hint = "; is the server running, and the URL right?"
    elif "database is locked" in lowered:
        hint = "; another etl command held the store's lock for too long (raise ?timeout=SECONDS)"
    elif "file is not a database" in lowered:
        hint = "; the file is not an SQLite database: give another --store"
    return f"store {label}: {text}{hint}"


def open_store(url: StoreUrl, *, create: bool = True) -> Store:
    """Open (and with ``create``, create or upgrade) the store at ``url``.

    A read-only command passes ``create=False``: a missing SQLite file or an empty database is
    then an error, not a new store. A store older than the code is upgraded either way (in one
    transaction); a newer one is refused with :class:`~engine.errors.StoreVersionError`."""
    if url.url.password:
        log_redaction.redactor.add(url.url.password)
    path = url.sqlite_path
    if path is not None:
        if not create and not path.is_file():
            raise StoreError(f"store {url.label}: {path} does not exist (load a run into it first: etl load)")
        if create and not path.parent.is_dir():
            raise StoreError(f"store {url.label}: the directory {path.parent} does not exist")
    store = Store(url, _engine(url))
    try:
        _ensure_schema(store, create)
    except BaseException:
        store.close()
        raise
    return store


def _engine(url: StoreUrl) -> Engine:
    options: dict[str, Any] = {"json_serializer": dumps, "json_deserializer": decode_json}
    if url.dialect == SQLITE:
        query = dict(url.url.query)
        timeout = query.pop("timeout", None)
        try:
            busy = float(str(timeout)) if timeout is not None else SQLITE_BUSY_TIMEOUT
        except (TypeError, ValueError):
            raise StoreError(f"store {url.label}: timeout={timeout!r} is not a number of seconds") from None
        engine = sa.create_engine(url.url.set(query={}), connect_args={"timeout": busy}, **options)
        _sqlite_setup(engine)
        return engine
    return sa.create_engine(url.url, connect_args={"connect_timeout": 10, "application_name": "etl"}, **options)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # etl begins its own transactions (below)
        cursor = dbapi_connection.cursor()
        for pragma in (
            f"page_size={SQLITE_PAGE_SIZE}",  # before anything creates the file's first page; else ignored
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"cache_size=-{SQLITE_CACHE_KIB}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("etl_write") else "BEGIN")


def _ensure_schema(store: Store, create: bool) -> None:
    with store.read() as conn:
        version = schema.read_version(conn)
    schema.check_version(version, f"store {store.label}")
    if version == schema.SCHEMA_VERSION:
        return
    if version == 0 and not create:
        raise StoreError(f"store {store.label} is empty: no run was loaded into it (etl load)")
    with store.write() as conn:
        store.lock(conn, _SCHEMA_LOCK)
        version = schema.read_version(conn)  # again, under the lock: another process may have done it
        schema.check_version(version, f"store {store.label}")
        schema.migrate(conn, version)
