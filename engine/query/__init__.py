"""J1QL, JupiterOne's query language, on the graph store: ``etl query``, query alerts, and a
Python API for notebooks and services. A query becomes one SQL statement the database runs;
the graph is never loaded into Python.

The map (dependencies point down; nothing here imports engine/cli or engine/tools)::

    lexer.py     text -> tokens with line and column
    parser.py    tokens -> ast.py (small dataclasses); the grammar is in its docstring
    dates.py     date.now - 30 days, date(2024-01-31): epoch milliseconds
    plan.py      the chain of entities and relationships, negated parts, aliases (checked)
    filters.py   WITH / WHERE -> SQL conditions with J1QL's semantics (arrays, !=, shorthand)
    dialect.py   the only SQLite / PostgreSQL differences: JSON access, typed comparisons, indexes
    compiler.py  the plan -> one SQLAlchemy statement (legs per direction, NOT EXISTS, RETURN)
    execute.py   CompiledQuery: SQL built once per database, run with a clock, rows -> data
    output.py    the answer as JSON, an aligned table, or CSV
    rules.py     named queries and a condition on their totals (query-based alerts)

The API (plain dicts in, plain dicts out)::

    from engine import query
    answer = query.run("sqlite:///graph.db", "FIND User THAT !IS Person")   # or an open Store
    answer["type"], answer["totalCount"], answer["data"]
    compiled = query.compile_query("FIND Host WITH name = 'web-1'")        # parse once, run often
    query.run_compiled(store, compiled, now=ms)                            # -> Answer (.to_dict())
    entities, relationships = query.tree_objects(store, "FIND ... THAT ...")  # what a picture draws

See docs/j1ql.md for the language, and every difference from JupiterOne.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .execute import Answer, CompiledQuery

if TYPE_CHECKING:
    from ..store.connect import Store

__all__ = ["Answer", "CompiledQuery", "compile_query", "open_store", "run", "run_compiled", "tree_objects"]


def compile_query(text: str, name: str = "query") -> CompiledQuery:
    """Parse and check ``text``; raises :class:`~engine.errors.QueryError` (``query:1:23: ...``)."""
    return CompiledQuery(text, name)


@contextmanager
def open_store(store: Store | str) -> Iterator[Store]:
    """An open store: ``store`` itself, or the store at a URL (opened read-only, closed after)."""
    if not isinstance(store, str):
        yield store
        return
    from ..store.connect import open_store as open_url
    from ..store.url import parse_store_url

    opened = open_url(parse_store_url(store), create=False)
    try:
        yield opened
    finally:
        opened.close()


def run_compiled(store: Store | str, compiled: CompiledQuery, *, now: int | None = None) -> Answer:
    """Run a compiled query in one read transaction; ``now`` (epoch ms) is ``date.now``."""
    with open_store(store) as opened, opened.read() as conn:
        return compiled.execute(conn, opened.dialect, now=now)


def run(store: Store | str, text: str, *, now: int | None = None) -> dict[str, Any]:
    """Answer a J1QL query: ``{"type": "list"|"table"|"tree", "totalCount": N, "data": ...}``.
    ``store``: a store URL (``sqlite:///graph.db``, ``postgresql://...``) or an open Store."""
    return run_compiled(store, compile_query(text), now=now).to_dict()


def tree_objects(store: Store | str, text: str, *, now: int | None = None) -> tuple[list[dict], list[dict]]:
    """The entities and relationships a query matches, as graph objects (``_key``, ``_type``,
    ``_class``, properties; relationships with ``_fromEntityKey`` and ``_toEntityKey``) - what a
    picture of the answer draws. Any query works: without ``RETURN tree`` it is answered as one."""
    answer = run_compiled(store, compile_query(text).as_tree(), now=now)
    return answer.data["vertices"], answer.data["edges"]
