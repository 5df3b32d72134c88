"""The graph store: every integration instance's runs merged into one database, with history.

The map (dependencies point down; nothing here imports engine/cli or engine/tools)::

    url.py       --store URL / ETL_STORE: sqlite:///graph.db (embedded default) or postgresql://...
    connect.py   open a store: the SQLAlchemy engine, transactions, locks, errors as StoreError
    schema.py    the tables, the schema version, migrations (an older store is upgraded)
    sql.py       the few dialect differences (class membership, property text, staging tables)
    stage.py     a run's objects as staged rows (streamed with engine/output.py), run digests
    load.py      JupiterOne's persister semantics: one transaction per instance load
    targets.py   what a mapped relationship's targetFilterKeys select (shared with visualize)
    mapper.py    mapped relationships resolved against every instance's entities
    history.py   the store at a point in time, as a source of objects for `etl diff`
    export.py    the store (or one instance) as a .j1-integration directory or NDJSON

One code path for both databases: SQLAlchemy Core compiles the same statements for SQLite and
PostgreSQL; only bulk transport differs (executemany into a scratch file vs COPY). See
docs/store.md.

Submodules are imported where they are used (``from engine.store.load import load_run``), so
that a worker process staging a run does not pay for the rest.
"""

STORE_ENV = "ETL_STORE"  # the store URL when --store is not given
