"""Stores the query tests share (no tests here): on SQLite and on a real PostgreSQL.

* ``bundled_store``: the four bundled runs (DigiCert, NowSecure, the people directory, the DNS
  zones), run offline once per session and loaded into a store per backend, as the README does;
* ``acme_store``: a small hand-written graph that exercises J1QL's semantics (truth tables,
  typing, arrays, directions, negation, history, a mapped relationship).

PostgreSQL cases skip, saying why, when ``ETL_TEST_POSTGRES_URL`` (default
``postgresql://etl:etl@127.0.0.1/etl_test``) cannot be reached; each store is a schema of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import query
from engine.cli import main
from engine.store.connect import open_store
from engine.store.load import load_run
from engine.store.url import parse_store_url
from tests.conftest import MAPPINGS
from tests.storetools import drop_postgres_schema, entity, mapped, postgres_schema_url, write_run

NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z: date.now in the acme tests
DAY = 86_400_000
BUNDLED = {
    "digicert": MAPPINGS / "digicert.yaml",
    "nowsecure": MAPPINGS / "nowsecure.yaml",
    "people": MAPPINGS / "examples" / "people.yaml",
    "domains": MAPPINGS / "examples" / "domains.yaml",
}


def ask(store: Any, text: str, now: int = NOW) -> dict:
    return query.run(store, text, now=now)


def keys(answer: dict) -> list[str]:
    return [item["_key"] for item in answer["data"]]


def new_store_url(kind: str, folder: Path) -> tuple[str, str | None]:
    """(URL, PostgreSQL schema to drop afterwards)."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'graph.db'}", None
    url, schema = postgres_schema_url()
    return url, schema


def load(url: str, runs: list[tuple[Path, str | None]]) -> None:
    store = open_store(parse_store_url(url))
    try:
        for directory, integration in runs:
            load_run(store, directory, integration=integration, parallel=False)
    finally:
        store.close()


@pytest.fixture(scope="session")
def bundled_runs(tmp_path_factory) -> Path:
    """The four bundled mappings run offline (as `etl run MAPPING --offline` does)."""
    root = tmp_path_factory.mktemp("bundled")
    runner = CliRunner()
    for name, mapping in BUNDLED.items():
        result = runner.invoke(main, ["run", str(mapping), "--offline", "--output", str(root / name), "-q"])
        assert result.exit_code == 0, (name, result.output)
    return root


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def bundled_store(request, bundled_runs, tmp_path_factory) -> Any:
    url, schema = new_store_url(request.param, tmp_path_factory.mktemp("bundled-store"))
    try:
        load(url, [(bundled_runs / name, None) for name in BUNDLED])
        yield url
    finally:
        if schema:
            drop_postgres_schema(schema)


# -- the acme graph ---------------------------------------------------------------------------------


def item(number: int, **props: Any) -> dict:
    return entity(f"item:{number}", "acme_item", ("Item",), **props)


def link(source: str, target: str, cls: str, graph_type: str | None = None, **props: Any) -> dict:
    return {
        "_key": f"{source}|{cls.lower()}|{target}",
        "_type": graph_type or f"acme_{cls.lower()}",
        "_class": cls,
        "_fromEntityKey": source,
        "_toEntityKey": target,
        **props,
    }


def acme_graph() -> tuple[list[dict], list[dict]]:
    entities = [
        # JupiterOne's truth tables, on a property that may be a list
        item(1, flavor="fruit"),
        item(2, flavor="nut-filled"),
        item(3, flavor=["fruit", "nut-filled"]),
        item(4, flavor="non-fruit"),
        item(5, flavor=["non-fruit", "plain"]),
        item(6),
        # typing: one value per entity, in v (no index) and in name (the store's expression index)
        *(
            entity(f"value:{kind}", "acme_value", ("Value",), v=value, name=value)
            for kind, value in (
                ("string", "1"),
                ("number", 1),
                ("float", 1.0),
                ("true", True),
                ("list", [1, "2", True]),
                ("object", {"a": "1"}),
                ("null", None),
                ("text", "Demo-web-01"),
            )
        ),
        entity("text:quoted", "acme_text", ("Text",), v='He said "hi" \\ é\tand left', tags=['a "b"', "c\\d"]),
        # people, accounts and hosts
        entity(
            "user:alice",
            "acme_user",
            ("User",),
            email="alice@example.com",
            admin=True,
            logins=12,
            createdOn=NOW - 2 * DAY,
            tags=["prod", "eu"],
            **{"tag.special-name": "x", "tag.Environment": "prod"},
        ),
        entity(
            "user:bob", "acme_user", ("User",), email="bob@example.com", admin=False, logins=3, createdOn=NOW - 40 * DAY
        ),
        entity("user:carol", "acme_user", ("User",), email="carol@example.com", admin=False, createdOn=NOW - 400 * DAY),
        entity("person:alice", "acme_person", ("Person",), email="alice@example.com", firstName="Alice", age=40),
        entity("person:dave", "acme_person", ("Person",), email="dave@example.com", firstName="Dave", age=30),
        entity("account:main", "acme_account", ("Account",), name="main"),
        entity("host:web", "acme_host", ("Host", "Device"), name="web", ipAddress=["10.0.0.1", "10.0.0.2"]),
        entity("host:db", "acme_host", ("Host",), name="db", ipAddress=["10.0.0.3"]),
        entity("app:shop", "acme_app", ("Application",), name="shop"),
    ]
    relationships = [
        link("user:alice", "person:alice", "IS"),
        link("account:main", "user:alice", "HAS"),
        link("account:main", "user:bob", "HAS"),
        link("account:main", "user:carol", "HAS", weight=3),
        link("user:alice", "host:web", "OWNS"),
        link("user:bob", "host:db", "USES"),
        link("host:web", "host:db", "CONNECTS", port=5432),
        link("host:web", "host:web", "CONNECTS", port=8080),  # to itself
        link("app:shop", "host:web", "DEPLOYED", graph_type="acme_app_deployed_host"),
        mapped("user:bob", {"_class": "Person", "email": "bob@example.com"}, [["_class", "email"]], cls="IS"),
    ]
    return entities, relationships


def hr_graph() -> list[dict]:
    """Another integration's person, whom user:bob's mapped relationship finds."""
    return [entity("hr:bob", "hr_employee", ("Person",), email="bob@example.com", firstName="Bob", age=50)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def acme_store(request, tmp_path_factory) -> Any:
    folder = tmp_path_factory.mktemp("acme")
    url, schema = new_store_url(request.param, folder)
    entities, relationships = acme_graph()
    gone = entity("user:gone", "acme_user", ("User",), email="gone@example.com")
    try:
        first = write_run(folder / "acme-1", [*entities, gone], relationships)
        load(url, [(first, "acme")])
        changed = [dict(e, logins=13) if e["_key"] == "user:alice" else e for e in entities]
        load(url, [(write_run(folder / "acme-2", changed, relationships), "acme")])
        load(url, [(write_run(folder / "hr", hr_graph()), "hr")])
        yield url
    finally:
        if schema:
            drop_postgres_schema(schema)
