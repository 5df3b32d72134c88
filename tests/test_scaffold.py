"""``etl new NAME`` (a starter mapping, a cassette folder, a replay test and the editor schema),
``etl schema -o FILE``, and the ``yaml-language-server`` modeline of every example."""

from __future__ import annotations

import json
import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import EXIT_INVALID_MAPPING, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE
from engine.pipeline.compile import compile_file
from engine.pipeline.load import mapping_schema
from tests.conftest import ROOT
from tests.fakes.paging import PagingApi, require_bearer, require_header
from tests.graphtools import read_output

MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)$")
TOKEN = "acme-demo-token-0123456789"
STARTER = ("mappings/acme.yaml", "cassettes/acme/README.md", "tests/test_acme.py")


def new(etl, root: Path, *args):
    return etl("new", *args, "--directory", root)


def schema_named_by(mapping: Path) -> Path:
    """The file the mapping's first-line modeline names, resolved as editors do (from the mapping)."""
    match = MODELINE.fullmatch(mapping.read_text(encoding="utf-8").splitlines()[0])
    assert match, f"{mapping} does not start with a yaml-language-server modeline"
    return (mapping.parent / match.group(1)).resolve()


# ----------------------------------------------------------------------------------------
# etl new


def test_new_writes_a_starter_that_validates(etl, tmp_path):
    root = tmp_path / "project"
    result = new(etl, root, "acme")
    assert result.exit_code == EXIT_OK, result.stderr
    for path in STARTER:
        assert f"wrote {root / path}" in result.stdout
    assert f"{root / '.etl/mapping.schema.json'}: written" in result.stdout
    assert "etl validate mappings/acme.yaml" in result.stdout  # the next steps
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(
        [*STARTER, ".etl/mapping.schema.json"]
    )
    mapping = root / "mappings" / "acme.yaml"
    validated = etl("validate", mapping)
    assert validated.exit_code == EXIT_OK, validated.stderr
    assert f"{mapping}: ok (2 steps" in validated.stdout
    # The modeline names the schema etl new wrote, the one inside the installed package.
    assert schema_named_by(mapping) == (root / ".etl" / "mapping.schema.json").resolve()
    assert json.loads(schema_named_by(mapping).read_text()) == mapping_schema()
    readme = (root / "cassettes" / "acme" / "README.md").read_text()
    assert "--cassette cassettes/acme/full-run.yaml --record-mode once" in readme
    py_compile.compile(str(root / "tests" / "test_acme.py"), doraise=True)


def test_the_starter_maps_what_a_new_vendor_needs(etl, tmp_path):
    assert new(etl, tmp_path, "acme_cloud").exit_code == EXIT_OK
    plan = compile_file(tmp_path / "mappings" / "acme_cloud.yaml")
    assert (plan.integration_id, plan.integration_name) == ("acme-cloud", "Acme Cloud")
    (source,) = plan.sources
    assert source.auth is not None and source.auth.kind == "bearer"
    (token,) = (value.source for name, value in source.auth.fields if name == "token")
    assert "config.apiToken" in token
    fields = {f.name: f for f in plan.config_fields}
    assert fields["apiToken"].secret and fields["apiToken"].env == "ACME_CLOUD_API_TOKEN"
    account, items = plan.steps
    assert [e.type for e in account.entities] == ["acme_cloud_account"]
    assert items.pagination is not None and items.pagination.kind == "cursor"
    assert [e.type for e in items.entities] == ["acme_cloud_item"]
    assert [r.type for r in items.relationships] == ["acme_cloud_account_has_item"]
    assert plan.offline is not None
    assert plan.offline.cassette == (tmp_path / "cassettes" / "acme_cloud" / "full-run.yaml").resolve()


def test_new_refuses_to_overwrite_and_names_the_files(etl, tmp_path):
    mapping = tmp_path / "mappings" / "acme.yaml"
    mapping.parent.mkdir()
    mapping.write_text("mine\n")
    test = tmp_path / "tests" / "test_acme.py"
    test.parent.mkdir()
    test.write_text("# mine\n")
    result = new(etl, tmp_path, "acme")
    assert result.exit_code == EXIT_USAGE
    assert f"etl: error: etl new acme: {mapping}, {test} already exist; nothing was written" in result.stderr
    assert "--force" in result.stderr
    assert mapping.read_text() == "mine\n" and test.read_text() == "# mine\n"
    assert not (tmp_path / "cassettes").exists() and not (tmp_path / ".etl").exists()
    forced = new(etl, tmp_path, "acme", "--force")
    assert forced.exit_code == EXIT_OK, forced.stderr
    assert etl("validate", mapping).exit_code == EXIT_OK


def test_one_existing_file_is_named_in_the_singular(etl, tmp_path):
    assert new(etl, tmp_path, "acme").exit_code == EXIT_OK
    (tmp_path / "mappings" / "acme.yaml").unlink()
    (tmp_path / "tests" / "test_acme.py").unlink()
    result = new(etl, tmp_path, "acme")
    assert result.exit_code == EXIT_USAGE
    assert f"{tmp_path / 'cassettes/acme/README.md'} already exists; nothing was written" in result.stderr


def test_a_second_vendor_shares_the_schema_and_refreshes_it(etl, tmp_path):
    assert new(etl, tmp_path, "acme").exit_code == EXIT_OK
    result = new(etl, tmp_path, "globex")
    assert result.exit_code == EXIT_OK, result.stderr
    assert ".etl/mapping.schema.json: up to date" in result.stdout
    (tmp_path / ".etl" / "mapping.schema.json").write_text("{}\n")  # written by an older etl
    result = new(etl, tmp_path, "initech")
    assert ".etl/mapping.schema.json: updated" in result.stdout
    assert json.loads((tmp_path / ".etl" / "mapping.schema.json").read_text()) == mapping_schema()


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Acme", "acme"),
        ("acme-cloud", "acme_cloud"),
        ("9lives", "lives"),
        ("acme__cloud", "acme_cloud"),
        ("acme_", "acme"),
        ("a" * 41, "a" * 40),
        ("../acme", "acme"),
        ("_", None),
    ],
)
def test_name_must_be_an_identifier_like_slug(etl, tmp_path, name, suggestion):
    result = new(etl, tmp_path, name)
    assert result.exit_code == EXIT_USAGE
    assert "etl: error: etl new: NAME must be an identifier-like slug" in result.stderr
    assert f"got {name!r}" in result.stderr
    if suggestion:
        assert f"(try '{suggestion}')" in result.stderr
    else:
        assert "(try" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_new_help_says_what_it_writes(etl):
    result = etl("new", "--help")
    assert result.exit_code == EXIT_OK
    for text in ("mappings/NAME.yaml", "cassettes/NAME/README.md", "tests/test_NAME.py", "--force", "--directory"):
        assert text in result.stdout
    assert "new" in etl("--help").stdout


def test_an_unwritable_root_is_a_clear_error(etl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = new(etl, blocker / "project", "acme")
    assert result.exit_code == EXIT_RUN_FAILED
    assert result.stderr == f"etl: error: cannot write {blocker / 'project/mappings/acme.yaml'}: Not a directory\n"


# ----------------------------------------------------------------------------------------
# From `etl new` to a recorded, replay-tested mapping


def run_generated_test(root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ETL_UPDATE_SNAPSHOTS" and not k.startswith("ACME_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_acme.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_from_new_to_a_replay_tested_mapping(etl, tmp_path):
    root = tmp_path / "project"
    assert new(etl, root, "acme").exit_code == EXIT_OK
    mapping = root / "mappings" / "acme.yaml"
    cassette = root / "cassettes" / "acme" / "full-run.yaml"

    skipped = run_generated_test(root)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout
    assert "no cassette yet: record cassettes/acme/full-run.yaml as cassettes/acme/README.md says" in skipped.stdout

    with PagingApi("cursor", 23) as api:
        api.auth = require_bearer(TOKEN)
        live = ("--base-url", api.url, "--config", f"apiToken={TOKEN}")
        # The starter's cursor pagination walks every page.
        paged = etl("run", mapping, *live, "--config", "pageSize=10", "--output", tmp_path / "paged")
        assert paged.exit_code == EXIT_OK, paged.stderr
        assert len([e for e in read_output(tmp_path / "paged")["entities"] if e["_type"] == "acme_item"]) == 23
        assert [r.query.get("cursor") for r in api.data_log()] == [None, "after-10", "after-20"]
        recorded = etl(
            "run", mapping, *live, "--cassette", cassette, "--record-mode", "once", "--output", tmp_path / "o"
        )
        assert recorded.exit_code == EXIT_OK, recorded.stderr
        # As a recording of the real API would be: at the mapping's default base URL.
        cassette.write_text(cassette.read_text().replace(api.url, "https://api.acme.example/v1"))
    assert TOKEN not in cassette.read_text()

    first = run_generated_test(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 passed" in first.stdout
    snapshot = json.loads((root / "tests" / "snapshots" / "acme" / "full-run.json").read_text())
    assert len(snapshot["entities"]) == 24 and len(snapshot["relationships"]) == 23
    assert snapshot["steps"] == {"fetch-account": "success", "fetch-items": "success"}
    assert "_rawData" not in snapshot["entities"][0]

    assert run_generated_test(root).returncode == 0  # the same graph again

    mapping.write_text(mapping.read_text().replace("          itemId: id\n", "          itemNumber: id\n"))
    changed = run_generated_test(root)
    assert changed.returncode == 1
    assert "the graph differs from" in changed.stdout and "ETL_UPDATE_SNAPSHOTS=1" in changed.stdout


STARTER_AUTH = """\
    auth:                           # every request sends `Authorization: Bearer <apiToken>`
      kind: bearer                  # (another scheme, `token X`: kind api_key, name Authorization)
      token: "{{ config.apiToken }}"
"""
# docs/writing-a-mapping.md, "Other Authorization schemes": an api_key auth named Authorization,
# or a source header.
TOKEN_SCHEME = """\
    auth:
      kind: api_key
      name: Authorization
      value: "token {{ config.apiToken }}"
"""
SSWS_HEADER = """\
    headers:
      Authorization: "SSWS {{ config.apiToken }}"
"""


@pytest.mark.parametrize(("auth", "header"), [(TOKEN_SCHEME, f"token {TOKEN}"), (SSWS_HEADER, f"SSWS {TOKEN}")])
def test_the_documented_authorization_recipes(etl, tmp_path, auth, header):
    assert new(etl, tmp_path, "acme").exit_code == EXIT_OK
    mapping = tmp_path / "mappings" / "acme.yaml"
    assert mapping.read_text().count(STARTER_AUTH) == 1
    mapping.write_text(mapping.read_text().replace(STARTER_AUTH, auth))
    cassette = tmp_path / "recorded.yaml"
    with PagingApi("cursor", 3) as api:
        api.auth = require_header("Authorization", header)
        result = etl(
            "run", mapping, "--base-url", api.url, "--config", f"apiToken={TOKEN}", "--output", tmp_path / "out",
            "--cassette", cassette, "--record-mode", "once",
        )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.stderr
    assert TOKEN not in cassette.read_text()


# ----------------------------------------------------------------------------------------
# etl schema -o, and the modeline of every example


def test_schema_output_writes_what_schema_prints(etl, tmp_path):
    target = tmp_path / "editor" / "mapping.schema.json"
    result = etl("schema", "-o", target)
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout == f"{target}: written\n"
    assert json.loads(target.read_text()) == json.loads(etl("schema").stdout) == mapping_schema()
    assert etl("schema", "--output", target).stdout == f"{target}: up to date\n"
    target.write_text("{}")
    assert etl("schema", "-o", target).stdout == f"{target}: updated\n"


def test_schema_output_that_cannot_be_written(etl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = etl("schema", "-o", blocker / "mapping.schema.json")
    assert result.exit_code == EXIT_RUN_FAILED
    assert result.stderr.startswith(f"etl: error: cannot write {blocker / 'mapping.schema.json'}: ")


def test_every_example_names_the_schema_in_its_modeline():
    examples = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        assert schema_named_by(example) == (ROOT / "engine" / "schema" / "mapping.schema.json").resolve(), example


def test_an_invalid_starter_edit_is_located(etl, tmp_path):
    """The starter is a normal mapping: a typo in it is reported as usual."""
    assert new(etl, tmp_path, "acme").exit_code == EXIT_OK
    mapping = tmp_path / "mappings" / "acme.yaml"
    mapping.write_text(mapping.read_text().replace("records: items", "recrods: items"))
    result = etl("validate", mapping)
    assert result.exit_code == EXIT_INVALID_MAPPING
    assert "unknown key 'recrods'" in result.stderr
