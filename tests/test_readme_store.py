"""The README's graph-store sequence, run as written: four bundled runs offline into one store,
and the mapper links certificates to the DNS zones' Domains and NowSecure users to employees."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from tests.conftest import ROOT
from tests.storetools import store_url  # noqa: F401, F811 - the fixture

README = ROOT / "README.md"


def store_commands() -> list[list[str]]:
    """The command lines of the README's "graph store" block."""
    section = README.read_text(encoding="utf-8").split("## The graph store", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def run_readme_sequence(etl, store: str, workdir: Path) -> Path:
    for argv in store_commands():
        assert argv[0] == "etl"
        args = [str(ROOT / a) if a.startswith("mappings/") else a for a in argv[1:]]
        args = [store if a == "sqlite:///graph.db" else a for a in args]
        args = [str(workdir / a) if a.startswith(("runs/", "graph-export")) else a for a in args]
        result = etl(*args)
        assert result.exit_code == 0, (argv, result.stdout, result.stderr)
    return workdir / "graph-export"


def links(export: Path) -> set[tuple[str, str, str, str]]:
    """(type, displayName, verb, type:displayName) of every relationship between a certificate or a
    NowSecure user and an entity of another integration, read from the NDJSON export."""
    entities = {}
    for line in (export / "entities.ndjson").read_text().splitlines():
        entity = json.loads(line)
        entities[entity["_key"]] = entity
    found = set()
    for line in (export / "relationships.ndjson").read_text().splitlines():
        relationship = json.loads(line)
        ends = [entities.get(relationship["_fromEntityKey"]), entities.get(relationship["_toEntityKey"])]
        if None in ends:
            continue
        ends.sort(key=lambda e: e["_type"] not in ("digicert_certificate", "nowsecure_user"))
        ours, theirs = ends
        if ours["_type"] in ("digicert_certificate", "nowsecure_user") and theirs["_type"] in (
            "dns_zone",
            "dns_subdomain",
            "hr_employee",
        ):
            found.add((ours["_type"], ours["displayName"], relationship["_class"], theirs["displayName"]))
    return found


def check_links(export: Path) -> None:
    found = links(export)
    domains = {(name, target) for kind, name, _, target in found if kind == "digicert_certificate"}
    people = {target for kind, _, verb, target in found if kind == "nowsecure_user" and verb == "IS"}
    assert {target for _, target in domains} >= {"example.com", "www.example.com", "shop.example.com", "example.org"}
    assert len(people) >= 2, found  # Alice and Bob are employees; Carol, inactive, is not in the directory


def test_the_readme_store_sequence_links_the_integrations(etl, store_url, tmp_path):  # noqa: F811
    """As written (SQLite), and with --store postgresql://... (as the README says it works)."""
    export = run_readme_sequence(etl, store_url, tmp_path)
    check_links(export)
