"""Store URLs: what ``--store`` (or ``ETL_STORE``) may say, checked before anything connects.

::

    sqlite:///graph.db                  a file, relative to the working directory (created if missing)
    sqlite:////var/lib/etl/graph.db     an absolute path (four slashes)
    graph.db                            a bare path: the same as sqlite:///graph.db
    postgresql://user@host/db           a PostgreSQL database (psycopg 3); also postgres://,
    postgresql://user:password@host:5432/db?sslmode=require    postgresql+psycopg://

A password in a URL is never printed: :attr:`StoreUrl.label` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import StoreUrlError
from . import STORE_ENV

__all__ = ["STORE_ENV", "StoreUrl", "parse_store_url"]
SQLITE, POSTGRESQL = "sqlite", "postgresql"
_EXAMPLES = "e.g. sqlite:///graph.db or postgresql://user@host/db"


@dataclass(frozen=True)
class StoreUrl:
    """A checked store URL: its dialect, the SQLAlchemy URL to connect with, and a printable label."""

    dialect: str  # SQLITE | POSTGRESQL
    url: URL
    label: str  # the URL with any password hidden

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite store (None for PostgreSQL)."""
        return Path(self.url.database or "") if self.dialect == SQLITE else None


def parse_store_url(text: str | None) -> StoreUrl:
    """Check ``text`` (the value of ``--store`` or ``ETL_STORE``); raises :class:`StoreUrlError`."""
    if text is None or not text.strip():
        raise StoreUrlError(f"no store given: pass --store URL or set {STORE_ENV} ({_EXAMPLES})")
    text = text.strip()
    if "://" not in text:
        text = f"sqlite:///{text}"
    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreUrlError(f"--store: {text!r} is not a store URL ({_EXAMPLES})") from None
    backend, _, driver = url.drivername.partition("+")
    label = url.render_as_string(hide_password=True)
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:":
            raise StoreUrlError(
                f"--store: {label} names no database file; give one, e.g. sqlite:///graph.db "
                "(an in-memory store would vanish when the command ends)"
            )
        return StoreUrl(SQLITE, url.set(drivername="sqlite+pysqlite"), label)
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise StoreUrlError(f"--store: {label} names no database (postgresql://user@host/DATABASE)")
        return StoreUrl(POSTGRESQL, url.set(drivername="postgresql+psycopg"), label)
    raise StoreUrlError(
        f"--store: {label}: unsupported store {url.drivername!r}; etl stores the graph in SQLite or "
        f"PostgreSQL ({_EXAMPLES})"
    )
