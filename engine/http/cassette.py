"""Record and replay HTTP with vcrpy, with every secret scrubbed before it reaches disk.

``etl run --cassette FILE --record-mode none`` replays only (no network at all);
``once`` records when the file does not exist yet; ``all`` re-records against the live
API. Recording is sequential (vcrpy is not thread-safe), and the same scrubbing is
applied to requests while replaying, so a scrubbed cassette matches a live request.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FetchError
from ..secrets import REDACTED, Redactor

RECORD_MODES = ("none", "once", "all")

# Headers that carry credentials or session state in any API; never recorded verbatim.
ALWAYS_SCRUBBED_REQUEST_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key")
ALWAYS_SCRUBBED_RESPONSE_HEADERS = ("set-cookie",)
# Credentials an API hands out in a response body (OAuth2 token endpoints), scrubbed by
# name: they are recorded before the engine has read them.
TOKEN_FIELDS = re.compile(rb'"(access_token|refresh_token|id_token)"\s*:\s*"[^"]*"')


def scrub_request(redactor: Redactor):
    def before_record_request(request):
        request.uri = redactor(request.uri)
        for name in list(request.headers):
            value = request.headers[name]
            if name.lower() in ALWAYS_SCRUBBED_REQUEST_HEADERS:
                request.headers[name] = REDACTED
            elif isinstance(value, str):
                request.headers[name] = redactor(value)
        if isinstance(request.body, bytes):
            request.body = redactor.bytes(request.body)
        return request

    return before_record_request


def scrub_response(redactor: Redactor):
    def before_record_response(response):
        response = copy.deepcopy(response)
        headers = response.get("headers", {})
        for name in list(headers):
            if name.lower() in ALWAYS_SCRUBBED_RESPONSE_HEADERS:
                headers[name] = [REDACTED]
            else:
                headers[name] = [redactor(v) if isinstance(v, str) else v for v in headers[name]]
        body = response.get("body", {})
        content = body.get("string")
        if isinstance(content, (bytes, str)):
            raw = content.encode() if isinstance(content, str) else content
            raw = TOKEN_FIELDS.sub(rb'"\1": "[REDACTED]"', redactor.bytes(raw))
            body["string"] = raw.decode() if isinstance(content, str) else raw
        return response

    return before_record_response


def make_vcr(redactor: Redactor, record_mode: str):
    import vcr  # loaded only when a cassette is used: it costs memory and import time

    return vcr.VCR(
        record_mode=record_mode,
        match_on=("method", "scheme", "host", "port", "path", "query", "body"),
        before_record_request=scrub_request(redactor),
        before_record_response=scrub_response(redactor),
        decode_compressed_response=True,
        record_on_exception=True,  # a failed run is worth replaying too (a bad key, say)
        serializer="yaml",
    )


@contextmanager
def cassette(path: Path, record_mode: str, redactor: Redactor) -> Iterator[None]:
    """Route every HTTP request of the block through the cassette at ``path``."""
    if record_mode == "none" and not path.is_file():
        raise FetchError(
            f"cassette {path} does not exist (record mode 'none' only replays; use --record-mode once to record it)"
        )
    with make_vcr(redactor, record_mode).use_cassette(str(path)):
        yield


def cassette_miss(exc: Exception) -> bool:
    """A replayed cassette had no answer (vcrpy is only imported when a cassette is used)."""
    errors = sys.modules.get("vcr.errors")
    return errors is not None and isinstance(exc, errors.CannotOverwriteExistingCassetteException)
