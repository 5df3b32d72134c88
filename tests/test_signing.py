"""Signed requests (`sign` on a source) against local look-alikes that verify every signature as
a signing API does (tests/fakes/signed.py): the documented HMAC-SHA256 example, a base64
HMAC-SHA1 with a nonce, HTTP Signatures over a Date header with a base64 key, and a signature
in the query string. Wrong and stale signatures are refused; retries and redirect hops are
signed afresh; the key never shows while the signature is not treated as a secret; a failing
sign template is a step error naming its place. Then the filters and functions themselves,
on known test vectors, and the compile-time checks of `request`."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest
import requests
import yaml

from engine.http import clock as http_clock
from engine.lang.functions import EngineFunctions, format_time
from engine.lang.values import Scope, jmespath_value, template_value
from engine.pipeline.signing import Signer, SignSpec, canonical_query, request_variables
from engine.secrets import Redactor
from tests.fakes.paging import EXAMPLES, PagingApi, item_ids, item_mapping, partial_types, write_mapping
from tests.fakes.server import Response
from tests.fakes.signed import DateSignature, HmacHexSignature, NonceSignature, QuerySignature, SigV4Signature
from tests.graphtools import read_output
from tests.test_docs import FENCE, REFERENCE

ALL = list(range(1, 24))
SECRET = "example-signing-secret-4b1d"
KEY_ID = "example-key-id"
SECRET_BASE64 = "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVm"  # b"secret-key-bytes-0123456789abcdef"


@pytest.fixture
def api():
    with PagingApi("offset", 23) as server:
        yield server


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def all_text(result, out) -> str:
    parts = [result.stdout, result.stderr]
    if out.exists():
        parts += [p.read_text() for p in sorted(out.rglob("*")) if p.is_file()]
    return "\n".join(parts)


def assert_complete(result, out):
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(out)
    assert item_ids(output) == ALL
    assert partial_types(output) == []


def signed_mapping(tmp_path, sign: dict, *, config: dict | None = None, secret: str = "apiSecret", **kwargs):
    data = item_mapping(
        kwargs.pop("pagination", {"kind": "offset", "limit": 10, "total": "meta.total"}),
        config={secret: {"secret": True}, **(config or {})},
        source={"sign": sign, **kwargs.pop("source", {})},
        **kwargs,
    )
    return write_mapping(tmp_path / "m.yaml", data)


EXAMPLE_CONFIG = ("--config", f"apiKeyId={KEY_ID}", "--config", f"apiSecret={SECRET}")


# -- the documented example ----------------------------------------------------------------------


def test_the_example_signs_every_request(etl, api, tmp_path):
    api.auth = HmacHexSignature(SECRET)
    result = run(etl, EXAMPLES / "auth-hmac-signature.yaml", api, tmp_path / "out", *EXAMPLE_CONFIG, "-vv")
    assert_complete(result, tmp_path / "out")
    assert api.auth.refused == [] and len(api.auth.accepted) == 3
    # The query is sent in the canonical order it was signed in.
    assert [r.query for r in api.log] == [{"limit": "10", "offset": o} for o in ("0", "10", "20")]
    assert all(r.headers["x-api-key"] == KEY_ID for r in api.log)
    assert SECRET not in all_text(result, tmp_path / "out")


def test_a_wrong_secret_is_refused(etl, api, tmp_path):
    api.auth = HmacHexSignature(SECRET)
    config = ("--config", f"apiKeyId={KEY_ID}", "--config", "apiSecret=not-the-secret")
    result = run(etl, EXAMPLES / "auth-hmac-signature.yaml", api, tmp_path / "out", *config)
    assert result.exit_code == 5, result.stdout + result.stderr
    assert "HTTP 401 Unauthorized: invalid signature" in result.stderr
    assert api.auth.refused == ["invalid signature"]


def test_a_stale_timestamp_is_refused(etl, api, tmp_path, monkeypatch):
    api.auth = HmacHexSignature(SECRET)
    monkeypatch.setattr(http_clock, "wall", lambda: time.time() - 3600)
    result = run(etl, EXAMPLES / "auth-hmac-signature.yaml", api, tmp_path / "out", *EXAMPLE_CONFIG)
    assert result.exit_code == 5, result.stdout + result.stderr
    assert re.search(r"HTTP 401 Unauthorized: stale timestamp: 360\ds off the server's clock", result.stderr)


def test_a_post_body_is_signed_as_it_is_sent(etl, api, tmp_path):
    api.auth = HmacHexSignature(SECRET)
    request = {"method": "POST", "path": "/items", "body": {"filter": {"name": "item *", "note": "ünïcode"}}}
    mapping = write_mapping(
        tmp_path / "m.yaml",
        item_mapping(
            {"kind": "offset", "limit": 10, "total": "meta.total", "in": "body"},
            request=request,
            config={"apiKeyId": {}, "apiSecret": {"secret": True}},
            source={"sign": example_sign()},
        ),
    )
    result = run(etl, mapping, api, tmp_path / "out", *EXAMPLE_CONFIG)
    assert_complete(result, tmp_path / "out")
    assert len(api.auth.accepted) == 3 and all(r.body for r in api.auth.accepted)


def example_sign() -> dict:
    """The `sign` block of docs/examples/auth-hmac-signature.yaml."""
    return {
        "headers": {
            "X-Timestamp": "{{ request.time | format_time('epoch') }}",
            "X-Signature": "{{ [request.method, request.path, request.query, request.headers['x-timestamp'], "
            "request.body | sha256] | join('\\n') | hmac_sha256(config.apiSecret) }}",
        }
    }


# -- fresh on every attempt and every hop ----------------------------------------------------------


def documented_sign(marker: str) -> dict:
    """The ``sign`` block of the YAML example in docs/mapping-format.md whose text has ``marker``."""
    blocks = [m["body"] for m in FENCE.finditer(REFERENCE.read_text(encoding="utf-8")) if m["lang"] == "yaml"]
    (block,) = [b for b in blocks if marker in b and b.startswith("#") and "\nsign:" in b]
    return yaml.safe_load(block)["sign"]


def nonce_sign() -> dict:
    return documented_sign("hmac_sha1(config.apiSecret, 'base64')")


def test_a_base64_hmac_sha1_with_a_nonce_never_used_twice(etl, api, tmp_path):
    api.auth = NonceSignature(KEY_ID, SECRET)
    mapping = signed_mapping(tmp_path, nonce_sign(), config={"keyId": {}})
    result = run(etl, mapping, api, tmp_path / "out", "--config", f"keyId={KEY_ID}", "--config", f"apiSecret={SECRET}")
    assert_complete(result, tmp_path / "out")
    assert api.auth.refused == [] and len(api.auth.nonces) == 3


def test_a_retry_is_signed_again(etl, api, tmp_path, monkeypatch):
    api.auth = NonceSignature(KEY_ID, SECRET)
    ticks = iter(range(10**6))
    monkeypatch.setattr(http_clock, "wall", lambda: time.time() + next(ticks))  # a second per signing
    api.fail_request({"offset": "10"}, Response(503, {"message": "busy"}, headers={"Retry-After": "0"}))
    mapping = signed_mapping(tmp_path, nonce_sign(), config={"keyId": {}})
    result = run(etl, mapping, api, tmp_path / "out", "--config", f"keyId={KEY_ID}", "--config", f"apiSecret={SECRET}")
    assert_complete(result, tmp_path / "out")
    first, retry = [r for r in api.log if r.query.get("offset") == "10"]
    assert first.headers["x-nonce"] != retry.headers["x-nonce"]
    assert int(retry.headers["x-request-time"]) > int(first.headers["x-request-time"])
    assert retry in api.auth.accepted


def test_each_redirect_hop_is_signed_for_its_own_path(etl, api, tmp_path):
    api.auth = HmacHexSignature(SECRET)
    api.route("GET", "/old/items", lambda request: Response(307, headers={"Location": "/items?offset=0&limit=10"}))
    mapping = signed_mapping(tmp_path, example_sign(), request={"path": "/old/items"}, pagination={"kind": "none"})
    result = run(etl, mapping, api, tmp_path / "out", "--config", f"apiSecret={SECRET}")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [r.path for r in api.log] == ["/old/items", "/items"]
    assert api.auth.accepted == [api.log[1]]


# -- other shapes ------------------------------------------------------------------------------------


def test_http_signatures_over_a_date_header_with_a_base64_key(etl, api, tmp_path):
    api.auth = DateSignature(KEY_ID, SECRET_BASE64)
    sign = documented_sign("(request-target) host date")
    mapping = signed_mapping(tmp_path, sign, config={"keyId": {}})
    config = ("--config", f"keyId={KEY_ID}", "--config", f"apiSecret={SECRET_BASE64}")
    result = run(etl, mapping, api, tmp_path / "out", *config, "-vv")
    assert_complete(result, tmp_path / "out")
    assert api.auth.refused == [] and len(api.auth.accepted) == 3
    assert api.log[0].headers["date"].endswith(" GMT")
    assert SECRET_BASE64 not in all_text(result, tmp_path / "out")


def test_a_signature_in_the_query_string(etl, api, tmp_path):
    api.auth = QuerySignature(SECRET)
    sign = documented_sign("signature: ")
    result = run(etl, signed_mapping(tmp_path, sign), api, tmp_path / "out", "--config", f"apiSecret={SECRET}")
    assert_complete(result, tmp_path / "out")
    assert [list(r.query) for r in api.log] == [["limit", "offset", "timestamp", "signature"]] * 3


def test_aws_signature_version_4(etl, api, tmp_path):
    api.auth = SigV4Signature("AKIDEXAMPLE", SECRET, "eu-west-1", "execute-api")
    config = {name: {} for name in ("accessKey", "region", "service")}
    mapping = signed_mapping(
        tmp_path,
        documented_sign("AWS4-HMAC-SHA256"),
        config=config,
        secret="secretKey",
        request={"path": "/items", "params": {"filter": "name eq 'a b'"}},
    )
    values = {"accessKey": "AKIDEXAMPLE", "region": "eu-west-1", "service": "execute-api", "secretKey": SECRET}
    options = [arg for name, value in values.items() for arg in ("--config", f"{name}={value}")]
    result = run(etl, mapping, api, tmp_path / "out", *options)
    assert_complete(result, tmp_path / "out")
    assert api.auth.refused == [] and len(api.auth.accepted) == 3
    assert api.log[0].query == {"filter": "name eq 'a b'", "limit": "10", "offset": "0"}


# -- secrets and errors ---------------------------------------------------------------------------------


def test_the_signature_is_recorded_and_the_key_is_not(etl, api, tmp_path):
    api.auth = HmacHexSignature(SECRET)
    cassette = tmp_path / "signed.yaml"
    result = run(
        etl,
        EXAMPLES / "auth-hmac-signature.yaml",
        api,
        tmp_path / "out",
        *EXAMPLE_CONFIG,
        "--cassette",
        cassette,
        "--record-mode",
        "once",
    )
    assert_complete(result, tmp_path / "out")
    recorded = cassette.read_text()
    assert SECRET not in recorded
    for request in api.log:
        assert request.headers["x-signature"] in recorded  # not a secret: recorded as sent


def test_a_failing_sign_template_is_a_step_error_that_never_shows_the_key(etl, api, tmp_path):
    sign = {"headers": {"X-Signature": "{{ request.headers[config.apiSecret] }}"}}
    result = run(etl, signed_mapping(tmp_path, sign), api, tmp_path / "out", "--config", f"apiSecret={SECRET}")
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert (
        "cannot sign the request: sources.api.sign.headers.X-Signature "
        "({{ request.headers[config.apiSecret] }}) failed: 'dict object' has no attribute '[REDACTED]'"
    ) in text
    assert SECRET not in all_text(result, tmp_path / "out")
    assert api.log == []  # nothing was sent


@pytest.mark.parametrize(
    "template, reason",
    [
        ("{{ request.body | hmac_sha256(config.apiSecret, 'bytes') }}", "the template gives bytes: encode them"),
        ("{{ none }}", "it gives null"),
        ("{{ config.apiSecret | hmac_sha256(request.body) }}", "hmac_sha256(): the key is empty"),
        ("{{ 'x' | hmac_sha256(config.apiSecret, key_encoding='hex') }}", "the key is not valid hex"),
        ("a{{ '\\n' }}b", "a line break"),
    ],
)
def test_sign_template_failures_say_why(etl, api, tmp_path, template, reason):
    sign = {"headers": {"X-Signature": template}}
    result = run(etl, signed_mapping(tmp_path, sign), api, tmp_path / "out", "--config", f"apiSecret={SECRET}")
    assert result.exit_code == 1
    assert "cannot sign the request: sources.api.sign.headers.X-Signature" in result.stdout
    assert reason in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_a_request_to_another_origin_is_not_signed(etl, api, tmp_path):
    # cross_origin: anonymous sends it without the source's credentials, and a signature is one.
    with PagingApi("none", 3) as other:
        mapping = signed_mapping(
            tmp_path,
            example_sign(),
            request={"path": f"{other.url}/items"},
            pagination={"kind": "none"},
            source={"cross_origin": "anonymous"},
        )
        result = run(etl, mapping, api, tmp_path / "out", "--config", f"apiSecret={SECRET}")
        assert result.exit_code == 0, result.stdout + result.stderr
        assert api.log == [] and len(other.log) == 1
        assert not {"x-signature", "x-timestamp"} & set(other.log[0].headers)


# -- what templates see --------------------------------------------------------------------------------

SIGN = {"variables": frozenset({"config", "request"}), "config_fields": frozenset({"secret"})}


def test_the_request_variable():
    seen = request_variables(
        "post",
        "https://user@api.example.com:8443/v1/a%20b?a=x%20y&b=%2F",
        {"Content-Type": "application/json", "X-Api-Key": "k"},
        '{"a": 1}',
        (1704164645123, "n0nce", "u-u-i-d"),
    )
    assert seen == {
        "method": "POST",
        "url": "https://user@api.example.com:8443/v1/a%20b?a=x%20y&b=%2F",
        "scheme": "https",
        "host": "api.example.com:8443",
        "path": "/v1/a%20b",
        "query": "a=x%20y&b=%2F",
        "target": "/v1/a%20b?a=x%20y&b=%2F",
        "params": [["a", "x y"], ["b", "/"]],
        "headers": {"content-type": "application/json", "x-api-key": "k"},
        "body": '{"a": 1}',
        "content_type": "application/json",
        "time": 1704164645123,
        "nonce": "n0nce",
        "uuid": "u-u-i-d",
    }


def test_canonical_query():
    assert canonical_query([("b", "2"), ("a", "x y"), ("a", "!"), ("c~", "é/+")]) == "a=%21&a=x%20y&b=2&c~=%C3%A9%2F%2B"
    assert canonical_query([]) == ""


def test_a_signing_shares_one_time_and_rewrites_the_query(monkeypatch):
    monkeypatch.setattr(http_clock, "wall", lambda: 1704164645.5)
    spec = SignSpec(
        params=(("ts", template_value("{{ request.time | format_time('epoch') }}", **SIGN)),),
        headers=(
            ("X-Date", template_value("{{ request.time | format_time('compact') }}", **SIGN)),
            ("X-Seen", template_value("{{ request.query }}|{{ request.headers['x-date'] }}", **SIGN)),
        ),
    )
    prepared = requests.Request("GET", "https://h/p?z=1&ts=old&a=b+c").prepare()
    Signer("api", spec, {}, None, Redactor()).sign(prepared)
    assert prepared.url == "https://h/p?a=b%20c&z=1&ts=1704164645"
    assert prepared.headers["X-Date"] == "20240102T030405Z"
    assert prepared.headers["X-Seen"] == "a=b%20c&z=1&ts=1704164645|20240102T030405Z"


# -- the filters and functions, on known vectors ---------------------------------------------------------


def render(text: str, **variables) -> object:
    value = template_value(text, variables=frozenset({"config", *variables}), config_fields=frozenset())
    return value.evaluate(Scope({}, {"config": {}, **variables}, None))


@pytest.mark.parametrize(
    "template, expected",
    [
        # RFC 4231 test case 2; RFC 2202 for SHA-1
        (
            "{{ 'what do ya want for nothing?' | hmac_sha256('Jefe') }}",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        ("{{ 'what do ya want for nothing?' | hmac_sha1('Jefe') }}", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (
            "{{ 'what do ya want for nothing?' | hmac_sha512('Jefe') }}",
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
        ("{{ 'what do ya want for nothing?' | hmac_sha1('Jefe', 'base64') }}", "7/zfauXrL6LSdBbV8YTfnCWafHk="),
        ("{{ 'x' | hmac_sha256('Jefe', 'base64url') | length }}", 43),  # 32 bytes, unpadded
        ("{{ 'abc' | sha256 }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("{{ 'abc' | sha1 }}", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("{{ '' | md5 }}", "d41d8cd98f00b204e9800998ecf8427e"),
        ("{{ '' | sha256('base64') }}", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
        ("{{ 'hello?' | base64_encode }}", "aGVsbG8/"),
        ("{{ 'hello?' | base64_encode(urlsafe=true) }}", "aGVsbG8_"),
        ("{{ 'hi' | base64_encode(pad=false) }}", "aGk"),
        ("{{ 'aGVsbG8_' | base64_decode }}", "hello?"),
        ("{{ 'aGk' | base64_decode }}", "hi"),
        ("{{ 'a b/c~é' | percent_encode }}", "a%20b%2Fc~%C3%A9"),
        ("{{ 'a b/c' | percent_encode('/') }}", "a%20b/c"),
        ("{{ 1704164645123 | format_time('epoch') }}", 1704164645),
        ("{{ 1704164645123 | format_time('epoch_ms') }}", 1704164645123),
        ("{{ 1704164645123 | format_time }}", "2024-01-02T03:04:05Z"),
        ("{{ 1704164645123 | format_time('iso8601_ms') }}", "2024-01-02T03:04:05.123Z"),
        ("{{ 1704164645123 | format_time('http_date') }}", "Tue, 02 Jan 2024 03:04:05 GMT"),
        ("{{ 1704164645123 | format_time('compact') }}", "20240102T030405Z"),
        ("{{ 1704164645123 | format_time('date') }}", "2024-01-02"),
        ("{{ 1704164645123 | format_time('compact_date') }}", "20240102"),
        ("{{ '2024-01-02T04:04:05+01:00' | format_time('%H:%M on %d/%m') }}", "03:04 on 02/01"),
    ],
)
def test_filters(template, expected):
    assert render(template) == expected


def test_hmac_keys_chain_as_aws_sigv4_derives_its_signing_key():
    # The example of AWS's "Deriving the signing key" documentation.
    template = (
        "{% set k = '20120215' | hmac_sha256('AWS4' ~ config.secret, 'bytes') %}"
        "{% set k = 'us-east-1' | hmac_sha256(k, 'bytes') %}{% set k = 'iam' | hmac_sha256(k, 'bytes') %}"
        "{{ 'aws4_request' | hmac_sha256(k) }}"
    )
    value = template_value(template, **SIGN)
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    result = value.evaluate(Scope({}, {"config": {"secret": secret}, "request": {}}, None))
    assert result == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_hmac_key_encodings():
    key = b"\x00\x01binary\xff"
    expected = hmac.new(key, b"msg", hashlib.sha256).hexdigest()
    assert render(f"{{{{ 'msg' | hmac_sha256('{key.hex()}', key_encoding='hex') }}}}") == expected
    assert render("{{ 'msg' | hmac_sha256('AAFiaW5hcnn/', key_encoding='base64') }}") == expected


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{ 'x' | hmac_sha256(none) }}", "hmac_sha256(): the key is null (is its config field set?)"),
        ("{{ 'x' | hmac_sha256('k', 'octal') }}", "unknown encoding 'octal'"),
        ("{{ 'x' | hmac_sha256('k', key_encoding='rot13') }}", "unknown key_encoding 'rot13'"),
        ("{{ 'x' | sha256('hexx') }}", "sha256(): unknown encoding 'hexx'"),
        ("{{ '%%%' | base64_decode }}", "base64_decode(): the value is not valid base64"),
        ("{{ '//79' | base64_decode }}", "not UTF-8 text; use base64_decode('bytes')"),
        ("{{ 1 | format_time('fortnight') }}", "format_time(): unknown format 'fortnight'"),
        ("{{ 'garbage' | format_time }}", "cannot read a date from 'garbage'"),
        ("x{{ 'a' | sha256('bytes') }}", "a template expression gives bytes"),
        ("{{ {} | sha256 }}", "sha256(): the value must be text or bytes, not dict"),
    ],
)
def test_filter_errors(template, message):
    with pytest.raises(ValueError, match=None) as caught:
        render(template)
    assert message in str(caught.value)


def test_a_bad_key_is_never_shown():
    with pytest.raises(ValueError) as caught:
        render("{{ 'x' | hmac_sha256('not-base64-secret!', key_encoding='base64') }}")
    assert "not-base64-secret" not in str(caught.value)


def test_null_stays_null():
    for name in ("sha256", "md5", "base64_encode", "base64_decode", "percent_encode", "format_time"):
        assert render(f"{{{{ none | {name} }}}}") is None
    assert render("{{ none | hmac_sha256('key') }}") is None


def test_jmespath_functions():
    functions = EngineFunctions()

    def search(expression: str, data: object = None) -> object:
        return jmespath_value(expression).evaluate(Scope(data, {}, type("O", (), {"custom_functions": functions})()))

    assert search("sha256(name)", {"name": "abc"}) == hashlib.sha256(b"abc").hexdigest()
    assert search("sha1('abc')") == hashlib.sha1(b"abc").hexdigest()
    assert search("md5(missing)", {}) is None
    assert search("base64_encode('hi')") == "aGk="
    assert search("base64_decode('aGk=')") == "hi"
    assert search("percent_encode('a b')") == "a%20b"
    assert search("format_time(`1704164645123`, 'http_date')") == "Tue, 02 Jan 2024 03:04:05 GMT"
    assert search("format_time(updated, 'compact')", {"updated": "2024-01-02T03:04:05Z"}) == "20240102T030405Z"
    assert format_time(None) is None


# -- compile-time checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, message",
    [
        (
            {"sign": {"headers": {"X-Sig": "{{ request.methd }}"}}},
            "sources.api.sign.headers.X-Sig: unknown request field 'methd' (did you mean 'method'?)",
        ),
        (
            {"headers": {"X-Sig": "{{ request.method }}"}},
            "sources.api.headers.X-Sig: 'request' is not available here: only a source's sign templates see "
            "the request being signed",
        ),
        (
            {"sign": {"headers": {"X-Sig": "{{ request.body | hmac_sha265(config.apiSecret) }}"}}},
            "unknown filter 'hmac_sha265' (did you mean 'hmac_sha256'?)",
        ),
        ({"sign": {"headers": {"X-Sig": "{{ config.apiSecrt }}"}}}, "unknown config field 'apiSecrt'"),
        ({"sign": {"header": {"X-Sig": "x"}}}, "sources.api.sign.header: unknown key 'header'"),
        ({"sign": {}}, "sources.api.sign: {} should be non-empty"),
        ({"sign": {"headers": {"X Sig": "x"}}}, "sources.api.sign.headers: 'X Sig' is not valid"),
    ],
)
def test_sign_is_checked_when_the_mapping_is_validated(etl, tmp_path, source, message):
    data = item_mapping(None, config={"apiSecret": {"secret": True}}, source=source)
    result = etl("validate", write_mapping(tmp_path / "m.yaml", data))
    assert result.exit_code == 3
    assert message in result.stderr


def test_request_in_a_step_template_is_refused(etl, tmp_path):
    data = item_mapping(None, request={"path": "/items", "headers": {"X-M": "{{ request.method }}"}})
    result = etl("validate", write_mapping(tmp_path / "m.yaml", data))
    assert result.exit_code == 3
    assert "'request' is not available here" in result.stderr
