"""Many accounts in one mapping, against real local APIs (tests/fakes/tenants.py): two local
servers play two regions. A step runs once per account (from an endpoint, from config, or a
list); each account changes the base URL and headers of its requests; keys and tags name the
account; credentials go only to the origins the mapping allows; one account's failure keeps
the others' records; fan-outs and detail requests below an account use its base URL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fakes.paging import EXAMPLES, partial_types, step_status, write_mapping
from tests.fakes.tenants import TOKEN, RegionApi
from tests.graphtools import read_output

EXAMPLE = EXAMPLES / "accounts-per-region.yaml"


@pytest.fixture
def regions():
    """``(us, eu)``: acme and initech live in us, globex in eu; us also lists the accounts."""
    with RegionApi({"acme": ["Ann", "Bob", "Cy"], "initech": ["Dee"]}) as us, RegionApi({"globex": ["Eve"]}) as eu:
        us.directory = [
            {"id": "acme", "name": "Acme", "apiUrl": us.url},
            {"id": "globex", "name": "Globex", "apiUrl": eu.url + "/"},
            {"id": "initech", "name": "Initech", "apiUrl": us.url},
        ]
        yield us, eu


def example(tmp_path, us, eu, change=None):
    """The example, its two region origins replaced by the local servers'."""
    text = (
        EXAMPLE.read_text().replace("https://us.api.example.com", us.url).replace("https://eu.api.example.com", eu.url)
    )
    data = yaml.safe_load(text)
    if change is not None:
        change(data)
    return write_mapping(tmp_path / "mapping.yaml", data)


def run(etl, mapping, us, out, *extra):
    return etl(
        "run", mapping, "--base-url", f"directory={us.url}", "--output", out, "--config", f"apiToken={TOKEN}", *extra
    )


def user_mapping(
    tmp_path, source: dict, accounts, *, key: str, config: tuple[str, ...] = (), secrets: tuple[str, ...] = (), **step
) -> Path:
    """A one-step mapping: ``example_user`` entities (keyed by ``key``) from ``/users`` of a
    source (``source``: its base_url and what reads the account) run per ``accounts``;
    ``config`` and ``secrets`` name more config fields (plain, secret); ``step`` adds to the
    step (pagination, detail, extra entity properties as ``properties``, ``tags``)."""
    properties = {"name": "name", "username": "email", "active": {"value": True}, **step.pop("properties", {})}
    entity = {"resource": "User", "type": "example_user", "class": "User", "key": key, "properties": properties}
    if "tags" in step:
        entity["tags"] = step.pop("tags")
    data = {
        "version": 1,
        "integration": {"id": "example-accounts-test", "name": "Accounts"},
        "config": {
            "apiToken": {"secret": True},
            **{name: {} for name in config},
            **{name: {"secret": True} for name in secrets},
        },
        "sources": {"api": {**source, "auth": {"kind": "bearer", "token": "{{ config.apiToken }}"}}},
        "steps": [
            {
                "id": "fetch-users",
                "accounts": accounts,
                "request": {"path": "/users"},
                "records": "users",
                **step,
                "entities": [entity],
            }
        ],
    }
    return write_mapping(tmp_path / "accounts.yaml", data)


PAGES = {"kind": "page", "page_param": "page", "total_pages": "total_pages"}


def users(output: dict) -> list[dict]:
    return [e for e in output["entities"] if e["_type"] == "example_user"]


def test_each_account_is_read_from_its_region_with_its_header(etl, regions, tmp_path):
    us, eu = regions
    result = run(etl, example(tmp_path, us, eu), us, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert [(u["_key"], u["tag.Account"]) for u in users(output)] == [
        ("example_user:acme:u1", "acme"),
        ("example_user:acme:u2", "acme"),
        ("example_user:acme:u3", "acme"),
        ("example_user:globex:u1", "globex"),
        ("example_user:initech:u1", "initech"),
    ]
    relationships = {r["_key"] for r in output["relationships"]}
    assert "example_account:globex|has|example_user:globex:u1" in relationships
    # us: the directory, acme's two pages and initech's page; eu: globex's page only
    seen_us = [(r.path, r.query.get("page"), r.headers.get("x-account")) for r in us.log]
    assert seen_us[0] == ("/accounts", None, None)
    assert sorted(seen_us[1:]) == [("/users", "1", "acme"), ("/users", "1", "initech"), ("/users", "2", "acme")]
    assert [(r.path, r.headers.get("x-account")) for r in eu.log] == [("/users", "globex")]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in us.log + eu.log)


def test_an_account_on_an_origin_not_allowed_gets_no_credentials(etl, regions, tmp_path):
    """The API itself names each account's URL: one on an origin the mapping does not allow
    fails that account (its requests are never made), and the others are kept."""
    us, eu = regions
    with RegionApi({"evil": ["Mallory"]}) as elsewhere:
        us.directory.append({"id": "evil", "name": "Evil", "apiUrl": elsewhere.url})
        result = run(etl, example(tmp_path, us, eu), us, tmp_path / "out")
        assert elsewhere.log == []
    assert result.exit_code == 1, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert {u["tag.Account"] for u in users(output)} == {"acme", "globex", "initech"}
    assert step_status(output, "fetch-users") == "failure"
    assert "example_user" in partial_types(output)
    said = result.stdout + result.stderr
    assert "for account example_account:evil" in said and "allowed_origins" in said
    assert TOKEN not in said


def test_an_account_whose_base_url_cannot_be_made_fails_alone(etl, regions, tmp_path):
    us, eu = regions
    us.directory.insert(0, {"id": "nourl", "name": "No URL"})  # no apiUrl: the template renders nothing
    result = run(etl, example(tmp_path, us, eu), us, tmp_path / "out")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert {u["tag.Account"] for u in users(read_output(tmp_path / "out"))} == {"acme", "globex", "initech"}
    assert "for account example_account:nourl" in result.stdout + result.stderr
    assert "sources.region.base_url: '{{ account.apiUrl }}' failed" in result.stdout + result.stderr


def test_accounts_from_config_change_a_header(etl, regions, tmp_path):
    """accounts: a JMESPath on the config; the source's base URL is the same for all."""
    us, _ = regions
    mapping = user_mapping(
        tmp_path,
        {"base_url": us.url, "headers": {"X-Account": "{{ account }}"}},
        "split(config('accounts'), ',')",
        key="example_user:{{ account }}:{{ record.id }}",
        config=("accounts",),
        pagination=PAGES,
        tags={"Account": "{{ account }}"},
    )
    config = ("--config", f"apiToken={TOKEN}", "--config", "accounts=initech,acme")
    result = etl("run", mapping, "--output", tmp_path / "out", *config)
    assert result.exit_code == 0, result.stdout + result.stderr
    keys = [u["_key"] for u in users(read_output(tmp_path / "out"))]
    assert keys == [
        "example_user:initech:u1",
        "example_user:acme:u1",
        "example_user:acme:u2",
        "example_user:acme:u3",
    ]
    # accounts are fetched concurrently: the requests in any order, the records in account order
    assert sorted(r.headers.get("x-account") for r in us.log) == ["acme", "acme", "initech"]


def test_many_accounts_stream_in_order_whatever_the_concurrency(etl, regions, tmp_path):
    us, eu = regions
    many = {f"t{n:02d}": [f"N{n}a", f"N{n}b", f"N{n}c"] for n in range(12)}
    us.accounts.update(many)
    us.directory = [{"id": name, "name": name, "apiUrl": us.url} for name in many]
    result = run(etl, example(tmp_path, us, eu), us, tmp_path / "out", "--concurrency", "4")
    assert result.exit_code == 0, result.stdout + result.stderr
    keys = [u["_key"] for u in users(read_output(tmp_path / "out"))]
    assert keys == [f"example_user:t{n:02d}:u{i}" for n in range(12) for i in (1, 2, 3)]


def test_fan_out_below_an_account_uses_its_base_url(etl, regions, tmp_path):
    """A fan-out over the users of an account, and a detail request per user, go to the
    account's region with its header: the account is passed down."""
    us, eu = regions

    def below(data):
        step = {
            "id": "fetch-user-again",
            "depends_on": ["fetch-users"],
            "for_each": "example_user",
            "request": {"source": "region", "path": "/users/{{ parent.userId }}"},
            "records": "[user]",
            "entities": [
                {
                    "resource": "Login",
                    "type": "example_login",
                    "class": "Record",
                    "key": "login:{{ account.accountId }}:{{ parent.userId }}",
                    "properties": {"name": "name", "lastLogin": "lastLogin"},
                }
            ],
        }
        users_step = data["steps"][1]
        users_step["entities"][0]["properties"]["userId"] = "id"
        data["steps"].append(step)

    us.directory = [d for d in us.directory if d["id"] != "acme"]  # one page per account
    result = run(etl, example(tmp_path, us, eu, below), us, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    logins = [e["_key"] for e in read_output(tmp_path / "out")["entities"] if e["_type"] == "example_login"]
    assert logins == ["login:globex:u1", "login:initech:u1"]
    assert [r.headers.get("x-account") for r in eu.log] == ["globex", "globex"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["steps"][1].update(for_each="example_account"),
            "steps[1].accounts: a step has accounts or for_each, not both",
        ),
        (
            lambda d: d["steps"][1].update(depends_on=[]),
            "steps[1].accounts.type: 'example_account' is built by step 'fetch-accounts', which this step does "
            "not depend on",
        ),
        (
            lambda d: d["steps"][1].update(accounts={"type": "example_acount"}),
            "unknown entity type 'example_acount'",
        ),
        (
            lambda d: d["steps"][0]["entities"][0]["properties"].update(x="{{ account.id }}"),
            "steps[0].entities[0].properties.x: 'account' is not available here",
        ),
        (
            lambda d: d["sources"]["region"].update(base_url="{{ acount.apiUrl }}"),
            "sources.region.base_url: unknown variable 'acount'",
        ),
    ],
)
def test_mistakes_are_mapping_errors_with_their_place(etl, tmp_path, change, message):
    data = yaml.safe_load(EXAMPLE.read_text())
    change(data)
    result = etl("validate", write_mapping(tmp_path / "mapping.yaml", data))
    assert result.exit_code == 3, result.stdout + result.stderr
    assert message in result.stderr, result.stderr


def test_a_base_url_made_of_the_account_needs_allowed_origins(etl, regions, tmp_path):
    us, eu = regions

    def no_origins(data):
        del data["sources"]["region"]["allowed_origins"]

    result = run(etl, example(tmp_path, us, eu, no_origins), us, tmp_path / "out")
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "sources.region.allowed_origins" in result.stderr
    assert [r.path for r in us.log + eu.log if r.path == "/users"] == []


def test_preview_names_the_account_of_each_request(etl, regions, tmp_path):
    us, eu = regions
    mapping = example(tmp_path, us, eu)
    args = ("--base-url", f"directory={us.url}", "--config", f"apiToken={TOKEN}", "--limit", "10")
    result = etl("preview", mapping, *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    step = result.stdout.split("== step fetch-users")[1]
    assert f"GET {us.url}/users?page=1 -> 200, 2 record(s) (for account example_account:acme)" in step
    assert f"GET {eu.url}/users?page=1 -> 200, 1 record(s) (for account example_account:globex)" in step


def test_a_list_of_accounts_in_a_query_parameter_with_a_detail_per_record(etl, regions, tmp_path):
    """accounts: a literal list of objects; the source's params read the account; a detail
    request per user goes with the account's parameter too, and keeps the users' order."""
    us, _ = regions
    mapping = user_mapping(
        tmp_path,
        {"base_url": us.url, "params": {"account": "{{ account.id }}"}},
        [{"id": "acme", "label": "Acme"}, {"id": "initech", "label": "Initech"}],
        key="example_user:{{ account.id }}:{{ record.id }}",
        pagination=PAGES,
        detail={"request": {"path": "/users/{{ record.id }}"}, "record": "user"},
        properties={"lastLogin": "lastLogin"},
        tags={"Account": "{{ account.label }}"},
    )
    result = etl("run", mapping, "--output", tmp_path / "out", "--config", f"apiToken={TOKEN}", "--concurrency", "3")
    assert result.exit_code == 0, result.stdout + result.stderr
    found = [(u["_key"], u["tag.Account"], u["lastLogin"]) for u in users(read_output(tmp_path / "out"))]
    assert found == [
        ("example_user:acme:u1", "Acme", "2026-11-01T00:00:00Z"),
        ("example_user:acme:u2", "Acme", "2026-11-01T00:00:00Z"),
        ("example_user:acme:u3", "Acme", "2026-11-01T00:00:00Z"),
        ("example_user:initech:u1", "Initech", "2026-11-01T00:00:00Z"),
    ]
    details = sorted((r.path, r.query.get("account")) for r in us.log if r.path.startswith("/users/"))
    assert details == [("/users/u1", "acme"), ("/users/u1", "initech"), ("/users/u2", "acme"), ("/users/u3", "acme")]


def test_accounts_split_out_of_a_secret_are_redacted(etl, tmp_path):
    """One secret config field holds a key per account: each key is a secret too, in errors
    and logs, though it is only a part of the field's value."""
    keys = ["tenant-key-alpha-1111", "tenant-key-bravo-2222", "tenant-key-gone-3333"]
    with RegionApi({keys[0]: ["Ann"], keys[1]: ["Bob"]}) as api:
        mapping = user_mapping(
            tmp_path,
            {"base_url": api.url, "params": {"account": "{{ account }}"}},
            "split(config('tenantKeys'), ',')",
            key="example_user:{{ record.email }}",
            secrets=("tenantKeys",),
        )
        config = ("--config", f"apiToken={TOKEN}", "--config", "tenantKeys=" + ",".join(keys))
        result = etl("run", mapping, "--output", tmp_path / "out", *config, "-vv")
    assert result.exit_code == 1, result.stdout + result.stderr  # the third account is gone: 404
    said = result.stdout + result.stderr
    assert "for account [REDACTED]" in said and "404" in said
    assert not any(key in said for key in keys)
    assert len(users(read_output(tmp_path / "out"))) == 2


def test_an_anonymous_source_sends_nothing_of_its_own_to_an_account_elsewhere(etl, regions, tmp_path):
    """cross_origin: anonymous - the request to an account's foreign base URL goes without the
    token and without the source's headers and params, the account's own included."""
    us, eu = regions

    def anonymous(data):
        data["sources"]["region"]["cross_origin"] = "anonymous"
        data["sources"]["region"]["params"] = {"tenant": "{{ account.accountId }}"}

    with RegionApi({"evil": ["Mallory"]}) as elsewhere:
        us.directory.append({"id": "evil", "name": "Evil", "apiUrl": elsewhere.url})
        result = run(etl, example(tmp_path, us, eu, anonymous), us, tmp_path / "out")
        sent = [(r.path, r.headers.get("authorization"), r.headers.get("x-account"), r.query) for r in elsewhere.log]
    assert sent == [("/users", None, None, {"page": "1"})]
    assert result.exit_code == 1, result.stdout + result.stderr  # it answers 401 to a request without a token
    assert {r.query.get("tenant") for r in eu.log} == {"globex"}  # trusted origins get the account's params


def test_an_account_in_the_base_urls_path_keeps_the_sources_origin(etl, regions, tmp_path):
    """base_url: ".../t/{{ account }}" - the origin is the same for every account, so the
    source's own origin is known without one, and no allowed_origins is needed."""
    us, _ = regions
    mapping = user_mapping(
        tmp_path,
        {"base_url": "{{ config.apiUrl }}/t/{{ account }}"},
        "split(config('accounts'), ',')",
        key="example_user:{{ account }}:{{ record.id }}",
        config=("apiUrl", "accounts"),
    )
    config = ("--config", f"apiToken={TOKEN}", "--config", f"apiUrl={us.url}", "--config", "accounts=initech,acme")
    result = etl("run", mapping, "--output", tmp_path / "out", *config)
    assert result.exit_code == 0, result.stdout + result.stderr
    keys = [u["_key"] for u in users(read_output(tmp_path / "out"))]
    assert keys == ["example_user:initech:u1", "example_user:acme:u1", "example_user:acme:u2", "example_user:acme:u3"]
    assert sorted(r.path for r in us.log) == ["/t/acme/users", "/t/initech/users"]
