"""HTTP for one source of a mapping.

:class:`HttpClient` wraps one session per source (connection reuse), adds the source's
headers, query parameters and credentials, signs each request (``signing.py``), keeps
to the source's request budgets and the quota its API announces (``ratelimit.py``),
retries what the retry policy (``engine/http/retry.py``) says is worth retrying, and
turns every other failure into a :class:`FetchError` that names the URL (with secrets
redacted). The client is thread-safe, which fan-out relies on. Which requests a step
makes, page after page, is ``paginate.py``'s business.

**Credentials stay on the source's origin.** The source's headers and query parameters,
its auth (a header, a query parameter, HTTP Basic, the OAuth2 access token) go only to
requests whose scheme, host and port are those of its base URL, or of an origin its
mapping allows (``allowed_origins``). A URL on any other origin - an absolute next-page
link, a ``Link`` header, an absolute path, a redirect - is refused with an error naming
both origins, or, with ``cross_origin: anonymous``, requested without any of them (and
without any header, query parameter or body holding a secret). Redirects are followed
here, hop by hop (``engine/http/transfer.py``), so this holds for every hop; every attempt
is bounded in time (the source's ``timeout``, in all) and in size (``max_response_bytes``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from ..errors import ConfigError, FetchError, ResponseTooLarge, TooManyRedirects
from ..http import clock
from ..http.cassette import cassette_miss
from ..http.origins import Origin, origin_of, url_problem
from ..http.retry import RETRYABLE_ERRORS, Attempts
from ..http.session import DEFAULT_HEADERS, new_session, snippet
from ..http.transfer import exchange
from ..jsonio import decode_json
from ..lang.values import Scope
from ..secrets import Redactor
from .auth import OAuth2ClientCredentials, static_auth
from .plan import Source
from .ratelimit import RateLimiter
from .signing import Signer

log = logging.getLogger("etl.http")

SPOOL_IN_MEMORY = 4 * 1024 * 1024  # bytes of a download kept in memory before it goes to a temporary file


@dataclass(frozen=True)
class Page:
    url: str  # redacted, for messages
    request_url: str  # as sent: never print it (it may carry a secret)
    status: int
    headers: Mapping[str, str]
    body: Any
    attempts: int = 1
    elapsed_ms: float = 0.0
    file: BinaryIO | None = None  # a download (``HttpClient.download``): the body, spooled; ``body`` is None
    notes: tuple[str, ...] = ()  # a decoded download: rows or records that could not be read (skipped)


@dataclass(frozen=True)
class _Call:
    """What one logical request asked for, to build each hop of it again."""

    method: str
    headers: dict[str, str]  # the request's own (not the source's)
    body: Any
    account: AccountBase | None = None


@dataclass(frozen=True)
class AccountBase:
    """What one account changes in the requests to a source (``accounts.py``): its base URL
    (None: the source's), and the source's headers and query parameters that read ``account``.
    They belong to the source: like its own, they go only to origins it trusts."""

    base_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


def cassette_miss_message(what: str, bundled: bool) -> str:
    """What to do when the replayed cassette has no response for a request: a bundled
    cassette was recorded with other config (never re-record it against the live API);
    a cassette of the user's own can be re-recorded."""
    if bundled:
        return (
            f"{what}: the bundled cassette has no response for this request: it was recorded with other "
            f"config or --base-url; check --config, or use --cassette FILE --record-mode once to record your own"
        )
    return (
        f"{what}: the cassette holds no response for this request (replay only); re-record it with "
        f"--record-mode all, or check --config and --base-url"
    )


class HttpClient:
    """HTTP for one source: base URL, default headers and params, credentials, budgets,
    retries, JSON decoding."""

    def __init__(
        self,
        source: Source,
        *,
        base_url: str,
        headers: dict[str, str],
        params: dict[str, str],
        redactor: Redactor,
        options,
        auth_scope: Scope,
        bundled_cassette: bool = False,
    ):
        self.source = source
        self.bundled_cassette = bundled_cassette  # a replay miss then says: not recorded with this config
        self.redactor = redactor
        self.origin = base_origin(source.name, base_url, redactor)
        self.base_url = base_url.rstrip("/")
        # Credentials go to these origins only; allowed_origins are checked when compiled.
        self.trusted = {self.origin, *(o for o in map(origin_of, source.allowed_origins) if o is not None)}
        self.options = options  # JMESPath options, for the source's error_message expression
        credentials = static_auth(source.auth, auth_scope, redactor)
        self.headers = {**headers, **credentials.headers}  # auth headers win over the source's
        self.params = {**params, **credentials.params}
        self.basic = credentials.basic
        self.session = new_session()
        self.oauth = None
        if source.auth is not None and source.auth.kind == "oauth2_client_credentials":
            token_url = next(v for n, v in source.auth.fields if n == "token_url").evaluate(auth_scope)
            self.oauth = OAuth2ClientCredentials(
                source.auth,
                auth_scope,
                redactor,
                token_url=self.url_for(str(token_url)),
                timeout=source.timeout,
                retry=source.retry,
                max_bytes=source.max_response_bytes,
                source=source.name,
            )
        self.limiter = RateLimiter.for_source(source)  # budgets, and the quota the API announces
        self.signer = Signer.for_source(source, auth_scope, redactor)  # the source's sign templates
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()
        if self.oauth is not None:
            self.oauth.close()

    def url_for(self, path: str, base_url: str | None = None) -> str:
        """``path`` on the source's base URL (or on ``base_url``: an account's), unless absolute."""
        if path.startswith(("http://", "https://")):
            return path
        base = self.base_url if base_url is None else base_url.rstrip("/")
        if not path:
            return base
        return f"{base}/{path.lstrip('/')}"

    # -- where credentials go --------------------------------------------------------------

    def may_send_credentials(self, url: str, refused: str) -> bool:
        """True when ``url`` is on a trusted origin (it gets the source's credentials); False
        when it is not and the source says ``cross_origin: anonymous`` (it gets none); a
        :class:`FetchError` otherwise. ``refused`` starts the message (what asked for it)."""
        origin = origin_of(url)
        if origin is not None and origin in self.trusted:
            return True
        if origin is not None and self.source.cross_origin == "anonymous":
            return False
        name = self.source.name
        where = f"on another origin ({origin})" if origin is not None else "not an http(s) URL"
        raise FetchError(
            self.redactor(
                f"{refused} is {where}, not the origin of source '{name}' ({self.origin}); refusing to send "
                f"the source's credentials there. Allow it with sources.{name}.allowed_origins, or set "
                f"sources.{name}.cross_origin: anonymous to request it without credentials"
            ),
            url=self.redactor(url),
        )

    def prepare(
        self, call: _Call, url: str, params: Mapping[str, Any] | None, *, trusted: bool, token: str | None = None
    ) -> requests.PreparedRequest:
        """The request for ``url``: with the source's headers, params and credentials (and
        the OAuth2 ``token``) when ``trusted``; otherwise with none of them, and nothing
        else that holds a secret."""
        if trusted:
            account = call.account or AccountBase()
            present = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
            source_params = {**self.params, **account.params}
            merged = {k: v for k, v in source_params.items() if k not in present}  # a next-page URL has them already
            merged.update(params or {})
            headers = {**self.headers, **account.headers, **call.headers}
            request = requests.Request(call.method, url, params=merged, headers=headers, json=call.body)
            request.auth = self.basic
            prepared = self.session.prepare_request(request)
            if token is not None:
                prepared.headers["Authorization"] = f"Bearer {token}"
            return prepared
        secret = self.redactor.contains_secret
        url = without_secret_params(url, secret)
        if secret(url) or (call.body is not None and secret(json.dumps(call.body, default=str))):
            raise FetchError(
                self.redactor(
                    f"{call.method} {url}: this request to another origin ({origin_of(url)}) would carry a "
                    f"credential of source '{self.source.name}' in its URL or body; not sent"
                ),
                url=self.redactor(url),
            )
        safe = {k: v for k, v in (params or {}).items() if not secret(str(k)) and not secret(str(v))}
        headers = {k: v for k, v in call.headers.items() if not secret(k) and not secret(v)}
        # Not through the session: no session cookies, no .netrc, nothing of the source's.
        headers = {**DEFAULT_HEADERS, **headers}
        return requests.Request(call.method, url, params=safe, headers=headers, json=call.body).prepare()

    def redirect(
        self, call: _Call, token: str | None, what: str, method: str, url: str, keep_body: bool, response
    ) -> requests.PreparedRequest:
        """The next hop of a redirect, built as a new request for its origin (or refused)."""
        status = response.status_code
        trusted = self.may_send_credentials(url, f"{what} -> HTTP {status}: the redirect to {url}")
        log.debug("%s -> %d: redirected to %s%s", what, status, self.redactor(url), "" if trusted else " (anonymous)")
        hop = _Call(method, call.headers, call.body if keep_body else None, call.account)
        return self.finalize(self.prepare(hop, url, None, trusted=trusted, token=token), trusted=trusted)

    def finalize(self, prepared: requests.PreparedRequest, *, trusted: bool) -> requests.PreparedRequest:
        """The request as it is sent: signed (``sign``), when it goes to the source's origins.
        Called before every attempt and for every redirect hop, so a signature is always fresh."""
        if trusted and self.signer is not None:
            self.signer.sign(prepared)
        return prepared

    def _count(self) -> None:
        with self._count_lock:
            self.requests_made += 1

    # -- one logical request ---------------------------------------------------------------

    def get_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        sink: BinaryIO | None = None,
        account: AccountBase | None = None,
    ) -> Page:
        """One logical request, retried as the source's policy says. Returns the decoded JSON -
        or, with ``sink``, writes the body there as it arrives (see :meth:`download`). For an
        ``account``, its base URL replaces the source's (its origin held to the same rules) and
        its headers and params join the source's."""
        call = _Call(method, dict(headers or {}), body, account)
        target = self.url_for(path, account.base_url if account is not None else None)
        trusted = self.may_send_credentials(target, f"{method} {target}")
        prepared = self.prepare(call, target, params, trusted=trusted)
        assert prepared.url is not None  # prepare always sets it
        url = self.redactor(prepared.url)
        what = f"{method} {url}"
        attempts = Attempts(self.source.retry, what)
        refreshed = False
        started = clock.monotonic()
        for attempt in attempts:
            token = self.oauth.token() if trusted and self.oauth is not None else None
            if token is not None:
                prepared.headers["Authorization"] = f"Bearer {token}"
            if self.limiter is not None:
                self.limiter.acquire()
            self.finalize(prepared, trusted=trusted)
            if sink is not None:  # what an earlier attempt wrote is not part of this one
                sink.seek(0)
                sink.truncate()
            try:
                response = exchange(
                    self.session,
                    prepared,
                    timeout=self.source.timeout,
                    max_bytes=self.source.max_response_bytes,
                    redirect=lambda *hop, token=token: self.redirect(call, token, what, *hop),
                    sent=self._count,
                    sink=sink,
                )
            except RETRYABLE_ERRORS as exc:
                failure = attempts.transport_failed(exc)
                if failure:
                    raise FetchError(f"{what} {failure}", url=url) from None
                continue
            except FetchError:
                raise  # a redirect refused
            except ResponseTooLarge as exc:
                raise FetchError(
                    f"{what}: {exc}; refused. If the API really sends that much in one response, raise "
                    f"sources.{self.source.name}.max_response_bytes",
                    url=url,
                ) from None
            except TooManyRedirects as exc:
                raise FetchError(f"{what}: {exc}", url=url) from None
            except requests.RequestException as exc:  # a redirect to a URL that cannot be requested, say
                detail = " ".join(str(exc).split())[:200]
                raise FetchError(self.redactor(f"{what}: {type(exc).__name__}: {detail}"), url=url) from None
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                # vcrpy's own message shows the whole request (a body with a secret too): not shown.
                raise FetchError(cassette_miss_message(what, self.bundled_cassette), url=url) from None
            status = response.status_code
            log.debug("%s -> %d (attempt %d)", what, status, attempt)
            if self.limiter is not None:
                self.limiter.observe(response.headers)  # the quota the API announces, if it is read
            if status == 401 and token is not None and not refreshed and self.oauth is not None:
                log.info("%s -> 401: the access token was refused; getting a new one", what)
                self.oauth.refused(token)
                refreshed = True
                attempts.repeat_for_free()  # a refresh is not a retry
                continue
            if attempts.retry_status(response):
                continue
            if status >= 400:
                raise self.error(method, url, response, attempts.suffix)
            return Page(
                url=url,
                request_url=prepared.url or "",
                status=status,
                headers=response.headers,
                body=self.decode(method, url, response) if sink is None else None,
                file=sink,
                attempts=attempt,
                elapsed_ms=(clock.monotonic() - started) * 1000,
            )
        raise AssertionError("unreachable: Attempts never ends by itself")

    def download(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        account: AccountBase | None = None,
    ) -> Page:
        """One logical request whose body is a file to read in some format (``decode.py``):
        written to a temporary file as it arrives (in memory up to :data:`SPOOL_IN_MEMORY`,
        on disk beyond), never held whole; retried like any request - a download that breaks
        off is fetched again from its start. The page's ``file`` is the body, at its start;
        the caller closes it."""
        # Not a context manager: the file outlives this call (the caller reads it, then closes it).
        spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, prefix="etl-download-"))  # noqa: SIM115
        try:
            page = self.get_json(method, path, params=params, headers=headers, body=body, sink=spool, account=account)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return page

    def decode(self, method: str, url: str, response: requests.Response) -> Any:
        content_type = response.headers.get("Content-Type", "")
        try:
            return decode_json(response.content)
        except RecursionError:
            raise FetchError(
                f"{method} {url} returned JSON nested too deeply to read ({len(response.content)} bytes)",
                status=response.status_code,
                url=url,
            ) from None
        except (ValueError, UnicodeDecodeError):
            shown = self.redactor(snippet(response))
            kind = content_type or "no content type"
            raise FetchError(
                f"{method} {url} returned HTTP {response.status_code} with a body that is not JSON "
                f"({kind}, {len(response.content)} bytes): {shown}",
                status=response.status_code,
                url=url,
                body=shown,
            ) from None

    def error(self, method: str, url: str, response: requests.Response, suffix: str = "") -> FetchError:
        detail = self.vendor_message(response)
        status = response.status_code
        text = f"{method} {url} failed: HTTP {status} {response.reason or ''}".rstrip()
        if detail:
            text += f": {detail}"
        return FetchError(self.redactor(text + suffix), status=status, url=url, body=self.redactor(snippet(response)))

    def vendor_message(self, response: requests.Response) -> str:
        """The API's own error message, found with the source's ``error_message`` expression."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return snippet(response)
        try:
            found = self.source.error_message.evaluate(Scope(body, {}, self.options))
        except Exception:  # a body of an unexpected shape must not hide the HTTP error
            found = None
        if found in (None, "", [], {}):
            return snippet(response)
        return found if isinstance(found, str) else json.dumps(found)


def base_origin(source: str, base_url: Any, redactor: Redactor) -> Origin:
    """The origin of a source's base URL; a :class:`ConfigError` (exit 4) when it is not
    an http(s) URL with a host."""
    problem = url_problem(base_url) if isinstance(base_url, str) else f"it is {type(base_url).__name__}, not text"
    origin = origin_of(base_url) if isinstance(base_url, str) else None
    if problem is None and origin is not None:
        return origin
    raise ConfigError(
        redactor(
            f"the base URL of source '{source}' is {base_url!r}: {problem or 'not an http(s) URL'}. It must be "
            f"an http:// or https:// URL with a host; check --base-url, or sources.{source}.base_url and the "
            f"config values it reads"
        )
    )


def without_secret_params(url: str, secret) -> str:
    """``url`` without the query parameters whose name or value holds a secret."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not secret(k) and not secret(v)]
    if len(kept) == len(pairs):
        return url
    return urlunsplit(parts._replace(query=urlencode(kept)))
