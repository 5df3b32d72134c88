"""Origins: where a source's credentials may go.

An origin is a URL's scheme, host and port (RFC 6454): ``https://api.example.com`` and
``https://api.example.com:443/v2/items`` share one; ``http://api.example.com``,
``https://cdn.example.com`` and ``https://api.example.com:8443`` are three others. A
source's credentials are only sent to the origin of its base URL and to the origins its
mapping allows (``allowed_origins``); :func:`origin_of` is what both sides are compared by.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str  # lower case: http | https
    host: str  # lower case, without brackets for IPv6
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


def origin_of(url: str) -> Origin | None:
    """The origin of an http(s) URL with a host; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    with contextlib.suppress(UnicodeError):
        host = host.encode("idna").decode("ascii")  # as it is sent: an IDN host in punycode
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a base URL (or a token URL), or None when it can: it must be
    an http:// or https:// URL with a host (and a valid port)."""
    if not isinstance(url, str) or not url.strip():
        return "it is empty"
    if url != url.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"it cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return f"its scheme is {scheme + '://' if scheme else 'missing'}, not http:// or https://"
    if not parts.hostname:
        return "it has no host"
    try:
        parts.port  # noqa: B018 - urlsplit checks the port when it is read
    except ValueError:
        return "its port is not a number from 0 to 65535"
    try:
        requests.Request("GET", url).prepare()  # what requests itself would refuse to send
    except requests.RequestException as exc:
        return f"it is not a valid URL ({type(exc).__name__})"
    return None
