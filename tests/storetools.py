"""Helpers of the graph store's tests: a store on each backend, hand-written runs, row queries.

``store_url`` (a fixture, parametrised): a fresh SQLite file, and a fresh schema of a real
PostgreSQL database - ``ETL_TEST_POSTGRES_URL`` (``.ci/run`` starts Debian's cluster and sets
it), else ``postgresql://etl:etl@127.0.0.1/etl_test``; when that server cannot be reached, the
PostgreSQL cases skip and say why.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.store.connect import Store, open_store
from engine.store.url import parse_store_url

POSTGRES_URL = os.environ.get("ETL_TEST_POSTGRES_URL", "postgresql://etl:etl@127.0.0.1/etl_test")
_reachable: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (None when it can)."""
    if POSTGRES_URL not in _reachable:
        engine = sa.create_engine(
            make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[POSTGRES_URL] = None
        except Exception as exc:  # noqa: BLE001 - any failure means: skip, saying why
            reason = " ".join(str(exc).split())[:200]
            _reachable[POSTGRES_URL] = (
                f"no PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} ({reason}); "
                "start one as .ci/run does (pg_ctlcluster 15 main start, role etl, database etl_test) or set "
                "ETL_TEST_POSTGRES_URL"
            )
        finally:
            engine.dispose()
    return _reachable[POSTGRES_URL]


def postgres_schema_url() -> tuple[str, str]:
    """A new, empty schema of the test database: (URL whose search_path is that schema, schema)."""
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    schema = f"etl_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_postgres_schema(schema: str) -> None:
    engine = sa.create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Any:
    """The URL of a new, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'graph.db'}"
        return
    url, schema = postgres_schema_url()
    try:
        yield url
    finally:
        drop_postgres_schema(schema)


@pytest.fixture
def store(store_url) -> Any:
    opened = open_store(parse_store_url(store_url))
    yield opened
    opened.close()


# -- hand-written runs ------------------------------------------------------------------------


def entity(key: str, graph_type: str = "acme_host", classes: Any = ("Host",), **props: Any) -> dict:
    return {"_key": key, "_type": graph_type, "_class": list(classes), "name": key, **props}


def relationship(source: str, target: str, graph_type: str = "acme_host_connects_host", **props: Any) -> dict:
    return {
        "_key": f"{source}|connects|{target}",
        "_type": graph_type,
        "_class": "CONNECTS",
        "_fromEntityKey": source,
        "_toEntityKey": target,
        **props,
    }


def mapped(
    source: str,
    target: dict,
    filter_keys: Any,
    *,
    direction: str = "FORWARD",
    skip: bool = False,
    graph_type: str = "acme_host_has_domain",
    cls: str = "HAS",
) -> dict:
    return {
        "_key": f"{source}|{cls.lower()}|{direction}:{json.dumps(target, sort_keys=True)}",
        "_type": graph_type,
        "_class": cls,
        "_mapping": {
            "relationshipDirection": direction,
            "sourceEntityKey": source,
            "targetFilterKeys": filter_keys,
            "targetEntity": target,
            "skipTargetCreation": skip,
        },
        "displayName": cls,
    }


def write_run(
    root: Path,
    entities: list[dict],
    relationships: list[dict] = (),  # type: ignore[assignment]
    *,
    partial: tuple[str, ...] = (),
    integration: dict | None = None,
    per_file: int = 500,
) -> Path:
    """A run's output directory, written by hand (one step, ``per_file`` objects a file)."""
    for collection, objects in (("entities", entities), ("relationships", list(relationships))):
        folder = root / "graph" / "step" / collection
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        for number, start in enumerate(range(0, len(objects), per_file)):
            chunk = objects[start : start + per_file]
            (folder / f"{number:05d}.json").write_text(json.dumps({collection: chunk}))
    metadata: dict[str, Any] = {"partialDatasets": {"types": list(partial)}}
    if integration is not None:
        metadata["integration"] = integration
    summary = {"integrationStepResults": [{"id": "step", "status": "success"}], "metadata": metadata}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


# -- reading the store back ---------------------------------------------------------------------


def rows(store: Store, table: str, instance: str | None = None, *, current: bool | None = None) -> list[dict]:
    """Every row of ``etl_entities`` / ``etl_relationships`` (of ``instance``), as dicts, by key and version."""
    where = []
    if instance is not None:
        where.append("i.name = :instance")
    if current is True:
        where.append('t."_endOn" IS NULL')
    if current is False:
        where.append('t."_endOn" IS NOT NULL')
    sql = (
        f"SELECT t.*, i.name AS instance FROM {table} t JOIN etl_instances i ON i.id = t.instance_id "
        f'{"WHERE " + " AND ".join(where) if where else ""} ORDER BY t."_key", t."_version"'
    )
    with store.read() as conn:
        result = conn.execute(sa.text(sql), {"instance": instance})
        return [dict(r._mapping) for r in result]


def current_keys(store: Store, table: str, instance: str | None = None) -> list[str]:
    return [r["_key"] for r in rows(store, table, instance, current=True)]


def props(row: dict) -> dict:
    value = row["properties"]
    return json.loads(value) if isinstance(value, str) else value
