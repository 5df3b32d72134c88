"""``etl new NAME``: the starter files of a new vendor, as ``dlt init`` writes a pipeline's.

From the project root (the directory holding ``mappings/``), ``etl new NAME`` writes:

    mappings/NAME.yaml            a small commented mapping that passes ``etl validate``: one source
                                  with bearer auth from a secret config field, an account step, a
                                  paginated list step building one entity type, a relationship
    cassettes/NAME/README.md      how to record the cassette the mapping's ``offline`` section names
    tests/test_NAME.py            replays that cassette and compares the graph with a snapshot
                                  (skipped, with the reason, until the cassette is recorded)
    .etl/mapping.schema.json      the JSON Schema the mapping's ``yaml-language-server`` modeline
                                  points at, so that an editor completes and checks it

The schema is a copy of the one inside the installed package (``etl schema -o FILE`` writes it
too), so the modeline works after a plain ``pip install``; it is refreshed on every ``etl new``.
The other files are never overwritten unless ``force`` is given.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..errors import ScaffoldError, ScaffoldWriteError
from ..pipeline.load import mapping_schema

SLUG = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
MAX_NAME_LENGTH = 40
SCHEMA_PATH = Path(".etl") / "mapping.schema.json"  # relative to the project root


@dataclass(frozen=True)
class StarterFile:
    """One file ``etl new`` writes: its path relative to the project root, and its text."""

    path: Path
    text: str


@dataclass(frozen=True)
class Scaffolded:
    """What ``etl new`` did: the files it wrote (relative to ``root``) and the schema's state."""

    root: Path
    written: tuple[Path, ...]
    schema: Path
    schema_status: str  # written, updated or up to date


# ----------------------------------------------------------------------------------------
# Names


def check_name(name: str) -> str:
    """``name`` if it can name a vendor's files, types and environment variables; else a
    :class:`ScaffoldError` saying what a name must look like, with a suggestion."""
    if SLUG.fullmatch(name) and len(name) <= MAX_NAME_LENGTH:
        return name
    suggestion = slug_of(name)
    hint = f" (try '{suggestion}')" if suggestion and suggestion != name else ""
    raise ScaffoldError(
        f"etl new: NAME must be an identifier-like slug of at most {MAX_NAME_LENGTH} characters: lower-case "
        f"letters, digits and single underscores, starting with a letter; got {name!r}{hint}"
    )


def slug_of(text: str) -> str:
    """The slug closest to ``text``: ``"My-Vendor 2"`` -> ``"my_vendor_2"``."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = "_".join(words).lstrip("0123456789_")
    return slug[:MAX_NAME_LENGTH].rstrip("_")


def title_of(name: str) -> str:
    """The display name of a slug: ``"my_vendor"`` -> ``"My Vendor"``."""
    return " ".join(word.capitalize() for word in name.split("_"))


# ----------------------------------------------------------------------------------------
# The files


def scaffold(name: str, root: Path, *, force: bool = False) -> Scaffolded:
    """Write the starter files of vendor ``name`` under ``root``; refuse (a ScaffoldError naming
    them, nothing written) when any of them exists, unless ``force``."""
    check_name(name)
    files = starter_files(name)
    existing = [f.path for f in files if (root / f.path).exists()]
    if existing and not force:
        listed = ", ".join(str(root / path) for path in existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise ScaffoldError(f"etl new {name}: {listed} already {verb}; nothing was written. Pass --force to overwrite")
    for starter in files:
        write_text(root / starter.path, starter.text)
    status = write_schema(root / SCHEMA_PATH)
    return Scaffolded(root, tuple(f.path for f in files), SCHEMA_PATH, status)


def starter_files(name: str) -> tuple[StarterFile, ...]:
    """The mapping, the cassette folder's README and the replay test of vendor ``name``."""
    mapping = Path("mappings") / f"{name}.yaml"
    schema = Path(os.path.relpath(SCHEMA_PATH, mapping.parent)).as_posix()
    values = {
        "name": name,
        "id": name.replace("_", "-"),  # integration ids use '-' where types use '_'
        "title": title_of(name),
        "env": name.upper(),
        "schema": schema,
        "schema_file": SCHEMA_PATH.as_posix(),
    }
    return (
        StarterFile(mapping, MAPPING.substitute(values)),
        StarterFile(Path("cassettes") / name / "README.md", CASSETTE_README.substitute(values)),
        StarterFile(Path("tests") / f"test_{name}.py", REPLAY_TEST.substitute(values)),
    )


def schema_text() -> str:
    """The JSON Schema of mapping files, as ``etl schema`` prints it."""
    return json.dumps(mapping_schema(), indent=2) + "\n"


def write_schema(path: Path) -> str:
    """Write the mapping schema to ``path``: ``written`` (it was not there), ``updated`` (it
    differed: another etl version wrote it) or ``up to date``."""
    text = schema_text()
    try:
        before = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        before = None
    if before == text:
        return "up to date"
    write_text(path, text)
    return "written" if before is None else "updated"


def write_text(path: Path, text: str) -> None:
    """Write ``path`` (and its parent directories); a failure is a ScaffoldWriteError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScaffoldWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------------------
# Templates ($name, $id, $title, $env, $schema, $schema_file; $$ is a dollar sign)

MAPPING = Template(
    """\
# yaml-language-server: $$schema=$schema
#
# $title: a starter mapping written by `etl new $name`. Change what each TODO says to what
# $title's API reference says, then check it as you go:
#
#   etl validate mappings/$name.yaml
#   etl preview mappings/$name.yaml --step fetch-items
#
# The modeline above gives editors (VS Code's YAML extension, any yaml-language-server) the
# mapping format's JSON Schema: completion and checks as you type. After an upgrade of etl,
# `etl schema -o $schema_file` (from the project root) refreshes it.
version: 1

integration:
  id: $id
  name: $title
  description: $title account and its items.     # TODO: what the integration ingests

config:
  apiToken:
    env: ${env}_API_TOKEN
    secret: true                    # redacted from logs, errors, output and cassettes
    description: $title API token with read access
  baseUrl:
    env: ${env}_BASE_URL
    default: https://api.$name.example/v1    # TODO: the API's root URL
    description: API root
  pageSize:
    env: ${env}_PAGE_SIZE
    type: integer
    default: 100
    description: Items per page

sources:
  $name:
    base_url: "{{ config.baseUrl }}"
    auth:                           # every request sends `Authorization: Bearer <apiToken>`
      kind: bearer                  # (another scheme, `token X`: kind api_key, name Authorization)
      token: "{{ config.apiToken }}"
    validate:                       # one cheap call that checks the token before any step
      path: /account                # TODO

# `etl run --offline` replays this cassette; record it first (cassettes/$name/README.md).
offline:
  cassette: ../cassettes/$name/full-run.yaml

steps:
  - id: fetch-account
    name: Fetch the account
    request:
      path: /account                # TODO: an endpoint that returns the account
    entities:
      - resource: Account
        type: ${name}_account
        class: Account
        key: "${name}_account:{{ record.id }}"
        properties:                 # property: JMESPath on the record
          accountId: id
          name: name

  - id: fetch-items
    name: Fetch items
    depends_on: [fetch-account]
    request:
      path: /items                  # TODO: the list endpoint
    pagination:                     # TODO: the API's kind (offset, page, cursor, next_url, link_header)
      kind: cursor
      cursor: next_cursor           # JMESPath to the next page's token in the body; null ends
      cursor_param: cursor          # the query parameter that sends it back
      size_param: limit
      size: "{{ config.pageSize }}"
    records: items                  # JMESPath to the list of records in each page
    entities:
      - resource: Item
        type: ${name}_item
        class: Record               # TODO: the JupiterOne class (Device, User, Application...)
        key: "${name}_item:{{ record.id }}"
        properties:
          itemId: id
          name: name
    relationships:
      - class: HAS                  # ${name}_account_has_item
        from: {type: ${name}_account}
        to: ${name}_item
"""
)

CASSETTE_README = Template(
    """\
# $title cassettes

Recorded API traffic of `mappings/$name.yaml`, replayed by `tests/test_$name.py` and by
`etl run mappings/$name.yaml --offline`. Every secret config value (and `Authorization`,
`Cookie`, `Set-Cookie`) is scrubbed before a cassette is written, but the data is your
account's: read a cassette before you commit it.

Record `full-run.yaml` from the project root, with a read-only token:

```bash
export ${env}_API_TOKEN=...
etl run mappings/$name.yaml --cassette cassettes/$name/full-run.yaml --record-mode once --output /tmp/$name
```

Then `python -m pytest tests/test_$name.py` replays it and writes the snapshot
`tests/snapshots/$name/full-run.json` (review it and commit it with the cassette).

| Cassette | Scenario | Config it was recorded with |
| --- | --- | --- |
| `full-run.yaml` | TODO: what the account held when it was recorded | the defaults |
"""
)

REPLAY_TEST = Template(
    '''\
"""$title end to end: the bundled cassette replays to the committed snapshot.

Written by `etl new $name`. It is skipped until cassettes/$name/full-run.yaml is recorded (see
cassettes/$name/README.md). The first replay writes tests/snapshots/$name/full-run.json: review
it and commit it; every later replay must give the same graph. When a change of the mapping
changes the graph on purpose, accept it with ETL_UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.output import OutputDir
from engine.pipeline.compile import compile_file

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "mappings" / "$name.yaml"
CASSETTE = ROOT / "cassettes" / "$name" / "full-run.yaml"
SNAPSHOT = ROOT / "tests" / "snapshots" / "$name" / "full-run.json"

pytestmark = pytest.mark.skipif(
    not CASSETTE.exists(),
    reason="no cassette yet: record cassettes/$name/full-run.yaml as cassettes/$name/README.md says",
)


def graph_of(output: Path) -> dict:
    """The run's graph without raw data, sorted by key, and each step's status."""
    run = OutputDir.open(output)
    drop = frozenset({"_rawData"})
    return {
        "entities": sorted(run.objects("entities", drop), key=lambda e: e["_key"]),
        "relationships": sorted(run.objects("relationships", drop), key=lambda r: r["_key"]),
        "steps": {step["id"]: step["status"] for step in run.steps},
    }


def test_offline_replay_matches_snapshot(tmp_path, monkeypatch):
    # What the replay sends must not depend on the shell: no config from the environment or .env.
    for field in compile_file(MAPPING).config_fields:
        if field.env:
            monkeypatch.delenv(field.env, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", str(MAPPING), "--offline", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    graph = graph_of(tmp_path / "out")
    if os.environ.get("ETL_UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(graph, indent=2, ensure_ascii=False) + "\\n", encoding="utf-8")
    assert graph == json.loads(SNAPSHOT.read_text(encoding="utf-8")), (
        f"the graph differs from {SNAPSHOT}; if the change is intended, rerun with ETL_UPDATE_SNAPSHOTS=1"
    )
'''
)
