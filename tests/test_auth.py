"""Every auth kind against a real local API that checks the credentials (tests/fakes/paging.py),
run from the documented examples in docs/examples/: bearer, basic, API key (header and
query) and OAuth2 client credentials (token caching, expiry on a fake clock, one refresh on
a 401, a refused token request). Secrets and tokens never reach stdout, stderr (even -vv),
the output files or a recorded cassette."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from engine.http import clock as http_clock
from tests.fakes.paging import (
    EXAMPLES,
    FakeClock,
    OAuthServer,
    PagingApi,
    item_ids,
    item_mapping,
    partial_types,
    require_basic,
    require_bearer,
    require_header,
    require_query,
    tags_step,
    write_mapping,
)
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))
OFFSETS = ["0", "10", "20"]  # the auth examples page by 10 through 23 records

TOKEN = "example-bearer-token-7f3a91"
PASSWORD = "example-password-c0ffee"
API_KEY = "example-api-key-5e2b8d"
CLIENT_ID = "example-client"
CLIENT_SECRET = "example-client-secret-9d4e2a"


@pytest.fixture
def api():
    with PagingApi("offset", 23) as server:
        yield server


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def all_text(result, out: Path) -> str:
    """Everything a run showed or wrote: stdout, stderr and every output file."""
    parts = [result.stdout, result.stderr]
    if out.exists():
        parts += [p.read_text() for p in sorted(out.rglob("*")) if p.is_file()]
    return "\n".join(parts)


def assert_complete(result, out):
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(out)
    assert item_ids(output) == ALL
    assert partial_types(output) == []


# -- bearer, basic, API key ------------------------------------------------------------------------


def test_bearer(etl, api, tmp_path):
    api.auth = require_bearer(TOKEN)
    result = run(etl, EXAMPLES / "auth-bearer.yaml", api, tmp_path / "out", "--config", f"apiToken={TOKEN}", "-vv")
    assert_complete(result, tmp_path / "out")
    assert [r.headers["authorization"] for r in api.log] == [f"Bearer {TOKEN}"] * 3
    assert [r.query["offset"] for r in api.log] == OFFSETS
    assert TOKEN not in all_text(result, tmp_path / "out")


def test_bearer_from_the_environment(etl, api, tmp_path):
    api.auth = require_bearer(TOKEN)
    result = etl(
        "run",
        EXAMPLES / "auth-bearer.yaml",
        "--base-url",
        api.url,
        "--output",
        tmp_path / "out",
        env={"EXAMPLE_API_TOKEN": TOKEN},
    )
    assert_complete(result, tmp_path / "out")


def test_wrong_bearer_token_is_an_authentication_error_naming_the_url(etl, api, tmp_path):
    # A 401 on the source's first request (it has no validate request): the run fails (issue 13).
    api.auth = require_bearer(TOKEN)
    result = run(etl, EXAMPLES / "auth-bearer.yaml", api, tmp_path / "out", "--config", "apiToken=not-the-token")
    text = result.stdout + result.stderr
    assert result.exit_code == 5, text
    assert f"GET {api.url}/items?offset=0&limit=10 failed: HTTP 401 Unauthorized: invalid bearer token" in text
    assert "check the API credentials in the config" in result.stderr
    assert not (tmp_path / "out").exists()
    assert "not-the-token" not in text


def test_auth_applies_to_the_validate_request_whose_401_is_an_authentication_error(etl, api, tmp_path):
    api.auth = require_bearer(TOKEN)
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": "meta.total"},
        config={"apiToken": {"secret": True}},
        source={"auth": {"kind": "bearer", "token": "{{ config.apiToken }}"}, "validate": {"path": "/account"}},
    )
    mapping = write_mapping(tmp_path / "m.yaml", data)
    good = run(etl, mapping, api, tmp_path / "out", "--config", f"apiToken={TOKEN}")
    assert_complete(good, tmp_path / "out")
    assert api.log[0].path == "/account" and api.log[0].headers["authorization"] == f"Bearer {TOKEN}"
    bad = run(etl, mapping, api, tmp_path / "out", "--config", "apiToken=wrong-token-value")
    assert bad.exit_code == 5
    assert "authentication failed" in bad.stderr and f"{api.url}/account" in bad.stderr
    assert item_ids(read_output(tmp_path / "out")) == ALL  # the previous output is untouched


def test_basic(etl, api, tmp_path):
    api.auth = require_basic("alice", PASSWORD)
    result = run(
        etl,
        EXAMPLES / "auth-basic.yaml",
        api,
        tmp_path / "out",
        "--config",
        "username=alice",
        "--config",
        f"password={PASSWORD}",
        "-vv",
    )
    assert_complete(result, tmp_path / "out")
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert [r.headers["authorization"] for r in api.log] == [expected] * 3
    text = all_text(result, tmp_path / "out")
    assert PASSWORD not in text and expected.removeprefix("Basic ") not in text


def test_wrong_basic_password(etl, api, tmp_path):
    api.auth = require_basic("alice", PASSWORD)
    result = run(
        etl,
        EXAMPLES / "auth-basic.yaml",
        api,
        tmp_path / "out",
        "--config",
        "username=alice",
        "--config",
        "password=guessed-password",
    )
    assert result.exit_code == 5  # refused on the source's first request (issue 13)
    assert "HTTP 401" in result.stderr and "invalid username or password" in result.stderr


def test_api_key_in_a_header(etl, api, tmp_path):
    api.auth = require_header("X-Api-Key", API_KEY)
    result = run(etl, EXAMPLES / "auth-api-key.yaml", api, tmp_path / "out", "--config", f"apiKey={API_KEY}", "-vv")
    assert_complete(result, tmp_path / "out")
    assert [r.headers["x-api-key"] for r in api.log] == [API_KEY] * 3
    assert all("authorization" not in r.headers and "api_key" not in r.query for r in api.log)
    assert API_KEY not in all_text(result, tmp_path / "out")


def test_api_key_in_the_query_string_is_redacted_in_logs(etl, api, tmp_path):
    api.auth = require_query("api_key", API_KEY)
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": "meta.total"},
        config={"apiKey": {"secret": True}},
        source={"auth": {"kind": "api_key", "in": "query", "name": "api_key", "value": "{{ config.apiKey }}"}},
    )
    result = run(
        etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out", "--config", f"apiKey={API_KEY}", "-vv"
    )
    assert_complete(result, tmp_path / "out")
    assert [(r.query["api_key"], r.query["offset"]) for r in api.log] == [(API_KEY, o) for o in OFFSETS]
    assert API_KEY not in all_text(result, tmp_path / "out")
    assert "api_key=[REDACTED]" in result.stderr


def test_api_key_in_the_query_string_is_redacted_in_errors(etl, api, tmp_path):
    api.fail_next("/items", Response(400, {"message": "bad request"}))
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": "meta.total"},
        config={"apiKey": {"secret": True}},
        source={"auth": {"kind": "api_key", "in": "query", "name": "api_key", "value": "{{ config.apiKey }}"}},
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out", "--config", f"apiKey={API_KEY}")
    assert result.exit_code == 1
    assert (
        f"GET {api.url}/items?api_key=[REDACTED]&offset=0&limit=10 failed: HTTP 400 Bad Request: bad request"
        in result.stdout
    )
    assert API_KEY not in all_text(result, tmp_path / "out")


# -- OAuth2 client credentials ----------------------------------------------------------------------


def oauth_server(**kwargs) -> OAuthServer:
    settings = {"scope": "items:read", "params": {"audience": "https://api.example.com"}, **kwargs}
    return OAuthServer(CLIENT_ID, CLIENT_SECRET, **settings)


def run_oauth(etl, mapping, api, out, *extra):
    return run(
        etl, mapping, api, out, "--config", f"clientId={CLIENT_ID}", "--config", f"clientSecret={CLIENT_SECRET}", *extra
    )


OAUTH_EXAMPLE = EXAMPLES / "auth-oauth2-client-credentials.yaml"


def test_oauth_one_token_for_every_request(etl, api, tmp_path):
    api.oauth = oauth = oauth_server()
    result = run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out")
    assert_complete(result, tmp_path / "out")
    (token,) = oauth.issued
    assert [r.path for r in api.log] == ["/oauth/token", "/items", "/items", "/items"]
    assert [r.headers["authorization"] for r in api.log[1:]] == [f"Bearer {token}"] * 3
    (form,) = oauth.token_requests
    assert form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "items:read",
        "audience": "https://api.example.com",
    }
    token_request = api.log[0]
    assert token_request.method == "POST"
    assert token_request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert "authorization" not in token_request.headers
    assert oauth.rejected == []


def test_oauth_client_auth_basic_and_an_absolute_token_url(etl, api, tmp_path):
    oauth = oauth_server(client_auth="basic")
    with PagingApi("none", 0) as auth_server:
        auth_server.oauth = oauth  # the token endpoint lives on another host
        api.oauth = oauth  # the API accepts the tokens it issues
        data = item_mapping(
            {"kind": "offset", "limit": 10, "total": "meta.total"},
            config={"clientId": {}, "clientSecret": {"secret": True}},
            source={
                "auth": {
                    "kind": "oauth2_client_credentials",
                    "token_url": f"{auth_server.url}/oauth/token",
                    "client_id": "{{ config.clientId }}",
                    "client_secret": "{{ config.clientSecret }}",
                    "scope": "items:read",
                    "params": {"audience": "https://api.example.com"},
                    "client_auth": "basic",
                }
            },
        )
        result = run_oauth(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out", "-vv")
        assert_complete(result, tmp_path / "out")
        assert [r.path for r in auth_server.log] == ["/oauth/token"]
        assert [r.path for r in api.log] == ["/items"] * 3
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        assert auth_server.log[0].headers["authorization"] == expected
        assert oauth.token_requests == [
            {"grant_type": "client_credentials", "scope": "items:read", "audience": "https://api.example.com"}
        ]
        text = all_text(result, tmp_path / "out")
        assert CLIENT_SECRET not in text and oauth.issued[0] not in text


# The client-credentials source the OAuth2 tests share: secret from config, scope and an extra param.
OAUTH_MAPPING = {
    "config": {"clientId": {}, "clientSecret": {"secret": True}},
    "source": {
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": "/oauth/token",
            "client_id": "{{ config.clientId }}",
            "client_secret": "{{ config.clientSecret }}",
            "scope": "items:read",
            "params": {"audience": "https://api.example.com"},
        }
    },
}


def test_oauth_token_shared_by_concurrent_fan_out_requests(etl, api, tmp_path):
    api.oauth = oauth = oauth_server()
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": "meta.total"}, **OAUTH_MAPPING, steps_after=[tags_step()]
    )
    result = run_oauth(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out", "--concurrency", "8")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert len([e for e in output["entities"] if e["_type"] == "example_tag"]) == 46
    assert len(oauth.token_requests) == 1
    assert len(oauth.used) == 3 + 23 and set(oauth.used) == set(oauth.issued)


def test_oauth_token_is_renewed_before_it_expires(etl, api, tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(http_clock, "sleep", clock.sleep)
    monkeypatch.setattr(http_clock, "monotonic", clock.monotonic, raising=False)
    # Tokens live an hour on the fake clock; each API call takes 20 minutes of it.
    api.oauth = oauth = oauth_server(expires_in=3600, clock=clock)
    api.clock, api.clock_step = clock, 1200
    data = item_mapping({"kind": "offset", "limit": 5, "total": "meta.total"}, **OAUTH_MAPPING)
    result = run_oauth(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert_complete(result, tmp_path / "out")
    # Calls at t=0, 1200 and 2400 use the first token; at t=3600 it has expired, so a new
    # one is fetched before the call (not after a 401).
    first, second = oauth.issued
    assert oauth.used == [first, first, first, second, second]
    assert oauth.rejected == []
    assert [r.path for r in api.log] == [
        "/oauth/token",
        "/items",
        "/items",
        "/items",
        "/oauth/token",
        "/items",
        "/items",
    ]


def test_oauth_401_refreshes_the_token_once_and_retries(etl, api, tmp_path):
    # The API revokes each token after 3 calls, long before its expires_in.
    api.oauth = oauth = oauth_server(max_uses=3)
    data = item_mapping({"kind": "offset", "limit": 5, "total": "meta.total"}, **OAUTH_MAPPING)
    result = run_oauth(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert_complete(result, tmp_path / "out")
    first, second = oauth.issued
    assert oauth.used == [first, first, first, first, second, second]
    assert oauth.rejected == [first]
    assert [(r.path, r.query.get("offset")) for r in api.log] == [
        ("/oauth/token", None),
        ("/items", "0"),
        ("/items", "5"),
        ("/items", "10"),
        ("/items", "15"),
        ("/oauth/token", None),
        ("/items", "15"),
        ("/items", "20"),
    ]


def test_oauth_401_after_a_fresh_token_is_not_retried_forever(etl, api, tmp_path):
    api.oauth = oauth = oauth_server(reject_all=True)
    result = run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out")
    text = result.stdout + result.stderr
    assert result.exit_code != 0
    assert f"{api.url}/items" in text and "401" in text
    # One token, one 401, one refresh, one retry, one more 401: then the request fails.
    assert len(oauth.token_requests) == 2
    assert [r.path for r in api.log] == ["/oauth/token", "/items", "/oauth/token", "/items"]
    assert not any(token in text for token in oauth.issued)


@pytest.mark.parametrize(
    "response, message",
    [
        (
            Response(400, {"error": "invalid_client", "error_description": "unknown client"}),
            "invalid_client|unknown client",
        ),
        (Response(401, {"error": "invalid_client"}), "invalid_client"),
        (Response(200, {"token_type": "Bearer"}), "access_token"),  # the message says what is missing
        (Response(200, b"<html>login</html>", headers={"Content-Type": "text/html"}), "not JSON|<html>login</html>"),
    ],
)
def test_oauth_token_endpoint_failure_is_an_authentication_error(etl, api, tmp_path, response, message):
    api.oauth = oauth = oauth_server()
    assert_complete(run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out"), tmp_path / "out")  # a previous output
    summary = (tmp_path / "out" / "summary.json").read_text()
    api.log.clear()
    oauth.error = response
    result = run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out")
    assert result.exit_code == 5, result.stdout + result.stderr
    assert f"{api.url}/oauth/token" in result.stderr and re.search(message, result.stderr)
    assert [r.path for r in api.log] == ["/oauth/token"]  # no API call without a token
    assert len(oauth.token_requests) == 2
    assert (tmp_path / "out" / "summary.json").read_text() == summary  # the previous output is untouched
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_oauth_wrong_client_secret(etl, api, tmp_path):
    api.oauth = oauth_server()
    result = run(
        etl,
        OAUTH_EXAMPLE,
        api,
        tmp_path / "out",
        "--config",
        f"clientId={CLIENT_ID}",
        "--config",
        "clientSecret=not-the-client-secret",
    )
    assert result.exit_code == 5
    assert "invalid_client" in result.stderr and "not-the-client-secret" not in result.stdout + result.stderr


def test_oauth_secret_and_token_never_shown_logged_or_written(etl, api, tmp_path):
    api.oauth = oauth = oauth_server(max_uses=2)  # two tokens, so a refreshed one is checked too
    result = run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out", "-vv")
    assert_complete(result, tmp_path / "out")
    assert len(oauth.issued) == 2
    text = all_text(result, tmp_path / "out")
    for secret in (CLIENT_SECRET, *oauth.issued):
        assert secret not in text
    assert "/oauth/token" in result.stderr  # -vv logs the token request, without its secrets


def test_oauth_token_and_secret_are_redacted_in_a_recorded_cassette(etl, api, tmp_path):
    api.oauth = oauth = oauth_server()
    cassette = tmp_path / "recorded.yaml"
    result = run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out", "--cassette", cassette, "--record-mode", "all")
    assert_complete(result, tmp_path / "out")
    recorded = cassette.read_text()
    (token,) = oauth.issued
    assert token not in recorded and CLIENT_SECRET not in recorded
    assert "[REDACTED]" in recorded
    assert "/oauth/token" in recorded and recorded.count("/items?") == 3
    # The recording replays offline, without the secret.
    replay = etl(
        "run",
        OAUTH_EXAMPLE,
        "--base-url",
        api.url,
        "--output",
        tmp_path / "replayed",
        "--cassette",
        cassette,
        "--config",
        f"clientId={CLIENT_ID}",
    )
    assert replay.exit_code == 0, replay.stdout + replay.stderr
    assert item_ids(read_output(tmp_path / "replayed")) == ALL
    assert len(api.log) == 4  # nothing more reached the server


def test_oauth_token_request_body_is_form_encoded(etl, api, tmp_path):
    api.oauth = oauth_server()
    run_oauth(etl, OAUTH_EXAMPLE, api, tmp_path / "out")
    body = api.log[0].body.decode()
    assert not body.lstrip().startswith("{")
    assert parse_qs(body)["grant_type"] == ["client_credentials"]
    with pytest.raises(ValueError):
        json.loads(body)
