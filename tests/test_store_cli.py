"""The store's commands and its schema: etl load / export (j1 round trip through visualize, diff
and load; NDJSON), usage errors, ETL_STORE, exit codes in --help, migrations and a newer store."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from engine.errors import StoreVersionError
from engine.store import schema
from engine.store.connect import open_store
from engine.store.url import parse_store_url
from tests.conftest import MAPPINGS
from tests.storetools import entity, mapped, rows, store_url, write_run

__all__ = ["store_url"]  # fixture


@pytest.fixture(scope="module")
def digicert_run(tmp_path_factory):
    from click.testing import CliRunner

    from engine.cli import main

    out = tmp_path_factory.mktemp("digicert") / "out"
    result = CliRunner().invoke(main, ["run", str(MAPPINGS / "digicert.yaml"), "--offline", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_export_j1_round_trips_through_diff_visualize_and_load(etl, store_url, digicert_run, tmp_path):
    assert etl("load", digicert_run, "--store", store_url, "--integration", "digicert", "-q").exit_code == 0
    exported = tmp_path / "export"
    result = etl("export", "--store", store_url, "--instance", "digicert", "--output", exported)
    assert result.exit_code == 0, result.output
    assert "11 entities, 19 relationships (j1; instances: digicert)" in result.stdout
    summary = json.loads((exported / "summary.json").read_text())
    assert summary["metadata"]["integration"] == {"id": "digicert", "instance": "digicert"}
    assert [s["id"] for s in summary["integrationStepResults"]] == ["digicert"]
    same = etl("diff", digicert_run, exported)  # _rawData is not stored, and diff ignores it
    assert same.exit_code == 0, same.stdout
    page = etl("visualize", exported, "--output", tmp_path / "graph.html")
    assert page.exit_code == 0 and "11 entities, 19 relationships" in page.stdout
    back = etl("load", exported, "--store", store_url, "--instance", "copy")  # the summary names the integration
    assert back.exit_code == 0 and "(instance copy, integration digicert)" in back.stdout
    again = etl("export", "--store", store_url, "--output", exported)  # the whole store, replacing the export
    assert again.exit_code == 0 and "22 entities" in again.stdout and "instances: copy, digicert" in again.stdout


def test_export_ndjson_resolves_mapped_relationships(etl, store_url, tmp_path):
    domain = {"_type": "domain", "_class": "Domain", "domainName": "a.example"}
    run = write_run(
        tmp_path / "run",
        [entity("c1"), entity("c2")],
        [
            mapped("c1", domain, [["_class", "domainName"]]),
            mapped("c2", {**domain, "domainName": "b"}, None, skip=True),
        ],
    )
    assert etl("load", run, "--store", store_url, "--integration", "acme", "-q").exit_code == 0
    out = tmp_path / "ndjson"
    result = etl("export", "--store", store_url, "--format", "ndjson", "--output", out)
    assert result.exit_code == 0, result.output
    entities = [json.loads(line) for line in (out / "entities.ndjson").read_text().splitlines()]
    relationships = [json.loads(line) for line in (out / "relationships.ndjson").read_text().splitlines()]
    placeholder = "placeholder:domain:_class=Domain:domainName=a.example"
    assert [e["_key"] for e in entities] == ["c1", "c2", placeholder]
    assert relationships == [
        {
            "_key": f"c1|has|{placeholder}",
            "_type": "acme_host_has_domain",
            "_class": "HAS",
            "displayName": "HAS",
            "_fromEntityKey": "c1",
            "_toEntityKey": placeholder,
        }
    ]
    assert etl("export", "--store", store_url, "--format", "ndjson", "--output", out).exit_code == 0  # replaced


def test_load_usage_errors_name_what_to_do(etl, tmp_path):
    url = f"sqlite:///{tmp_path / 'graph.db'}"
    run = write_run(tmp_path / "run", [entity("h1")])
    missing = etl("load", run, "--store", url)
    assert missing.exit_code == 2 and "pass --integration ID" in missing.stderr
    nostore = etl("load", run, "--integration", "acme", env={"ETL_STORE": ""})
    assert nostore.exit_code == 2 and "--store" in nostore.stderr
    bad = etl("load", run, "--store", "mysql://db/graph", "--integration", "acme")
    assert bad.exit_code == 2 and "unsupported store 'mysql'" in bad.stderr
    notrun = etl("load", tmp_path, "--store", url, "--integration", "acme")
    assert notrun.exit_code == 3 and "no summary.json" in notrun.stderr
    via_env = etl("load", run, "--integration", "acme", env={"ETL_STORE": url})
    assert via_env.exit_code == 0 and "graph.db (instance acme, integration acme)" in via_env.stdout
    absent = etl("export", "--store", f"sqlite:///{tmp_path / 'nothing.db'}", "--output", tmp_path / "x")
    assert absent.exit_code == 5 and "does not exist" in absent.stderr
    unknown = etl("export", "--store", url, "--instance", "nope", "--output", tmp_path / "x")
    assert unknown.exit_code == 5 and "no instance 'nope' (instances: acme)" in unknown.stderr
    diff = etl("diff", "--store", url, "--instance", "acme")
    assert diff.exit_code == 2 and "--since" in diff.stderr
    since = etl("diff", "--store", url, "--instance", "acme", "--since", "yesterday")
    assert since.exit_code == 2 and "neither a duration ago" in since.stderr
    dirs = etl("diff", run, run, "--since", "1d")
    assert dirs.exit_code == 2


def test_a_postgres_password_never_shows(etl, tmp_path):
    run = write_run(tmp_path / "run", [entity("h1")])
    result = etl("load", run, "--store", "postgresql://etl:s3cr3t-pw@127.0.0.1:1/nowhere", "--integration", "acme")
    assert result.exit_code == 5
    assert "s3cr3t-pw" not in result.output and "***" in result.stderr


@pytest.mark.parametrize("command", ["load", "export", "run", "diff"])
def test_help_lists_exit_codes_and_every_option_has_help(etl, command):
    from engine.cli import main

    result = etl(command, "--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout and "70  internal error" in result.stdout
    assert "ETL_STORE" in result.stdout
    for param in main.commands[command].params:
        if isinstance(param, __import__("click").Option):
            assert param.help, f"{command} {param.opts} has no help"


def test_an_older_store_is_upgraded_in_place(store_url, tmp_path):
    engine = open_store(parse_store_url(store_url))  # creates the current schema ...
    with engine.write() as conn:  # ... which we take back to schema 1, as an old etl left it
        for index in schema.INDEXES_V2:
            conn.execute(sa.schema.DropIndex(index))
        conn.execute(sa.schema.DropTable(schema.loads))
        conn.execute(sa.update(schema.meta).values(value="1"))
        iid = conn.execute(sa.insert(schema.instances).values(name="old", integration="acme")).inserted_primary_key[0]
        conn.execute(
            sa.insert(schema.entities).values(
                instance_id=iid,
                _key="h1",
                _type="t",
                _class=["Host"],
                properties={"a": [1]},
                _version=1,
                _createdOn=1,
                _beginOn=1,
            )  # fmt: skip
        )
    engine.close()
    store = open_store(parse_store_url(store_url), create=False)  # even a read-only command upgrades
    with store.read() as conn:
        assert schema.read_version(conn) == schema.SCHEMA_VERSION
        assert sa.inspect(conn).has_table("etl_loads")
    (row,) = rows(store, "etl_entities", "old")
    assert row["_key"] == "h1"
    from engine.store.load import load_run

    result = load_run(store, write_run(tmp_path / "run", [entity("h2")]), integration="acme", instance="old")
    assert result.counts["entities"].to_json() == {"staged": 1, "created": 1, "ended": 1}
    store.close()


def test_a_newer_store_is_refused(etl, store_url):
    store = open_store(parse_store_url(store_url))
    with store.write() as conn:
        conn.execute(sa.update(schema.meta).values(value=str(schema.SCHEMA_VERSION + 1)))
    store.close()
    with pytest.raises(StoreVersionError, match="newer than this etl's"):
        open_store(parse_store_url(store_url))
    result = etl("export", "--store", store_url, "--output", "out")
    assert result.exit_code == 5 and "upgrade etl" in result.stderr
