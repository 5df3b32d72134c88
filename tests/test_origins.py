"""A source's credentials never leave its origin, against real local servers: two servers on
127.0.0.1 (two ports, two origins), and `localhost` for the same server under another host.

Every way an API can point elsewhere is covered - a `next_url` link, a `Link` header, an
absolute request path, a redirect (302, 307, 308), a redirect of the OAuth2 token request -
with every kind of credential: bearer, HTTP Basic, API key header and query parameter, the
source's own secret header and query parameter, OAuth2. By default the request is refused
(nothing reaches the other server, the error names both origins); `cross_origin: anonymous`
sends it without any credential; `allowed_origins` trusts the other origin. A bad base URL
is a one-line configuration error (exit 4).
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.fakes.paging import (
    OAuthServer,
    PagingApi,
    item_ids,
    item_mapping,
    require_header,
    step_status,
    write_mapping,
)
from tests.fakes.server import Request, Response
from tests.graphtools import read_output

SECRET = "origin-test-secret-8c1d"
USER = "origin-user"
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
CLIENT_ID = "origin-client"
SOURCE = {"timeout": 2, "retry": {"max_attempts": 2, "initial_delay": 0.1, "max_delay": 1}}
NEXT_URL = {"kind": "next_url", "next_url": "links.next"}
FIRST = [{"id": i, "name": f"item {i}"} for i in (1, 2, 3)]

# Every kind of credential a source can hold, as its source keys.
CREDENTIALS = {
    "bearer": {"auth": {"kind": "bearer", "token": "{{ config.secret }}"}},
    "basic": {"auth": {"kind": "basic", "username": USER, "password": "{{ config.secret }}"}},
    "api_key_header": {"auth": {"kind": "api_key", "name": "X-Api-Key", "value": "{{ config.secret }}"}},
    "api_key_query": {"auth": {"kind": "api_key", "name": "api_key", "in": "query", "value": "{{ config.secret }}"}},
    "source_header": {"headers": {"X-Dev-Key": "{{ config.secret }}"}},
    "source_param": {"params": {"key": "{{ config.secret }}"}},
    "oauth2": {
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": "/oauth/token",
            "client_id": CLIENT_ID,
            "client_secret": "{{ config.secret }}",
        }
    },
}


@pytest.fixture
def api():
    with PagingApi("next_url", 6, default_size=3) as server:
        yield server


@pytest.fixture
def other():
    """Another origin: the same kind of API on another port."""
    with PagingApi("next_url", 6, default_size=3) as server:
        yield server


def mapping(pagination=NEXT_URL, source=None, **kwargs) -> dict:
    return item_mapping(pagination, source={**SOURCE, **(source or {})}, config={"secret": {"secret": True}}, **kwargs)


def run(etl, tmp_path, api, data, *extra):
    path = write_mapping(tmp_path / "example.yaml", data)
    return etl("run", path, "--base-url", api.url, "--output", tmp_path / "out", "--config", f"secret={SECRET}", *extra)


def secrets_of(api) -> list[str]:
    """Every credential value: the secret, Basic's base64, and any OAuth2 token issued."""
    return [SECRET, BASIC, *(api.oauth.issued if api.oauth else [])]


def leaks(request: Request, secrets: list[str]) -> list[str]:
    """What of the credentials ``request`` carried (nothing, for a request on another origin)."""
    text = json.dumps([request.path, request.query, request.headers]) + request.body.decode("utf-8", "replace")
    found = [s for s in secrets if s in text]
    found += [h for h in ("authorization", "x-api-key", "x-dev-key", "cookie") if h in request.headers]
    return found


def all_text(result, tmp_path) -> str:
    out = tmp_path / "out"
    files = [p.read_text() for p in sorted(out.rglob("*")) if p.is_file()] if out.exists() else []
    return "\n".join([result.stdout, result.stderr, *files])


def first_page_links_to(api, url: str) -> None:
    """The API's first page of items links its next page to ``url``."""
    api.fail_next("/items", Response(200, {"items": FIRST, "links": {"next": url}}))


def with_credentials(api, kind: str) -> dict:
    """The source keys of ``kind``; the API checks that they arrive."""
    if kind == "oauth2":
        api.oauth = OAuthServer(client_id=CLIENT_ID, client_secret=SECRET)
    elif kind == "bearer":
        api.auth = require_header("Authorization", f"Bearer {SECRET}")
    elif kind == "basic":
        api.auth = require_header("Authorization", f"Basic {BASIC}")
    elif kind == "api_key_header":
        api.auth = require_header("X-Api-Key", SECRET)
    elif kind == "source_header":
        api.auth = require_header("X-Dev-Key", SECRET)
    else:
        name = "api_key" if kind == "api_key_query" else "key"
        api.auth = lambda request: None if request.query.get(name) == SECRET else f"missing {name}"
    return CREDENTIALS[kind]


def refused(result, tmp_path, api, other, kept=(1, 2, 3)) -> str:
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == list(kept)
    assert step_status(output, "fetch-items") == "failure"
    origin_of_other = other.url if isinstance(other, PagingApi) else other
    line = next((line for line in text.splitlines() if "refusing to send" in line), None)
    assert line, text
    assert f"another origin ({origin_of_other})" in line and f"source 'api' ({api.url})" in line
    assert "sources.api.allowed_origins" in line and "cross_origin: anonymous" in line
    return line


# -- next-page links ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CREDENTIALS))
def test_a_next_link_to_another_origin_is_refused(etl, api, other, tmp_path, kind):
    source = with_credentials(api, kind)
    first_page_links_to(api, f"{other.url}/items?after=3&limit=3")
    result = run(etl, tmp_path, api, mapping(source=source))
    refused(result, tmp_path, api, other)
    assert other.log == []  # nothing at all was sent there
    text = all_text(result, tmp_path)
    assert all(secret not in text for secret in secrets_of(api))


@pytest.mark.parametrize("kind", list(CREDENTIALS))
def test_anonymous_follows_a_next_link_to_another_origin_without_credentials(etl, api, other, tmp_path, kind):
    source = with_credentials(api, kind)
    first_page_links_to(api, f"{other.url}/items?after=3&limit=3")
    result = run(etl, tmp_path, api, mapping(source={**source, "cross_origin": "anonymous"}), "-vv")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3, 4, 5, 6]
    assert [r.query for r in other.log] == [{"after": "3", "limit": "3"}]
    assert leaks(other.log[0], secrets_of(api)) == []
    assert "etl (declarative JupiterOne graph engine)" in other.log[0].headers["user-agent"]
    assert leaks(api.log[-1], secrets_of(api)) != []  # the API itself did get them
    assert all(secret not in all_text(result, tmp_path) for secret in secrets_of(api))


def test_the_refused_url_is_redacted(etl, api, other, tmp_path):
    source = with_credentials(api, "api_key_query")
    first_page_links_to(api, f"{other.url}/items?api_key={SECRET}&after=3")  # the API echoes its key
    result = run(etl, tmp_path, api, mapping(source=source))
    line = refused(result, tmp_path, api, other)
    assert f"GET {other.url}/items?api_key=[REDACTED]&after=3 is on another origin" in line
    assert other.log == [] and SECRET not in all_text(result, tmp_path)


def test_anonymous_drops_a_secret_the_link_carries_in_its_query(etl, api, other, tmp_path):
    source = with_credentials(api, "api_key_query")
    first_page_links_to(api, f"{other.url}/items?api_key={SECRET}&after=3&limit=3")  # echoed by the API
    result = run(etl, tmp_path, api, mapping(source={**source, "cross_origin": "anonymous"}))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [r.query for r in other.log] == [{"after": "3", "limit": "3"}]


def test_anonymous_never_sends_a_body_holding_a_secret(etl, api, other, tmp_path):
    data = mapping(
        source={"cross_origin": "anonymous"},
        request={"method": "POST", "path": f"{other.url}/items", "body": {"key": "{{ config.secret }}"}},
        pagination=None,
    )
    result = run(etl, tmp_path, api, data)
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "would carry a credential of source 'api'" in text and SECRET not in text
    assert other.log == []


def test_allowed_origins_get_the_credentials(etl, api, other, tmp_path):
    source = with_credentials(api, "api_key_header")
    other.auth = require_header("X-Api-Key", SECRET)
    first_page_links_to(api, f"{other.url}/items?after=3&limit=3")
    result = run(etl, tmp_path, api, mapping(source={**source, "allowed_origins": [other.url]}))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3, 4, 5, 6]
    assert other.log[0].headers["x-api-key"] == SECRET


def test_the_same_host_under_another_name_is_another_origin(etl, api, tmp_path):
    source = with_credentials(api, "bearer")
    port = api.url.rsplit(":", 1)[1]
    first_page_links_to(api, f"http://localhost:{port}/items?after=3&limit=3")
    result = run(etl, tmp_path, api, mapping(source=source))
    refused(result, tmp_path, api, f"http://localhost:{port}")
    assert len(api.log) == 1


def test_an_absolute_link_on_the_same_origin_keeps_the_credentials(etl, api, tmp_path):
    source = with_credentials(api, "api_key_query")
    api.absolute_next = True
    result = run(etl, tmp_path, api, mapping(source=source))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3, 4, 5, 6]
    assert [r.query.get("api_key") for r in api.log] == [SECRET, SECRET]


def test_a_link_header_to_another_origin_is_refused(etl, tmp_path):
    with PagingApi("link_header", 6) as api, PagingApi("link_header", 6) as other:
        api.auth = require_header("X-Api-Key", SECRET)
        link = f'<{other.url}/items?page=2&per_page=3>; rel="next"'
        api.fail_next("/items", Response(200, FIRST, headers={"Link": link}))
        data = mapping(
            {"kind": "link_header", "size_param": "per_page", "size": 3},
            source=CREDENTIALS["api_key_header"],
            records="@",
        )
        refused(run(etl, tmp_path, api, data), tmp_path, api, other)
        assert other.log == []


def test_an_absolute_request_path_on_another_origin_is_refused(etl, api, other, tmp_path):
    data = mapping(None, source=CREDENTIALS["source_header"], request={"path": f"{other.url}/items"})
    refused(run(etl, tmp_path, api, data), tmp_path, api, other, kept=())
    assert other.log == [] and api.log == []


# -- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused(etl, api, other, tmp_path, status):
    source = with_credentials(api, "api_key_header")
    api.fail_next("/items", Response(status, headers={"Location": f"{other.url}/items"}))
    result = run(etl, tmp_path, api, mapping(None, source=source))
    line = refused(result, tmp_path, api, other, kept=())
    assert f"GET {api.url}/items -> HTTP {status}: the redirect to {other.url}/items" in line
    assert other.log == []


@pytest.mark.parametrize("kind", ["api_key_header", "source_header", "bearer", "basic", "api_key_query"])
@pytest.mark.parametrize("status", [302, 307, 308])
def test_anonymous_follows_a_redirect_without_any_credential(etl, api, other, tmp_path, kind, status):
    source = with_credentials(api, kind)
    api.fail_next("/items", Response(status, headers={"Location": f"{other.url}/items?after=0&limit=3"}))
    result = run(etl, tmp_path, api, mapping(None, source={**source, "cross_origin": "anonymous"}))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3]
    assert len(other.log) == 1 and leaks(other.log[0], secrets_of(api)) == []
    assert leaks(api.log[0], secrets_of(api)) != []


def test_a_redirect_on_the_same_origin_keeps_the_credentials(etl, api, tmp_path):
    source = with_credentials(api, "source_header")
    api.fail_next("/items", Response(302, headers={"Location": "/items?after=0&limit=3&moved=1"}))
    result = run(etl, tmp_path, api, mapping(None, source=source))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [r.query.get("moved") for r in api.log] == [None, "1"]
    assert [r.headers.get("x-dev-key") for r in api.log] == [SECRET, SECRET]


def test_a_307_repeats_a_post_with_its_body_and_a_303_turns_it_into_a_get(etl, api, tmp_path):
    data = mapping(None, request={"method": "POST", "path": "/items", "body": {"query": "all"}})
    api.fail_next(
        "/items",
        Response(307, headers={"Location": "/items?step=2"}),
        Response(303, headers={"Location": "/items?step=3"}),
    )
    result = run(etl, tmp_path, api, data)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [(r.method, r.query.get("step"), r.body) for r in api.log] == [
        ("POST", None, b'{"query": "all"}'),
        ("POST", "2", b'{"query": "all"}'),
        ("GET", "3", b""),
    ]


def test_a_redirect_loop_ends_after_a_few_hops(etl, api, tmp_path, sleeps):
    api.fail_next("/items", *[Response(302, headers={"Location": "/items"})] * 10)
    result = run(etl, tmp_path, api, mapping(None))
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert f"GET {api.url}/items: more than 5 redirects" in text
    assert len(api.log) == 6 and sleeps == []


def test_a_redirect_to_something_not_http_is_refused(etl, api, tmp_path):
    api.fail_next("/items", Response(302, headers={"Location": "file:///etc/passwd"}))
    result = run(etl, tmp_path, api, mapping(None, source={"cross_origin": "anonymous"}))
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "the redirect to file:///etc/passwd is not an http(s) URL" in text


# -- the OAuth2 token request ------------------------------------------------------------------------


def test_the_token_request_is_not_redirected_to_another_origin(etl, api, other, tmp_path):
    source = with_credentials(api, "oauth2")
    api.fail_next("/oauth/token", Response(307, headers={"Location": f"{other.url}/oauth/token"}))
    result = run(etl, tmp_path, api, mapping(None, source={**source, "cross_origin": "anonymous"}))
    text = result.stdout + result.stderr
    assert result.exit_code == 5, text
    assert f"authentication failed: POST {api.url}/oauth/token -> HTTP 307 redirect to {other.url}" in text
    assert "only sent to the token URL" in text
    assert other.log == [] and SECRET not in text


def test_the_token_request_follows_a_redirect_on_its_own_origin(etl, api, tmp_path):
    source = with_credentials(api, "oauth2")
    api.fail_next("/oauth/token", Response(307, headers={"Location": "/oauth/token?v=2"}))
    result = run(etl, tmp_path, api, mapping(None, source=source))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [r.path for r in api.log] == ["/oauth/token", "/oauth/token", "/items"]
    assert api.oauth.token_requests[0]["client_secret"] == SECRET  # the form went along, to the same origin


def test_the_access_token_goes_only_to_the_source_origin(etl, api, other, tmp_path):
    """A token URL on another origin is fine (it is its own); the token still only goes to the API."""
    oauth = OAuthServer(client_id=CLIENT_ID, client_secret=SECRET)
    api.oauth = oauth  # the API accepts the tokens it issues
    with PagingApi("none", 0) as auth_server:
        auth_server.oauth = oauth  # the token endpoint lives on a third server
        source = {"auth": {**CREDENTIALS["oauth2"]["auth"], "token_url": f"{auth_server.url}/oauth/token"}}
        first_page_links_to(api, f"{other.url}/items?after=3&limit=3")
        result = run(etl, tmp_path, api, mapping(source={**source, "cross_origin": "anonymous"}))
        assert result.exit_code == 0, result.stdout + result.stderr
        assert [r.path for r in auth_server.log] == ["/oauth/token"]
    assert len(other.log) == 1 and leaks(other.log[0], secrets_of(api)) == []  # anonymous there
    assert api.log[0].headers["authorization"] == f"Bearer {oauth.issued[0]}"


# -- the mapping keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origins, message",
    [
        (["https://cdn.example.com/path"], "allowed_origins"),
        (["ftp://cdn.example.com"], "allowed_origins"),
        (["cdn.example.com"], "allowed_origins"),
        (["https://cdn.example.com:99999"], "is not an origin"),
    ],
)
def test_allowed_origins_must_be_origins(etl, tmp_path, origins, message):
    path = write_mapping(tmp_path / "m.yaml", mapping(source={"allowed_origins": origins}))
    result = etl("validate", path)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert message in result.stderr


def test_cross_origin_takes_refuse_or_anonymous(etl, tmp_path):
    path = write_mapping(tmp_path / "m.yaml", mapping(source={"cross_origin": "allow"}))
    result = etl("validate", path)
    assert result.exit_code == 3 and "cross_origin" in result.stderr


# -- a bad base URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, problem",
    [
        ("htp://x", "its scheme is htp://"),
        ("http://:80", "it has no host"),
        ("file:///etc", "its scheme is file://"),
        ("https://", "it has no host"),
        ("not a url", "spaces"),
        ("api.example.com/v1", "scheme is missing"),
        ("http://x:99999", "port"),
        ("http://exa mple.com", "spaces"),
    ],
)
def test_a_bad_base_url_is_a_config_error(etl, tmp_path, url, problem):
    path = write_mapping(tmp_path / "m.yaml", mapping(None))
    result = etl("run", path, "--base-url", url, "--output", tmp_path / "out", "--config", f"secret={SECRET}")
    assert result.exit_code == 4, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etl: error: the base URL of source 'api' is "), lines
    assert problem in lines[0] and "--base-url" in lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_base_url_template_rendering_to_garbage_is_a_config_error(etl, tmp_path):
    data = mapping(None, source={"base_url": "{{ config.host }}/api"})
    data["config"]["host"] = {}
    path = write_mapping(tmp_path / "m.yaml", data)
    result = etl("run", path, "--output", tmp_path / "out", "--config", "host=ftp:/nowhere", "--config", "secret=x")
    assert result.exit_code == 4, result.stdout + result.stderr
    assert re.search(
        r"etl: error: the base URL of source 'api' is 'ftp:/nowhere/api': its scheme is ftp://", result.stderr
    )
    assert "sources.api.base_url" in result.stderr
