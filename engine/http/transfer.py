"""One HTTP exchange, bounded in time and size, with redirects followed by the caller's rules.

A hostile or broken server must not hang a run or exhaust its memory:

* **A deadline per attempt.** :func:`exchange` gives an attempt ``timeout`` seconds in all,
  from connecting to the last byte of the body, redirects included - not only per read, so
  a server that trickles a byte at a time cannot hold a run. The connection's socket checks
  the deadline before every read and never waits longer than what is left of it (status
  line and headers included); the body is streamed and the deadline checked between its
  chunks too. Running out is a :class:`DeadlineExceeded`, a ``requests`` timeout: the
  retry policy retries it like any other timeout.
* **A size limit.** The body is counted as it is decoded (gzip, deflate: urllib3 inflates at
  most one chunk at a time), and a body larger than ``max_bytes`` is a
  :class:`ResponseTooLarge` - a decompression bomb is refused, it does not end in a
  MemoryError.
* **Redirects are the caller's.** ``requests`` follows redirects keeping every header but
  ``Authorization``; here none is followed blindly: the caller's ``redirect`` function gets
  each target and builds the next request (or refuses it), so a source's credentials can
  be kept to its own origin (``pipeline/fetch.py``, ``pipeline/auth.py``). At most
  :data:`MAX_REDIRECTS` hops.

The socket deadline is installed by the sessions :func:`engine.http.session.new_session`
makes (:class:`DeadlineAdapter`); it applies only while :func:`exchange` sends, and only to
real connections (a replayed cassette has none).
"""

from __future__ import annotations

import functools
import io
import socket
import threading
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import urljoin

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.connection import HTTPConnection as _RealConnection  # before vcrpy may swap it
from urllib3.response import HTTPResponse

from ..errors import DeadlineExceeded, ResponseTooLarge, TooManyRedirects
from . import clock

CHUNK = 64 * 1024
MAX_REDIRECTS = 5
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # 256 MiB, decoded
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


# A function the caller gives :func:`exchange`: (method, absolute target URL, keep the body?,
# the redirect response) -> the next request; it raises to refuse the hop.
Redirect = Callable[[str, str, bool, requests.Response], requests.PreparedRequest]


def exchange(
    session: requests.Session,
    request: requests.PreparedRequest,
    *,
    timeout: float,
    max_bytes: int,
    redirect: Redirect,
    sent: Callable[[], None] = lambda: None,
    sink: BinaryIO | None = None,
) -> requests.Response:
    """Send ``request`` and read its response, following redirects through ``redirect``;
    ``timeout`` seconds in all and ``max_bytes`` of decoded body per response. ``sent``
    hears about every request sent (redirects included). The response's body is read
    (``.content``) - or, with ``sink`` and a 2xx status, written to ``sink`` as it arrives
    (``.content`` is then empty: a download is never held in memory). Raises ``requests``
    exceptions (a :class:`DeadlineExceeded` among the timeouts), :class:`ResponseTooLarge`,
    :class:`TooManyRedirects`, or what ``redirect`` raises."""
    deadline = clock.deadline() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        sent()
        response = send(session, request, deadline=deadline, timeout=timeout, max_bytes=max_bytes, sink=sink)
        target = redirect_target(session, response)
        if target is None:
            return response
        method, keep_body = redirected_method(str(request.method), response.status_code)
        request = redirect(method, urljoin(str(request.url), requote_uri(target)), keep_body, response)
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def send(
    session: requests.Session,
    request: requests.PreparedRequest,
    *,
    deadline: float,
    timeout: float,
    max_bytes: int,
    sink: BinaryIO | None = None,
) -> requests.Response:
    """One request, no redirect followed, its body read before ``deadline`` (a 2xx body into
    ``sink`` when one is given)."""
    remaining = deadline - clock.deadline()
    if remaining <= 0:
        raise DeadlineExceeded(timeout)
    settings = session.merge_environment_settings(str(request.url), {}, None, None, None)
    settings.pop("stream", None)
    wait = min(timeout, remaining)
    _local.deadline = deadline
    try:
        response = session.send(request, stream=True, allow_redirects=False, timeout=(wait, wait), **settings)
    except requests.exceptions.Timeout:
        if clock.deadline() >= deadline:  # the status line or headers came too slowly
            raise DeadlineExceeded(timeout) from None
        raise
    finally:
        _local.deadline = None
    try:
        into = sink if sink is not None and 200 <= response.status_code < 300 else None
        read_body(response, deadline=deadline, timeout=timeout, max_bytes=max_bytes, sink=into)
    except BaseException:
        response.close()
        raise
    return response


def read_body(
    response: requests.Response, *, deadline: float, timeout: float, max_bytes: int, sink: BinaryIO | None = None
) -> bytes:
    """Read a streamed response's body (decoded) before ``deadline``, at most ``max_bytes``
    of it; it is then the response's ``.content`` - or, with ``sink``, written there chunk by
    chunk (``.content`` is then empty)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes and not response.headers.get("Content-Encoding"):
        raise ResponseTooLarge(max_bytes, int(declared))
    raw = response.raw
    read: Callable[[], bytes]
    if isinstance(raw, HTTPResponse):
        read = functools.partial(raw.read1, CHUNK, decode_content=True)  # one chunk inflated at a time
    else:  # a replayed cassette's response (already decoded)
        read = functools.partial(raw.read, CHUNK)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if clock.deadline() >= deadline:
                raise DeadlineExceeded(timeout)
            chunk = read()
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(max_bytes)
            if sink is not None:
                sink.write(chunk)
            else:
                chunks.append(chunk)
    except urllib3.exceptions.ReadTimeoutError:
        if clock.deadline() >= deadline:
            raise DeadlineExceeded(timeout) from None
        raise requests.exceptions.ReadTimeout("read timed out") from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    except TimeoutError:
        raise DeadlineExceeded(timeout) from None
    except OSError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    content = b"".join(chunks)
    response._content = content  # what .content, .json() and .text read
    response._content_consumed = True
    return content


def redirect_target(session: requests.Session, response: requests.Response) -> str | None:
    """The ``Location`` of a redirect (301, 302, 303, 307, 308), or None."""
    if response.status_code not in REDIRECT_STATUSES:
        return None
    return session.get_redirect_target(response) or None


def redirected_method(method: str, status: int) -> tuple[str, bool]:
    """(the method of the next hop, whether the body goes with it), as browsers and
    ``requests`` do: 303 becomes GET; 301 and 302 turn a POST into a GET; 307 and 308
    repeat the request as it was."""
    if status in (307, 308):
        return method, True
    if status == 303 and method != "HEAD":
        return "GET", False
    if status in (301, 302) and method == "POST":
        return "GET", False
    return method, method not in ("GET", "HEAD")


# -- the socket deadline ---------------------------------------------------------------------

_local = threading.local()  # .deadline: the deadline of the request this thread is sending


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections keep to the deadline :func:`send` sets: every
    read of a response (status line, headers, body) waits at most what is left of it."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        if not getattr(pool, "_etl_deadlines", False):
            setattr(pool, "_etl_deadlines", True)  # noqa: B010 - an attribute urllib3 does not know
            setattr(pool, "_new_conn", functools.partial(_new_connection, pool))  # noqa: B010 - per pool
        return pool


def _new_connection(pool: Any) -> Any:
    connection = type(pool)._new_conn(pool)  # looked up each time: vcrpy may have patched it
    # vcrpy's stand-in (a cassette is in use) has no socket; while recording, the real
    # connection it wraps has one.
    real = getattr(connection, "real_connection", None)
    for candidate in (connection, real) if real is None else (real,):
        if isinstance(candidate, _RealConnection) and "getresponse" not in vars(candidate):
            original = type(candidate).getresponse
            setattr(candidate, "getresponse", functools.partial(_getresponse, candidate, original))  # noqa: B010
    return connection


def _getresponse(connection: Any, original: Callable[..., Any]) -> Any:
    deadline = getattr(_local, "deadline", None)
    sock = getattr(connection, "sock", None)
    if deadline is None or sock is None:
        return original(connection)
    guarded = _DeadlineSocket(sock, deadline)
    connection.sock = guarded
    try:
        return original(connection)
    finally:
        if connection.sock is guarded:  # (None when the response closes the connection)
            connection.sock = sock


class _DeadlineSocket:
    """A connected socket whose reads end at a deadline. http.client reads a response
    through ``makefile()``; every read it makes waits at most what is left of the deadline
    (and never longer than the socket's own timeout), and past it fails as a timeout."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline
        self._timeout = sock.gettimeout()
        self._files = 0
        self._close_pending = False

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._files += 1
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        remaining = self._deadline - clock.deadline()
        if remaining <= 0:
            raise TimeoutError("the request's deadline passed")
        self._sock.settimeout(remaining if self._timeout is None else min(remaining, self._timeout))
        try:
            return self._sock.recv_into(buffer, nbytes, flags)
        finally:
            self._sock.settimeout(self._timeout)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _decref_socketios(self) -> None:
        self._files -= 1
        if self._files <= 0 and self._close_pending:
            self._sock.close()

    def close(self) -> None:
        if self._files > 0:
            self._close_pending = True  # the response is still being read (Connection: close)
        else:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
