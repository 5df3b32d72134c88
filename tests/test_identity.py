"""Exact identity: keys are compared whole, never by a hash alone (in memory and on disk, under
any PYTHONHASHSEED); relationship keys stay unambiguous when ids hold the separator; and
redaction never makes two keys one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.pipeline import check
from engine.pipeline.build import relationship_key
from engine.pipeline.check import GraphChecker, KeyIndex, Verdict
from engine.pipeline.write import GraphWriter
from engine.secrets import Redactor
from tests.fakes.server import LocalApi, Response
from tests.graphtools import read_output

TOKEN = "tok-3f9a1c77-secret"
OTHER = "pw-b4d2e8aa-secret"


def entity(key: str) -> dict:
    return {"_key": key, "_type": "acme_node", "_class": ["Group"], "name": "n", "displayName": "n"}


def relationship(key: str, source: str, target: str) -> dict:
    return {"_key": key, "_type": "acme_node_has_node", "_fromEntityKey": source, "_toEntityKey": target}


def mapped(key: str, source: str) -> dict:
    return {"_key": key, "_type": "acme_node_has_domain", "_mapping": {"sourceEntityKey": source}}


@pytest.fixture
def tiny(monkeypatch):
    """A key index that goes to disk almost at once, in generations of a few keys."""
    monkeypatch.setattr(check, "SPILL_AT", 8)
    monkeypatch.setattr(check, "GENERATION", 4)
    monkeypatch.setattr(check, "_CHUNK", 3)
    return monkeypatch


# -- the key index --------------------------------------------------------------------------


class Colliding(str):
    """A string whose hash is that of every other Colliding string."""

    def __hash__(self) -> int:
        return 42


def test_keys_with_the_same_hash_in_memory_are_both_kept():
    checker = GraphChecker()
    first, second = Colliding("acme_node:first"), Colliding("acme_node:second")
    assert hash(first) == hash(second)
    assert checker.check_entity(entity(first)) is Verdict.ACCEPT
    assert checker.check_entity(entity(second)) is Verdict.ACCEPT
    assert checker.check_entity(entity(Colliding("acme_node:first"))) is Verdict.DUPLICATE
    rel = relationship(Colliding("acme_node:first|has|acme_node:second"), first, second)
    assert checker.check_relationship(rel) is Verdict.ACCEPT
    assert checker.check_relationship(relationship(Colliding("acme_node:other|has|x"), first, "x")) is (
        Verdict.DANGLING
    )
    assert not checker.index.spilled


@pytest.mark.parametrize("stage", ["strings", "files", "indexed", "bloom"])
def test_every_key_collides_and_every_answer_is_exact(tiny, stage):
    """The hash the index's filters use is made constant: every key collides with every other,
    in memory, in the set of hashes (keys looked up in the files, or indexed) and in the Bloom
    filter; the answers stay exact."""
    tiny.setattr(check, "_hash", lambda key: 0)
    if stage == "strings":
        tiny.setattr(check, "SPILL_AT", 10_000)
    tiny.setattr(check, "SEARCHES_BEFORE_INDEX", 10_000 if stage == "files" else 0)
    tiny.setattr(check, "HASHES_AT_MOST", 10 if stage == "bloom" else 10_000)
    checker = GraphChecker()
    keys = [f"acme_node:{n}" for n in range(60)]
    assert [checker.check_entity(entity(k)) for k in keys] == [Verdict.ACCEPT] * 60
    links = [(f"{a}|has|{b}", a, b) for a, b in zip(keys, keys[1:], strict=False)]
    assert [checker.check_relationship(relationship(*link)) for link in links] == [Verdict.ACCEPT] * 59
    maps = [mapped(f"{k}|has|REVERSE:_class=Domain:domainName=d{n}", k) for n, k in enumerate(keys)]
    assert [checker.check_relationship(m) for m in maps] == [Verdict.ACCEPT] * 60
    # Everything again, long after it went to disk: duplicates, found by full comparison.
    assert [checker.check_entity(entity(k)) for k in keys] == [Verdict.DUPLICATE] * 60
    assert [checker.check_relationship(relationship(*link)) for link in links] == [Verdict.DUPLICATE] * 59
    assert checker.check_entity(entity(links[0][0])) is Verdict.DUPLICATE  # a relationship's key
    assert checker.check_relationship(relationship("acme_node:0|has|acme_node:x", keys[0], "acme_node:x")) is (
        Verdict.DANGLING
    )
    assert checker.check_relationship(mapped("acme_node:y|has|REVERSE:x", "acme_node:y")) is Verdict.DANGLING
    assert checker.check_relationship(relationship("acme_node:59|has|acme_node:0", keys[59], keys[0])) is (
        Verdict.ACCEPT
    )
    index = checker.index
    assert index.spilled == (stage != "strings")
    assert (index.hashes is None) == (stage == "bloom")
    assert stage == "strings" or (index.disk is not None and (index.disk.table is None) == (stage == "files"))
    checker.close()


KEY_TEXT = st.text(alphabet=["a", "b", "|", "\\", "\x00", "\ud800", "é", '"'], max_size=6)
OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["entity", "relationship", "mapped"]), KEY_TEXT, KEY_TEXT, KEY_TEXT), max_size=80
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS, searches=st.integers(0, 6), hashes=st.integers(4, 40))
def test_the_index_answers_as_sets_of_strings_would(tiny, operations, searches, hashes):
    """Random entities and relationships (keys with separators, NUL, lone surrogates, quotes)
    through a checker whose index goes to disk after 8 keys, is searched in its files, then
    indexed, keeps a few hashes, then a Bloom filter, all on a four-valued hash: every verdict
    is the one exact sets give."""
    tiny.setattr(check, "SEARCHES_BEFORE_INDEX", searches)
    tiny.setattr(check, "HASHES_AT_MOST", hashes)
    tiny.setattr(check, "_hash", lambda key: len(key) % 4)
    checker = GraphChecker()
    entities: set[str] = set()
    relationships: set[str] = set()
    for kind, key, source, target in operations:
        key, source, target = f"acme_node:{key}", f"acme_node:{source}", f"acme_node:{target}"
        if kind == "entity":
            expected = Verdict.DUPLICATE if key in entities | relationships else Verdict.ACCEPT
            assert checker.check_entity(entity(key)) is expected
            if expected is Verdict.ACCEPT:
                entities.add(key)
            continue
        obj = relationship(key, source, target) if kind == "relationship" else mapped(key, source)
        ends = (source, target) if kind == "relationship" else (source,)
        if key in entities | relationships:
            expected = Verdict.DUPLICATE
        elif any(end not in entities for end in ends):
            expected = Verdict.DANGLING
        else:
            expected = Verdict.ACCEPT
            relationships.add(key)
        assert checker.check_relationship(obj) is expected
    checker.close()


def test_a_large_index_holds_no_key_strings_but_the_recent_ones(tiny):
    tiny.setattr(check, "HASHES_AT_MOST", 100)
    index = KeyIndex()
    for n in range(5000):
        index.add(f"acme_node:{n}", "acme_node")
        index.add_relationship(f"acme_node:{n}|has|acme_node:{n + 1}")
    held = len(index.entities) + len(index.relationships) + len(index.old_entities) + len(index.old_relationships)
    assert held <= 2 * (check.GENERATION + 1)
    assert index.hashes is None and index.count >= 9990
    assert all(f"acme_node:{n}" in index for n in (0, 1234, 4999))
    assert "acme_node:5000" not in index and "acme_node:0|has|acme_node:1" not in index
    assert index.seen("acme_node:0|has|acme_node:1")
    index.close()


def test_the_index_files_have_no_names(tiny, tmp_path):
    """The files of keys and the SQLite index are unnamed (or unlinked as soon as open): a run,
    even a killed one, leaves nothing behind."""
    tiny.setattr(check, "SEARCHES_BEFORE_INDEX", 1)
    checker = GraphChecker(spill_dir=tmp_path)
    for n in range(100):
        assert checker.check_entity(entity(f"acme_node:{n}")) is Verdict.ACCEPT
    assert checker.index.spilled and list(tmp_path.iterdir()) == []
    for n in (3, 50):  # duplicates from disk: one search of the files, then the index
        assert checker.check_entity(entity(f"acme_node:{n}")) is Verdict.DUPLICATE
    assert checker.index.disk is not None and checker.index.disk.table is not None
    assert list(tmp_path.iterdir()) == []
    checker.close()


# -- a real run, under several hash seeds ------------------------------------------------------

NODES = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {env: ACME_TOKEN, secret: true}
sources:
  api:
    base_url: http://unused.invalid
    headers: {X-Token: "{{ config.token }}"}
steps:
  - id: fetch-nodes
    name: Fetch Nodes
    request: {path: /nodes}
    entities:
      - type: acme_node
        class: Group
        key: "acme_node:{{ record.id }}"
        properties: {name: name}
  - id: fetch-links
    name: Fetch Links
    depends_on: [fetch-nodes]
    request: {path: /links}
    relationships:
      - class: HAS
        from: {type: acme_node, key: "acme_node:{{ record.from }}"}
        to: {type: acme_node, key: "acme_node:{{ record.to }}"}
"""

# The CLI with the index's hash cut to two bits (every key collides with a quarter of the
# others, differently under each PYTHONHASHSEED) and the index on disk after 16 keys.
COLLIDING_ETL = """
from engine.pipeline import check
check._hash = lambda key: hash(key) & 3
check.SPILL_AT, check.GENERATION, check.HASHES_AT_MOST = 16, 8, 40
from engine.cli import main
main()
"""


def serve_nodes(api: LocalApi, nodes: list[dict], links: list[dict]) -> None:
    api.route("GET", "/nodes", lambda request: Response(200, nodes))
    api.route("GET", "/links", lambda request: Response(200, links))


def graph_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "graph").rglob("*.json"))}


def test_runs_under_any_hash_seed_keep_every_key(tmp_path):
    ids = [f"n{n}" for n in range(150)]
    nodes = [{"id": i, "name": i} for i in ids] + [{"id": "n7", "name": "again"}]  # one duplicate
    links = [{"from": a, "to": b} for a, b in zip(ids, ids[1:], strict=False)]
    links += [{"from": "n0", "to": "missing"}, {"from": "n3", "to": "n4"}]  # a dangling one, a duplicate
    (tmp_path / "nodes.yaml").write_text(NODES)
    outputs = {}
    with LocalApi() as api:
        serve_nodes(api, nodes, links)
        for name, seed, program in [
            ("plain", "random", ["-m", "engine"]),
            ("seed 0", "0", ["-c", COLLIDING_ETL]),
            ("seed 1", "1", ["-c", COLLIDING_ETL]),
            ("seed 4242", "4242", ["-c", COLLIDING_ETL]),
        ]:
            out = tmp_path / name.replace(" ", "-")
            env = {**os.environ, "ACME_TOKEN": TOKEN, "PYTHONHASHSEED": seed}
            done = subprocess.run(
                [sys.executable, *program, "run", "nodes.yaml", "--base-url", api.url, "--output", str(out)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 1, done.stderr  # the dangling link makes its type partial
            assert "Traceback" not in done.stderr
            outputs[name] = out
    first = read_output(outputs["plain"])
    assert sorted(e["_key"] for e in first["entities"]) == sorted(f"acme_node:{i}" for i in ids)
    assert len(first["relationships"]) == 149
    assert len({r["_key"] for r in first["relationships"]}) == 149
    for name, out in outputs.items():
        assert graph_files(out) == graph_files(outputs["plain"]), name


# -- relationship keys -------------------------------------------------------------------------


def split_key(key: str) -> list[str]:
    """Read a relationship key back into its three parts (the inverse of relationship_key)."""
    parts, current, escaped = [], [], False
    for char in key:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def test_ordinary_relationship_keys_are_jupiterones():
    assert relationship_key("acme_group:1", "has", "acme_user:2") == "acme_group:1|has|acme_user:2"
    assert (
        relationship_key("a:1", "has", "FORWARD:_class=User:email=a@b.c") == "a:1|has|FORWARD:_class=User:email=a@b.c"
    )


def test_separators_in_ids_do_not_make_keys_collide():
    first = relationship_key("a|has|b", "has", "c")
    second = relationship_key("a", "has", "b|has|c")
    assert first != second
    assert split_key(first) == ["a|has|b", "has", "c"]
    assert split_key(second) == ["a", "has", "b|has|c"]
    assert relationship_key("a\\", "has", "|b") != relationship_key("a", "has", "\\|b")


PART = st.text(alphabet=["a", "|", "\\", "x", ":"], max_size=8)


@settings(max_examples=300)
@given(parts=st.tuples(PART, PART, PART))
def test_relationship_keys_are_injective(parts):
    key = relationship_key(*parts)
    assert split_key(key) == list(parts)
    if not any("|" in p or "\\" in p for p in parts):
        assert key == "|".join(parts)


def test_a_run_keeps_both_relationships_whose_naive_keys_collide(etl, tmp_path):
    (tmp_path / "nodes.yaml").write_text(NODES)
    ids = ["a|has|acme_node:b", "c", "a", "b|has|acme_node:c", "back\\slash"]
    links = [{"from": "a|has|acme_node:b", "to": "c"}, {"from": "a", "to": "b|has|acme_node:c"}]
    links.append({"from": "back\\slash", "to": "c"})
    with LocalApi() as api:
        serve_nodes(api, [{"id": i, "name": i} for i in ids], links)
        result = etl(
            "run", tmp_path / "nodes.yaml", "--base-url", api.url, "--output", tmp_path / "out",
            env={"ACME_TOKEN": TOKEN},
        )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    relationships = read_output(tmp_path / "out")["relationships"]
    assert len(relationships) == 3 and len({r["_key"] for r in relationships}) == 3
    for rel in relationships:
        assert split_key(rel["_key"]) == [rel["_fromEntityKey"], "has", rel["_toEntityKey"]]
    # Joined naively, the first two would be the same key.
    assert {r["_key"] for r in relationships} >= {
        "acme_node:a\\|has\\|acme_node:b|has|acme_node:c",
        "acme_node:a|has|acme_node:b\\|has\\|acme_node:c",
    }


# -- keys holding secrets ------------------------------------------------------------------------

USERS = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {env: ACME_TOKEN, secret: true}
  other: {env: ACME_OTHER, secret: true}
sources:
  api:
    base_url: http://unused.invalid
    headers: {X-Token: "{{ config.token }}"}
steps:
  - id: fetch-groups
    name: Fetch Groups
    request: {path: /groups}
    entities:
      - type: acme_group
        class: Group
        key: "acme_group:{{ record.id }}"
        properties: {name: name}
  - id: fetch-users
    name: Fetch Users
    depends_on: [fetch-groups]
    request: {path: /users}
    entities:
      - type: acme_user
        class: User
        key: "acme_user:{{ record.id }}"
        properties: {name: name}
    relationships:
      - class: HAS
        from: {type: acme_group, key: "acme_group:{{ record.group }}"}
        to: acme_user
    mapped_relationships:
      - class: HAS
        source: acme_user
        direction: REVERSE
        target:
          type: domain
          class: Domain
          properties: {domainName: domain, name: domain, displayName: domain}
        filter_keys: [[_class, domainName]]
"""


def run_users(etl, tmp_path: Path, out: Path):
    users = [
        {"id": TOKEN, "name": "holds the token", "group": TOKEN, "domain": "a.example.com"},
        {"id": "[REDACTED]", "name": "holds the marker", "group": "plain", "domain": "b.example.com"},
        {"id": OTHER, "name": "holds the other secret", "group": "plain", "domain": "c.example.com"},
        {"id": f"{TOKEN}-{OTHER}", "name": "holds both", "group": "plain", "domain": "d.example.com"},
        {"id": "plain", "name": "holds nothing", "group": TOKEN, "domain": "e.example.com"},
    ]
    groups = [{"id": TOKEN, "name": "token group"}, {"id": "plain", "name": "plain group"}]
    (tmp_path / "users.yaml").write_text(USERS)
    with LocalApi() as api:
        api.route("GET", "/groups", lambda request: Response(200, groups))
        api.route("GET", "/users", lambda request: Response(200, users))
        return etl(
            "run", tmp_path / "users.yaml", "--base-url", api.url, "--output", out,
            env={"ACME_TOKEN": TOKEN, "ACME_OTHER": OTHER},
        )  # fmt: skip


def test_redaction_never_merges_keys_and_keeps_references_whole(etl, tmp_path):
    result = run_users(etl, tmp_path, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    for path in (tmp_path / "out").rglob("*.json"):
        text = path.read_text()
        assert TOKEN not in text and OTHER not in text, path
    output = read_output(tmp_path / "out")
    entities, relationships = output["entities"], output["relationships"]
    keys = [o["_key"] for o in entities + relationships]
    assert len(keys) == len(set(keys)) == 2 + 5 + 5 + 5  # groups, users, memberships, mapped
    users = {e["name"]: e["_key"] for e in entities if e["_type"] == "acme_user"}
    assert users["holds nothing"] == "acme_user:plain"
    redacted = [users[n] for n in ("holds the token", "holds the marker", "holds the other secret", "holds both")]
    assert len(set(redacted)) == 4
    assert users["holds the token"].startswith("acme_user:[REDACTED]~")
    assert users["holds the marker"].startswith("acme_user:[REDACTED]~")
    assert users["holds both"].startswith("acme_user:[REDACTED]-[REDACTED]~")
    entity_keys = {e["_key"] for e in entities}
    for rel in relationships:
        if "_mapping" in rel:
            assert rel["_mapping"]["sourceEntityKey"] in entity_keys
        else:
            assert rel["_fromEntityKey"] in entity_keys and rel["_toEntityKey"] in entity_keys
    # The same keys from run to run.
    again = run_users(etl, tmp_path, tmp_path / "again")
    assert again.exit_code == 0
    assert sorted(keys) == sorted(
        o["_key"] for c in ("entities", "relationships") for o in read_output(tmp_path / "again")[c]
    )


def test_the_digest_of_a_redacted_key_depends_on_the_secret(etl, tmp_path):
    result = run_users(etl, tmp_path, tmp_path / "out")
    assert result.exit_code == 0
    first = {e["name"]: e["_key"] for e in read_output(tmp_path / "out")["entities"]}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metadata"]["partialDatasets"]["types"] == []
    # Keyed by the secret: the digest of "acme_user:<token>" is not that of the key's text alone.
    import hashlib

    plain_digest = hashlib.sha256(f"acme_user:{TOKEN}".encode()).hexdigest()[:16]
    assert not first["holds the token"].endswith(plain_digest)


def test_a_key_that_is_not_utf8_is_written_escaped(tmp_path):
    """JSON may carry a lone surrogate (as an escape), so a key may hold one; the writer writes
    it escaped, as it came, instead of failing. (The whole run does not get that far yet: the
    pagination's page guard cannot hash such a record.)"""
    writer = GraphWriter(tmp_path, Redactor([TOKEN]))
    writer.add("fetch-nodes", "entities", entity("acme_node:a\ud800"))
    writer.flush_step("fetch-nodes")
    (written,) = (tmp_path / "graph" / "fetch-nodes" / "entities").iterdir()
    assert b'"acme_node:a\\ud800"' in written.read_bytes()
    assert json.loads(written.read_bytes())["entities"][0]["_key"] == "acme_node:a\ud800"


def test_records_with_a_lone_surrogate_do_not_crash_the_page_guard(etl, tmp_path):
    """A JSON escape can decode to a lone surrogate (not valid UTF-8); paging goes on, the run ends."""
    from tests.fakes.paging import item_mapping, write_mapping
    from tests.fakes.server import LocalApi, Response

    api = LocalApi()
    body = b'{"items": [{"id": 1, "name": "bad \\\\ud800 text"}], "meta": {"total": 1}}'.replace(b"\\\\", b"\\")
    api.route("GET", "/items", lambda request: Response(200, body, headers={"Content-Type": "application/json"}))
    with api:
        data = item_mapping({"kind": "offset", "limit": 5, "total": "meta.total"})
        result = etl("run", write_mapping(tmp_path / "m.yaml", data), "--base-url", api.url, "--output", tmp_path / "o")
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    assert "internal error" not in result.stderr
