""".env files are read with python-dotenv: the classic forms (quotes, export, comments, escapes,
empty values, multiline values) give the value a shell would, ${VAR} is not expanded, and the
precedence stays --config, environment, .env, the mapping's offline config, the default. A
quoted value with a trailing comment authenticates (it used to keep its quotes)."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.pipeline.compile import compile_file
from engine.pipeline.config import read_dotenv, resolve_config
from engine.tools.sync.settings import resolve_credentials
from tests.fakes.paging import EXAMPLES, PagingApi, require_bearer
from tests.graphtools import read_output

TOKEN = "tok-3f9a8b7c6d5e4f3a2b1c"


def dotenv(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / ".env"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    "line, value",
    [
        ('KEY="value"  # the API key', "value"),
        ("KEY='value'  # the API key", "value"),
        ("KEY=value  # the API key", "value"),
        ("KEY=value#not-a-comment", "value#not-a-comment"),
        ("KEY='single # not a comment'", "single # not a comment"),
        ("export KEY=value", "value"),
        ('export KEY="value"', "value"),
        ("  KEY = value  ", "value"),
        ('KEY="say \\"hi\\"\\tthen\\\\go"', 'say "hi"\tthen\\go'),
        ("KEY='no \\t escapes here'", "no \\t escapes here"),
        ('KEY="line 1\\nline 2"', "line 1\nline 2"),
        ("KEY=", ""),
        ('KEY=""', ""),
        ("KEY=${HOME}/x", "${HOME}/x"),
        ('KEY="${HOME}/x"', "${HOME}/x"),
        ("KEY=p@$$w0rd", "p@$$w0rd"),
        ("KEY=a=b=c", "a=b=c"),
    ],
)
def test_a_line_gives_the_value_a_shell_would(tmp_path, line, value):
    assert read_dotenv(dotenv(tmp_path, f"# a comment\n\n{line}\nOTHER=1\n")) == {"KEY": value, "OTHER": "1"}


def test_multiline_quoted_values_and_line_endings(tmp_path):
    text = 'CERT="-----BEGIN-----\nabc\n-----END-----"\r\nNEXT=after\r\n'
    assert read_dotenv(dotenv(tmp_path, text)) == {"CERT": "-----BEGIN-----\nabc\n-----END-----", "NEXT": "after"}


def test_a_key_without_a_value_is_left_out(tmp_path):
    assert read_dotenv(dotenv(tmp_path, "ALONE\nKEY=1\n")) == {"KEY": "1"}


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path):
    assert read_dotenv(dotenv(tmp_path, "KEY=1\n", encoding="utf-8-sig")) == {"KEY": "1"}


def test_a_line_that_cannot_be_parsed_is_warned_about_and_the_rest_is_read(etl, tmp_path, monkeypatch):
    monkeypatch.delenv("EXAMPLE_API_TOKEN", raising=False)
    path = dotenv(tmp_path, f'A=1\nthis is not an assignment\nB="unclosed\nEXAMPLE_API_TOKEN={TOKEN}\n')
    assert read_dotenv(path) == {"A": "1", "EXAMPLE_API_TOKEN": TOKEN}
    with PagingApi("offset", 23) as api:
        api.auth = require_bearer(TOKEN)
        result = etl("run", EXAMPLES / "auth-bearer.yaml", "--base-url", api.url, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "etl: WARNING: .env:2: not a KEY=VALUE line (an unclosed quote?); ignored",
        "etl: WARNING: .env:3: not a KEY=VALUE line (an unclosed quote?); ignored",
    ]


def test_no_file_no_values(tmp_path):
    assert read_dotenv(tmp_path / ".env") == {}
    (tmp_path / "dir.env").mkdir()
    assert read_dotenv(tmp_path / "dir.env") == {}


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = dotenv(tmp_path, "KEY=caf\xe9\n", encoding="latin-1")
    with pytest.raises(ConfigError, match=r"\.env is not UTF-8 text: invalid continuation byte"):
        read_dotenv(path)


# -- precedence ------------------------------------------------------------------------------------

MAPPING = """\
version: 1
integration: {id: example, name: Example}
config:
  region: {env: EXAMPLE_REGION, default: eu}
  pageSize: {env: EXAMPLE_PAGE_SIZE, type: integer, default: 10}
sources:
  api: {base_url: "https://api.example.invalid"}
steps:
  - id: account
    name: Account
    entities:
      - {resource: Account, type: example_account, class: Account, key: "example_account:1", properties: {name: "'x'"}}
"""


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return compile_file(path)


def resolve(plan, tmp_path, overrides=None, environ=None, defaults=None):
    return dict(
        resolve_config(plan, overrides or {}, environ=environ or {}, dotenv=tmp_path / ".env", defaults=defaults).values
    )


def test_precedence_config_then_environment_then_dotenv_then_offline_config_then_default(plan, tmp_path):
    dotenv(tmp_path, 'EXAMPLE_REGION="us"  # from .env\nEXAMPLE_PAGE_SIZE=50\n')
    assert resolve(plan, tmp_path) == {"region": "us", "pageSize": 50}
    assert resolve(plan, tmp_path, environ={"EXAMPLE_REGION": "ap"}) == {"region": "ap", "pageSize": 50}
    given = resolve(plan, tmp_path, overrides={"region": "ca"}, environ={"EXAMPLE_REGION": "ap"})
    assert given == {"region": "ca", "pageSize": 50}
    # An empty environment variable or .env value counts as not set.
    dotenv(tmp_path, "EXAMPLE_REGION=\n")
    assert resolve(plan, tmp_path, environ={"EXAMPLE_REGION": ""}) == {"region": "eu", "pageSize": 10}
    assert resolve(plan, tmp_path, defaults={"region": "offline"}) == {"region": "offline", "pageSize": 10}


def test_dotenv_values_are_not_expanded_from_the_environment(plan, tmp_path):
    dotenv(tmp_path, "EXAMPLE_REGION=${OTHER}\n")
    assert resolve(plan, tmp_path, environ={"OTHER": "expanded"})["region"] == "${OTHER}"


# -- the commands that read .env -------------------------------------------------------------------


def test_a_quoted_token_with_a_comment_authenticates(etl, tmp_path, monkeypatch):
    monkeypatch.delenv("EXAMPLE_API_TOKEN", raising=False)
    dotenv(tmp_path, f'export EXAMPLE_API_TOKEN="{TOKEN}"  # read-only token\n')
    with PagingApi("offset", 23) as api:
        api.auth = require_bearer(TOKEN)
        result = etl("run", EXAMPLES / "auth-bearer.yaml", "--base-url", api.url, "--output", tmp_path / "out")
        sent = {r.headers["authorization"] for r in api.log}
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sent == {f"Bearer {TOKEN}"}
    assert len([e for e in read_output(tmp_path / "out")["entities"] if e["_type"] == "example_item"]) == 23


def test_sync_reads_its_credentials_from_dotenv_the_same_way(tmp_path):
    path = dotenv(tmp_path, 'JUPITERONE_ACCOUNT=\'acct-1\'  # prod\nexport JUPITERONE_API_KEY="key \\"quoted\\""\n')
    assert resolve_credentials(None, None, path) == ("acct-1", 'key "quoted"')
    assert resolve_credentials("given", "given-key-0123456789", path) == ("given", "given-key-0123456789")
