"""J1QL answered from the store, on SQLite and PostgreSQL: JupiterOne's semantics, case by case,
on the hand-written acme graph (tests/test_query_helpers.py)."""

from __future__ import annotations

import pytest

from engine import query
from engine.errors import QueryError
from tests.test_query_helpers import DAY, NOW, acme_store, ask, keys  # noqa: F401 - the fixture

ITEMS = ["item:1", "item:2", "item:3", "item:4", "item:5", "item:6"]


def matching(store, text: str) -> set[str]:
    return set(keys(ask(store, text)))


# -- FIND -------------------------------------------------------------------------------------


def test_find_a_class_a_type_any_and_alternatives(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND Person") == {"person:alice", "person:dave", "hr:bob"}
    assert matching(acme_store, "FIND acme_person") == {"person:alice", "person:dave"}
    assert matching(acme_store, "FIND Device") == {"host:web"}  # one of an entity's classes
    assert matching(acme_store, "FIND (Device|acme_account)") == {"host:web", "account:main"}
    assert matching(acme_store, "find * with _class = 'Host'") == {"host:web", "host:db"}
    assert "user:gone" not in matching(acme_store, "FIND *")  # ended by the second load: history only
    assert matching(acme_store, "FIND Nothing") == set()


def test_the_answer_is_the_current_version(acme_store):  # noqa: F811
    (alice,) = ask(acme_store, "FIND acme_user WITH email = 'alice@example.com'")["data"]
    assert alice["logins"] == 13  # version 2
    assert alice["_class"] == ["User"] and alice["_type"] == "acme_user" and "_rawData" not in alice
    assert matching(acme_store, "FIND acme_user WITH logins = 12") == set()
    assert matching(acme_store, "FIND acme_user WITH _version = 2") == {"user:alice"}


# -- WITH: JupiterOne's truth tables ------------------------------------------------------------------


TRUTH = {  # item -> its flavor: "fruit", "nut-filled", both, "non-fruit", ["non-fruit", "plain"], undefined
    "flavor = 'fruit'": {"item:1", "item:3"},
    "flavor = 'nut-filled'": {"item:2", "item:3"},
    "flavor = ('fruit' AND 'nut-filled')": {"item:3"},
    "flavor = ('fruit' OR 'nut-filled')": {"item:1", "item:2", "item:3"},
    "flavor != 'fruit'": {"item:2", "item:4", "item:5", "item:6"},
    "flavor != 'nut-filled'": {"item:1", "item:4", "item:5", "item:6"},
    "flavor != ('fruit' AND 'nut-filled')": {"item:1", "item:2", "item:4", "item:5", "item:6"},
    "flavor != ('fruit' OR 'nut-filled')": {"item:4", "item:5", "item:6"},
    # De Morgan, as JupiterOne documents it: != (A OR B) is != A AND != B
    "flavor != 'fruit' AND flavor != 'nut-filled'": {"item:4", "item:5", "item:6"},
    "flavor = undefined": {"item:6"},
    "flavor != undefined": {"item:1", "item:2", "item:3", "item:4", "item:5"},
}


@pytest.mark.parametrize("condition", list(TRUTH))
def test_jupiterones_truth_tables(acme_store, condition):  # noqa: F811
    assert matching(acme_store, f"FIND acme_item WITH {condition}") == TRUTH[condition]


def test_values_are_typed_as_json(acme_store):  # noqa: F811
    def values(condition: str) -> set[str]:
        found = matching(acme_store, f"FIND acme_value WITH {condition}")
        return {k.split(":")[1] for k in found}

    assert values("v = '1'") == {"string"}
    assert values("v = 1") == {"number", "float", "list"}  # 1 is 1.0; any element of a list
    assert values("v = true") == {"true", "list"}
    assert values("v = '2'") == {"list"}
    assert values("v = undefined") == {"null"}  # null reads as undefined
    assert values("v != undefined") == {"string", "number", "float", "true", "list", "object", "text"}
    assert values("v > 0") == {"number", "float", "list"}  # numbers only: not true, not '1'
    assert values("v > 1") == set()
    assert values("v >= '1'") == {"string", "list", "text"}  # strings compare with strings
    assert values("v ~= '1'") == {"string", "text"}  # an object's members are not elements
    assert values("v != 1") == {"string", "true", "object", "null", "text"}


def test_string_operators_are_case_sensitive(acme_store):  # noqa: F811
    def values(condition: str) -> set[str]:
        return {k.split(":")[1] for k in matching(acme_store, f"FIND acme_value WITH {condition}")}

    assert values("v ~= 'web'") == {"text"}
    assert values("v ~= 'WEB'") == set()
    assert values("v ^= 'Demo'") == {"text"}
    assert values("v ^= 'demo'") == set()
    assert values("v $= '-01'") == {"text"}
    assert values("v $= 'Demo-web-01-longer'") == set()
    assert values("v !~= 'web'") == {"string", "number", "float", "true", "list", "object", "null"}
    assert values("v !^= 'Demo'") == values("v !~= 'web'")
    assert values("v !$= '01'") == values("v !~= 'web'")
    assert values("v ^= ''") == {"string", "list", "text"}  # the empty prefix: every string
    assert matching(acme_store, "FIND acme_host WITH ipAddress ^= '10.0.0.3'") == {"host:db"}


def test_strings_with_quotes_backslashes_and_other_scripts(acme_store):  # noqa: F811
    found = {"text:quoted"}
    assert matching(acme_store, "FIND acme_text WITH v = 'He said \"hi\" \\\\ é\tand left'") == found
    assert matching(acme_store, "FIND acme_text WITH v = 'He said \"hi\" \\\\ é and left'") == set()
    assert matching(acme_store, "FIND acme_text WITH v ~= '\"hi\" \\\\'") == found
    assert matching(acme_store, "FIND acme_text WITH v ~= 'é'") == found
    assert matching(acme_store, "FIND acme_text WITH v $= 'left' AND v ^= 'He'") == found
    assert matching(acme_store, "FIND acme_text WITH tags = 'a \"b\"' AND tags = 'c\\\\d'") == found
    assert matching(acme_store, "FIND acme_text WITH tags ~= '\"b'") == found


def test_numbers_and_dates(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND User WITH logins > 3") == {"user:alice"}
    assert matching(acme_store, "FIND User WITH logins >= 3 AND logins <= 3") == {"user:bob"}
    assert matching(acme_store, "FIND User WITH createdOn > date.now - 3 days") == {"user:alice"}
    assert matching(acme_store, "FIND User WITH createdOn > date.now-72hrs") == {"user:alice"}
    assert matching(acme_store, "FIND User WITH createdOn < date.now - 1 month") == {"user:bob", "user:carol"}
    assert matching(acme_store, "FIND User WITH createdOn < date.now - 1 year") == {"user:carol"}
    assert matching(acme_store, "FIND User WITH createdOn > date(2026-12-01)") == {"user:alice", "user:bob"}
    assert matching(acme_store, "FIND User WITH createdOn > date(2027-01-13T08:00:00.001Z)") == set()
    assert matching(acme_store, "FIND User WITH createdOn >= date(2027-01-13T09:00+01:00)") == {"user:alice"}
    later = query.run(acme_store, "FIND User WITH createdOn > date.now - 3 days", now=NOW + 2 * DAY)
    assert keys(later) == []  # date.now is bound when the query runs


def test_and_binds_tighter_than_or(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND acme_user WITH admin = true OR logins = 3 AND admin = true") == {"user:alice"}
    assert matching(acme_store, "FIND acme_user WITH (admin = true OR logins = 3) AND admin = false") == {"user:bob"}


def test_bracketed_and_dotted_property_names(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND User WITH [tag.special-name] = 'x'") == {"user:alice"}
    assert matching(acme_store, "FIND User WITH tag.Environment = 'prod'") == {"user:alice"}
    assert matching(acme_store, "FIND User WITH tags = 'eu'") == {"user:alice"}
    answer = ask(acme_store, "FIND User AS u WITH email ^= 'alice' RETURN u.[tag.special-name], u.tag.Environment")
    assert answer["data"] == [{"u.tag.special-name": "x", "u.tag.Environment": "prod"}]


def test_class_and_key_filters(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND * WITH _class = ('Host' AND 'Device')") == {"host:web"}
    assert matching(acme_store, "FIND * WITH _class != 'Host' AND _type = 'acme_host'") == set()
    assert matching(acme_store, "FIND acme_host WITH _key $= ':db'") == {"host:db"}
    assert matching(acme_store, "FIND acme_host WITH _key = 1") == set()  # a number is not a string


# -- THAT ---------------------------------------------------------------------------------------------


def test_verbs_are_bidirectional_unless_an_arrow_says(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND acme_user THAT HAS Account") == {"user:alice", "user:bob", "user:carol"}
    assert matching(acme_store, "FIND Account THAT HAS User") == {"account:main"}
    assert matching(acme_store, "FIND Account THAT HAS >> User") == {"account:main"}
    assert matching(acme_store, "FIND Account THAT HAS << User") == set()
    assert matching(acme_store, "FIND User THAT HAS << Account") == {"user:alice", "user:bob", "user:carol"}
    assert matching(acme_store, "FIND User THAT has >> Account") == set()


def test_verb_alternatives_relates_to_and_the_filler_to(acme_store):  # noqa: F811
    assert matching(acme_store, "FIND acme_user THAT (OWNS|USES) Host") == {"user:alice", "user:bob"}
    assert matching(acme_store, "FIND Host THAT RELATES TO Application") == {"host:web"}
    assert matching(acme_store, "FIND Application THAT DEPLOYED TO Host") == {"app:shop"}
    assert matching(acme_store, "FIND Application THAT deployed Host") == {"app:shop"}
    assert matching(acme_store, "FIND Application THAT !RELATES TO *") == set()
    assert matching(acme_store, "FIND acme_person THAT RELATES TO *") == {"person:alice"}


def test_negated_traversals(acme_store):  # noqa: F811
    # bob IS a Person through the mapper (another integration's employee): only carol is not one
    assert matching(acme_store, "FIND acme_user THAT !IS Person") == {"user:carol"}
    assert matching(acme_store, "FIND Person THAT !IS User") == {"person:dave"}
    assert matching(acme_store, "FIND acme_user THAT !IS Person WITH firstName = 'Bob'") == {"user:alice", "user:carol"}
    # the rest of the chain is part of what must not exist
    assert matching(acme_store, "FIND Account THAT HAS User THAT !OWNS Host") == {"account:main"}
    assert matching(acme_store, "FIND Account THAT !HAS User THAT OWNS Host") == set()
    assert matching(acme_store, "FIND acme_user THAT !(OWNS|USES) Host") == {"user:carol"}


def test_mapped_relationships_count_as_relationships(acme_store):  # noqa: F811
    answer = ask(acme_store, "FIND acme_user AS u THAT IS Person AS p RETURN u.email, p._type, p.firstName")
    assert answer["data"] == [
        {"u.email": "alice@example.com", "p._type": "acme_person", "p.firstName": "Alice"},
        {"u.email": "bob@example.com", "p._type": "hr_employee", "p.firstName": "Bob"},
    ]


def test_multiple_hops_and_unique(acme_store):  # noqa: F811
    two_hops = "FIND Account AS a THAT HAS User THAT (OWNS|USES) Host AS h RETURN a.name, h.name"
    assert ask(acme_store, two_hops)["data"] == [
        {"a.name": "main", "h.name": "db"},
        {"a.name": "main", "h.name": "web"},
    ]
    rows = ask(acme_store, "FIND Account AS a THAT HAS User RETURN a.name")["data"]
    assert rows == [{"a.name": "main"}] * 3  # one row per path
    assert ask(acme_store, "FIND UNIQUE Account AS a THAT HAS User RETURN a.name")["data"] == [{"a.name": "main"}]
    assert matching(acme_store, "FIND Account THAT HAS User") == {"account:main"}  # a list has each entity once


def test_a_relationship_to_itself_is_one_path(acme_store):  # noqa: F811
    answer = ask(
        acme_store, "FIND acme_host WITH name = 'web' AS a THAT CONNECTS AS c acme_host AS b RETURN b.name, c.port"
    )
    assert answer["data"] == [{"b.name": "db", "c.port": 5432}, {"b.name": "web", "c.port": 8080}]


def test_relationship_aliases(acme_store):  # noqa: F811
    answer = ask(acme_store, "FIND Account AS a THAT HAS AS r User AS u WHERE r.weight > 1 RETURN u.email, r._class, r")
    (row,) = answer["data"]
    assert row["u.email"] == "carol@example.com" and row["r._class"] == ["HAS"]
    assert row["r"]["_fromEntityKey"] == "account:main" and row["r"]["_toEntityKey"] == "user:carol"
    assert row["r"]["weight"] == 3 and row["r"]["_class"] == "HAS"  # as the run gave it


# -- WHERE --------------------------------------------------------------------------------------------


def test_where_compares_aliases(acme_store):  # noqa: F811
    same = "FIND acme_user AS u THAT IS Person AS p WHERE u.email = p.email RETURN u.email"
    assert ask(acme_store, same)["data"] == [{"u.email": "alice@example.com"}, {"u.email": "bob@example.com"}]
    assert ask(acme_store, same.replace("u.email = p.email", "u.email != p.email"))["data"] == []
    # any element of a list: a host whose addresses include another host's address
    lists = "FIND acme_host AS a THAT CONNECTS acme_host AS b WHERE a.ipAddress = b.ipAddress RETURN a.name, b.name"
    assert ask(acme_store, lists)["data"] == [{"a.name": "web", "b.name": "web"}]
    mixed = "FIND acme_user AS u THAT IS Person AS p WHERE u.logins > p.age OR p.firstName ^= 'Al' RETURN p.firstName"
    assert ask(acme_store, mixed)["data"] == [{"p.firstName": "Alice"}]


# -- RETURN -------------------------------------------------------------------------------------------


def test_return_properties_objects_and_stars(acme_store):  # noqa: F811
    answer = ask(acme_store, "FIND acme_person WITH firstName = 'Dave' AS p RETURN p, p.age, p.missing")
    assert answer["type"] == "table" and answer["totalCount"] == 1
    (row,) = answer["data"]
    assert row["p"]["_key"] == "person:dave" and row["p.age"] == 30 and row["p.missing"] is None
    (star,) = ask(acme_store, "FIND acme_person WITH firstName = 'Dave' AS p RETURN p.*")["data"]
    assert star["p._key"] == "person:dave" and star["p.email"] == "dave@example.com"
    assert star["p._version"] == 1 and star["p._createdOn"] == star["p._beginOn"] > 0
    labelled = ask(acme_store, "FIND acme_person WITH firstName = 'Dave' AS p RETURN p.firstName AS first")
    assert labelled["data"] == [{"first": "Dave"}]


def test_aggregates(acme_store):  # noqa: F811
    whole = "FIND Person AS p RETURN count(p), min(p.age), max(p.age), avg(p.age), sum(p.age)"
    assert ask(acme_store, whole)["data"] == [
        {"count(p)": 3, "min(p.age)": 30, "max(p.age)": 50, "avg(p.age)": 40, "sum(p.age)": 120}
    ]
    grouped = "FIND acme_host AS h THAT RELATES TO * AS x RETURN h.name, count(x)"
    assert ask(acme_store, grouped)["data"] == [{"h.name": "db", "count(x)": 2}, {"h.name": "web", "count(x)": 4}]
    # each entity counts once however many paths reach it (web reaches itself both ways)
    paths = "FIND Account AS a THAT HAS User AS u THAT RELATES TO * AS x RETURN a.name, count(u), sum(u.logins)"
    assert ask(acme_store, paths)["data"] == [{"a.name": "main", "count(u)": 3, "sum(u.logins)": 16}]
    assert ask(acme_store, "FIND acme_user AS u RETURN count(u.logins)")["data"] == [{"count(u.logins)": 2}]
    assert ask(acme_store, "FIND Nothing AS n RETURN count(n)")["data"] == [{"count(n)": 0}]


def test_order_skip_limit(acme_store):  # noqa: F811
    ordered = "FIND acme_user AS u ORDER BY u.logins DESC"
    assert keys(ask(acme_store, ordered)) == ["user:alice", "user:bob", "user:carol"]  # missing values last
    assert keys(ask(acme_store, ordered + " SKIP 1 LIMIT 1")) == ["user:bob"]
    assert keys(ask(acme_store, ordered + " LIMIT 1 SKIP 2")) == ["user:carol"]
    table = "FIND Person AS p RETURN p.firstName ORDER BY p.age"
    assert [r["p.firstName"] for r in ask(acme_store, table)["data"]] == ["Dave", "Alice", "Bob"]
    assert keys(ask(acme_store, "FIND acme_person")) == ["person:alice", "person:dave"]  # by _key when not told


def test_return_tree(acme_store):  # noqa: F811
    answer = ask(acme_store, "FIND acme_user WITH admin = true THAT OWNS Host THAT CONNECTS Host RETURN tree")
    assert answer["type"] == "tree"
    tree = answer["data"]
    assert [v["_key"] for v in tree["vertices"]] == ["host:db", "host:web", "user:alice"]
    assert sorted(e["_key"] for e in tree["edges"]) == [
        "host:web|connects|host:db",
        "host:web|connects|host:web",
        "user:alice|owns|host:web",
    ]
    assert answer["totalCount"] == 3
    entities, relationships = query.tree_objects(acme_store, "FIND acme_user WITH admin = true THAT OWNS Host")
    assert [e["_key"] for e in entities] == ["host:web", "user:alice"]
    assert [r["_key"] for r in relationships] == ["user:alice|owns|host:web"]


def test_a_compiled_query_runs_again_with_another_clock(acme_store):  # noqa: F811
    compiled = query.compile_query("FIND User WITH createdOn > date.now - 3 days")
    assert keys(query.run_compiled(acme_store, compiled, now=NOW).to_dict()) == ["user:alice"]
    assert keys(query.run_compiled(acme_store, compiled, now=NOW - 39 * DAY).to_dict()) == ["user:alice", "user:bob"]


def test_indexed_and_unindexed_properties_answer_alike(acme_store):  # noqa: F811
    """`name` has the store's expression index (schema 3), `v` has none: the same filters agree."""
    from engine.store import schema

    assert "name" in schema.QUERY_INDEXED_PROPERTIES
    conditions = ("= 1", "= '1'", "= true", "= false", "> 0", ">= 1", "<= 1", ">= '1'", "< 2", "!= 1", "= '2'", "< '2'")
    for condition in conditions:
        indexed = matching(acme_store, f"FIND acme_value WITH name {condition}")
        assert indexed == matching(acme_store, f"FIND acme_value WITH v {condition}"), condition
    assert matching(acme_store, "FIND * WITH name = 'web'") == {"host:web"}
    assert matching(acme_store, "FIND * WITH name = ('web' OR 'db')") == {"host:web", "host:db"}


def test_errors_name_the_alias(acme_store):  # noqa: F811
    with pytest.raises(QueryError, match=r"query:1:38: unknown alias 'x' in WHERE \(aliases: u\)"):
        ask(acme_store, "FIND acme_user AS u THAT HAS * WHERE x.name = 'a'")
    with pytest.raises(QueryError, match="inside a negated traversal"):
        ask(acme_store, "FIND acme_user AS u THAT !IS Person AS p RETURN p.name")
