"""Every form of a secret is redacted, by the one redactor (engine/secrets.py): the value, its
URL-encoded forms, its JSON-escaped forms (non-ASCII, quotes, backslashes, `\\/`), and the
base64 of `user:password` for HTTP Basic - in error messages, -vv logs, recorded cassettes
(a server echoing the credentials back in an error body too) and vcrpy's own errors (a
request missing from a replayed cassette, the OAuth2 token request with its client secret
among them, is our error with a redacted message, never vcrpy's text).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode

import pytest
import yaml

from engine.secrets import REDACTED, Redactor, variants
from tests.fakes.paging import PagingApi, item_mapping, write_mapping
from tests.fakes.server import Request, Response

# A secret with everything that changes between its forms: non-ASCII, a quote, a backslash,
# a slash, a plus, an ampersand, an equals sign and a space.
SECRET = 'pä"ss\\wörd/+&= x-7d1'
USER = "redaction-user"
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode("latin-1")).decode()
BASIC_UTF8 = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
FORMS = sorted(variants(SECRET) | {BASIC, BASIC_UTF8})


def json_forms(secret: str) -> list[str]:
    return [json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]


# -- the redactor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],  # \u00e4, \", \\
        json.dumps(SECRET, ensure_ascii=False)[1:-1],  # ä, \", \\
        json.dumps(SECRET)[1:-1].replace("/", "\\/"),  # PHP's json_encode escapes slashes
    ],
    ids=["raw", "quote", "quote-all", "quote_plus", "json-ascii", "json-utf8", "json-slashes"],
)
def test_every_form_of_a_secret_is_redacted(form):
    redactor = Redactor([SECRET])
    text = f"before {form} after"
    assert redactor(text) == f"before {REDACTED} after"
    assert redactor.bytes(text.encode()) == f"before {REDACTED} after".encode()
    assert redactor.contains_secret(text)


def test_a_json_document_holding_a_secret_is_redacted_whatever_its_encoding():
    redactor = Redactor([SECRET])
    for ensure_ascii in (True, False):
        document = json.dumps({"token": SECRET, "note": "ok"}, ensure_ascii=ensure_ascii)
        assert json.loads(redactor(document)) == {"token": REDACTED, "note": "ok"}


def test_basic_credentials_are_redacted_as_base64():
    redactor = Redactor()
    redactor.add_basic(USER, SECRET)
    assert redactor(f"Authorization: Basic {BASIC}") == f"Authorization: Basic {REDACTED}"
    assert redactor(f"Basic {BASIC_UTF8}") == f"Basic {REDACTED}"
    assert redactor(SECRET) == REDACTED
    assert USER in redactor(f"user {USER}")  # the user name is not a secret


def test_short_secrets_and_text_without_secrets_are_left_alone():
    redactor = Redactor(["abc", "long-enough-secret"])
    assert redactor("abc and more") == "abc and more"
    assert not redactor.contains_secret("nothing here")


# -- against a server that echoes credentials back -----------------------------------------------------


def echo(request: Request) -> Response:
    """A 400 whose body (not a message the mapping's error_message finds, so the error shows it
    raw) repeats what the client sent: the Authorization header and the key, JSON-escaped both
    ways and URL-encoded."""
    key = request.query.get("api_key", "")
    echoed = {
        "authorization": json.dumps(request.headers.get("authorization", "")),
        "ascii": json.dumps(key),
        "utf8": json.dumps(key, ensure_ascii=False),
        "url": json.dumps(urlencode({"api_key": key})),
    }
    body = ('{"echo": {' + ", ".join(f'"{name}": {value}' for name, value in echoed.items()) + "}}").encode()
    return Response(400, body)


@pytest.fixture
def api():
    with PagingApi("none", 3) as server:
        server.routes.insert(0, ("GET", re.compile("^/items$"), echo))  # before the usual /items
        yield server


def echo_mapping(auth: dict) -> dict:
    return item_mapping(
        None,
        source={"auth": auth, "timeout": 2, "retry": {"max_attempts": 1}},
        config={"user": {}, "secret": {"secret": True}},
    )


AUTHS = {
    "basic": {"kind": "basic", "username": "{{ config.user }}", "password": "{{ config.secret }}"},
    "api_key_query": {"kind": "api_key", "name": "api_key", "in": "query", "value": "{{ config.secret }}"},
    "bearer": {"kind": "bearer", "token": "{{ config.secret }}"},
}


def cassette_text(path: Path) -> str:
    """Everything a cassette holds, with YAML's own escapes undone (bodies decoded)."""
    data = yaml.safe_load(path.read_text())

    def flatten(node) -> str:
        if isinstance(node, dict):
            return " ".join(flatten(k) + " " + flatten(v) for k, v in node.items())
        if isinstance(node, list):
            return " ".join(flatten(v) for v in node)
        if isinstance(node, bytes):
            return node.decode("utf-8", "replace")
        return str(node)

    return flatten(data)


def leaked(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


@pytest.mark.parametrize("kind", list(AUTHS))
def test_an_echoed_credential_is_redacted_in_errors_logs_and_the_cassette(etl, api, tmp_path, kind):
    path = write_mapping(tmp_path / "m.yaml", echo_mapping(AUTHS[kind]))
    cassette = tmp_path / "recorded.yaml"
    result = etl(
        "run",
        path,
        "--base-url",
        api.url,
        "--output",
        tmp_path / "out",
        "--config",
        f"user={USER}",
        "--config",
        f"secret={SECRET}",
        "--cassette",
        cassette,
        "--record-mode",
        "all",
        "-vv",
    )
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "HTTP 400" in text and '"echo"' in text and REDACTED in text  # the body is shown, redacted
    output = "\n".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert leaked(text) == [] and leaked(output) == []
    recorded = cassette_text(cassette)
    assert "/items" in recorded and REDACTED in recorded
    assert leaked(recorded) == []
    # The echo really carried the credential: the server saw it.
    seen = json.dumps([api.log[0].headers, api.log[0].query], ensure_ascii=False)
    assert any(form in seen for form in (SECRET, BASIC, *json_forms(SECRET)))


# -- vcrpy's own errors ----------------------------------------------------------------------------

EMPTY_CASSETTE = "interactions: []\nversion: 1\n"
CLIENT_SECRET = 'client-sécret"\\/+&=-55'


def test_a_token_request_missing_from_the_cassette_is_an_authentication_error(etl, tmp_path):
    cassette = tmp_path / "empty.yaml"
    cassette.write_text(EMPTY_CASSETTE)
    data = item_mapping(
        None,
        source={
            "auth": {
                "kind": "oauth2_client_credentials",
                "token_url": "/oauth/token",
                "client_id": "redaction-client",
                "client_secret": "{{ config.clientSecret }}",
            }
        },
        config={"clientSecret": {"secret": True}},
    )
    path = write_mapping(tmp_path / "m.yaml", data)
    result = etl(
        "--debug",  # a bug would print its traceback, vcrpy's message (the form body) with it
        "run",
        path,
        "--base-url",
        "http://127.0.0.1:9",
        "--output",
        tmp_path / "out",
        "--config",
        f"clientSecret={CLIENT_SECRET}",
        "--cassette",
        cassette,
        "--record-mode",
        "none",
    )
    text = result.stdout + result.stderr
    assert result.exit_code == 5, text
    assert text.strip().splitlines()[-1] == (
        "etl: error: authentication failed: POST http://127.0.0.1:9/oauth/token: the cassette holds no response "
        "for the token request (replay only); re-record it with --record-mode all, or check --config and --base-url"
    )
    assert "Traceback" not in text and "client_secret" not in text and "Can't overwrite" not in text
    assert [form for form in variants(CLIENT_SECRET) if form in text] == []


def test_a_request_missing_from_the_cassette_is_a_fetch_error_without_its_secret(etl, tmp_path):
    cassette = tmp_path / "empty.yaml"
    cassette.write_text(EMPTY_CASSETTE)
    data = item_mapping(None, source={"auth": AUTHS["api_key_query"]}, config={"secret": {"secret": True}})
    path = write_mapping(tmp_path / "m.yaml", data)
    result = etl(
        "--debug",
        "run",
        path,
        "--base-url",
        "http://127.0.0.1:9",
        "--output",
        tmp_path / "out",
        "--config",
        f"secret={SECRET}",
        "--cassette",
        cassette,
        "-vv",
    )
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "the cassette holds no response for this request" in text
    assert f"http://127.0.0.1:9/items?api_key={REDACTED}" in text
    assert "Traceback" not in text and "Can't overwrite" not in text
    assert leaked(text) == []
