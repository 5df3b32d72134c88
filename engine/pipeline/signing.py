"""Signed requests: a source's ``sign`` templates, evaluated on each request about to be sent.

Some APIs authenticate every request with a signature: an HMAC, keyed with a secret, over
the request's method, path, query, a timestamp and a digest of the body. A source declares
how with ``sign`` (``docs/mapping-format.md``, "sign")::

    sign:
      headers:
        X-Timestamp: "{{ request.time | format_time('epoch') }}"
        X-Signature: "{{ [request.method, request.path, request.query,
                          request.time | format_time('epoch'), request.body | sha256]
                         | join('\\n') | hmac_sha256(config.apiSecret) }}"

:meth:`Signer.sign` runs last, on the prepared request (``fetch.py`` calls it before every
attempt and for every redirect hop on the source's origins, so a timestamp is always
fresh): it puts the query in canonical order, then renders the ``sign.params`` (appended
to the query, in the order written) and the ``sign.headers``, in that order. Each template
sees ``request`` as it stands then (:func:`request_variables`) - one ``time``, ``nonce``
and ``uuid`` per signing - and ``config``.

A signature is not a secret (it is worth nothing for another request); its key is a secret
config value, redacted as every secret is. A template that fails is a :class:`SigningError`
naming its place, redacted: it fails the step like a failed request.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import requests

from ..errors import SigningError
from ..http import clock
from ..lang.template_checks import SIGNED_REQUEST_FIELDS
from ..lang.values import Scope, Value
from ..secrets import Redactor
from .build import describe

if TYPE_CHECKING:
    from .plan import Source

# The clock of signatures is clock.wall(): the real time (not the run's clock, which --as-of sets).


@dataclass(frozen=True)
class SignSpec:
    """A source's compiled ``sign``: query parameters and headers, each a template."""

    params: tuple[tuple[str, Value], ...] = ()
    headers: tuple[tuple[str, Value], ...] = ()


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    """``name=value`` pairs percent-encoded as RFC 3986 says (``%20`` for a space, only
    ``A-Z a-z 0-9 - _ . ~`` left as they are), sorted by name then value, joined by ``&``."""
    encoded = sorted((quote(name, safe=""), quote(value, safe="")) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _encoded_pair(name: str, value: str) -> str:
    return f"{quote(name, safe='')}={quote(value, safe='')}"


def body_text(body: Any) -> str:
    """The serialized body as text ("" when there is none)."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise SigningError("cannot sign the request: its body is not UTF-8 text") from None
    if isinstance(body, str):
        return body
    raise SigningError(f"cannot sign the request: its body is a {type(body).__name__}, not text")


def request_variables(
    method: str, url: str, headers: Mapping[str, str], body: str, moment: tuple[int, str, str]
) -> dict[str, Any]:
    """What a sign template sees as ``request``: the request as it will be sent."""
    parts = urlsplit(url)
    path = parts.path or "/"
    time_ms, nonce, unique = moment
    variables = {
        "method": method.upper(),
        "url": url,
        "scheme": parts.scheme,
        "host": parts.netloc.rpartition("@")[2],
        "path": path,
        "query": parts.query,
        "target": f"{path}?{parts.query}" if parts.query else path,
        "params": [list(pair) for pair in parse_qsl(parts.query, keep_blank_values=True)],
        "headers": {name.lower(): value for name, value in headers.items()},
        "body": body,
        "content_type": next((v for n, v in headers.items() if n.lower() == "content-type"), ""),
        "time": time_ms,
        "nonce": nonce,
        "uuid": unique,
    }
    assert variables.keys() == SIGNED_REQUEST_FIELDS  # what templates are checked against
    return variables


class Signer:
    """Signs the requests of one source (thread-safe: a signing keeps its state to itself)."""

    def __init__(self, source: str, spec: SignSpec, config: Mapping[str, Any], options: Any, redactor: Redactor):
        self.source = source
        self.spec = spec
        self.config = config
        self.options = options  # JMESPath options (sign values are templates; kept for the Scope)
        self.redactor = redactor
        self.param_names = frozenset(name for name, _ in spec.params)

    @classmethod
    def for_source(cls, source: Source, scope: Scope, redactor: Redactor) -> Signer | None:
        """The signer of a source with ``sign``, on the config of ``scope``; None without."""
        if source.sign is None:
            return None
        return cls(source.name, source.sign, scope.variables["config"], scope.options, redactor)

    def sign(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        """Put the query in canonical order, then add the signed params and headers."""
        method = str(prepared.method or "GET")
        parts = urlsplit(str(prepared.url))
        kept = [(n, v) for n, v in parse_qsl(parts.query, keep_blank_values=True) if n not in self.param_names]
        query = canonical_query(kept)
        body = body_text(prepared.body)
        moment = (int(clock.wall() * 1000), secrets.token_hex(16), str(uuid.uuid4()))
        headers = {name: _text(value) for name, value in prepared.headers.items()}
        for name, value in self.spec.params:
            url = urlunsplit(parts._replace(query=query))
            text = self.render(value, request_variables(method, url, headers, body, moment), f"params.{name}")
            query = "&".join(filter(None, (query, _encoded_pair(name, text))))
        prepared.url = url = urlunsplit(parts._replace(query=query))
        for name, value in self.spec.headers:
            text = self.render(value, request_variables(method, url, headers, body, moment), f"headers.{name}")
            headers = {n: v for n, v in headers.items() if n.lower() != name.lower()}
            headers[name] = text
            prepared.headers[name] = text
        return prepared

    def render(self, value: Value, request: dict[str, Any], where: str) -> str:
        """One sign template as header or parameter text; a failure is a :class:`SigningError`."""
        place = f"sources.{self.source}.sign.{where}"
        try:
            result = value.evaluate(Scope({}, {"config": self.config, "request": request}, self.options))
        except Exception as exc:  # an undefined name, a bad key, a type error of an operator...
            raise self.error(place, value, describe(exc)) from None
        if result is None:
            raise self.error(place, value, "it gives null")
        if isinstance(result, (dict, list, tuple)):
            raise self.error(
                place, value, f"it gives {'an object' if isinstance(result, dict) else 'a list'}, not text"
            )
        text = ("true" if result else "false") if isinstance(result, bool) else str(result)
        if "\r" in text or "\n" in text:
            raise self.error(place, value, "it gives text with a line break, which no header or parameter may hold")
        return text

    def error(self, place: str, value: Value, reason: str) -> SigningError:
        source = " ".join(str(value.source).split())
        shown = source if len(source) <= 120 else source[:117] + "..."
        return SigningError(self.redactor(f"cannot sign the request: {place} ({shown}) failed: {reason}"))


def _text(value: str | bytes) -> str:
    """A header value as text (``requests`` keeps bytes as they were given)."""
    return value if isinstance(value, str) else value.decode("latin-1")
