"""Stage 3: HTTP.

:class:`HttpClient` wraps one ``requests.Session`` per source (connection reuse), adds the
source's headers, query parameters and credentials, keeps to the source's request
budgets, retries what is worth retrying and turns every other failure into a
:class:`FetchError` that names the URL (with secrets redacted). The client is
thread-safe, which is what fan-out (:func:`ordered_map`) relies on. Which requests a step
makes, page after page, is ``paginate.py``'s business.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson
import requests

from .auth import OAuth2ClientCredentials, static_auth
from .config import Redactor
from .errors import FetchError
from .expressions import Scope
from .plan import Source

log = logging.getLogger("etl.http")

MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After fails the request instead of hanging the run
USER_AGENT = "etl (declarative JupiterOne graph engine)"

# Transport failures worth another attempt: refused/reset connections, timeouts, a body cut short.
RETRYABLE_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)

# The clock, through module globals so tests can replace it (retries then take no time).
sleep = time.sleep
monotonic = time.monotonic


@dataclass(frozen=True)
class Page:
    url: str  # redacted, for messages
    request_url: str  # as sent: never print it (it may carry a secret)
    status: int
    headers: Mapping[str, str]
    body: Any
    attempts: int = 1
    elapsed_ms: float = 0.0


class RateLimiter:
    """Sliding-window request budgets ("100 requests per 5 seconds"), shared by every thread
    of a source: :meth:`acquire` waits until one more request fits in every window."""

    def __init__(self, limits: tuple[tuple[int, float], ...]):
        self.windows = [(requests_allowed, seconds, deque()) for requests_allowed, seconds in limits]
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = monotonic()
                wait = 0.0
                for allowed, seconds, stamps in self.windows:
                    while stamps and now - stamps[0] >= seconds:
                        stamps.popleft()
                    if len(stamps) >= allowed:
                        # The request that must leave the window before one more fits.
                        wait = max(wait, seconds - (now - stamps[-allowed]), 1e-6)
                if wait <= 0:
                    for _, _, stamps in self.windows:
                        stamps.append(now)
                    return
            log.debug("request budget reached; waiting %.2fs", wait)
            sleep(wait)


class HttpClient:
    """HTTP for one source: base URL, default headers and params, credentials, budgets,
    retries, JSON decoding."""

    def __init__(self, source: Source, *, base_url: str, headers: dict[str, str], params: dict[str, str],
                 redactor: Redactor, options, auth_scope: Scope):
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.redactor = redactor
        self.options = options  # JMESPath options, for the source's error_message expression
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.session.headers.update(headers)
        credentials = static_auth(source.auth, auth_scope, redactor)
        self.session.headers.update(credentials.headers)
        self.session.auth = credentials.basic
        self.params = {**params, **credentials.params}
        self.oauth = None
        if source.auth is not None and source.auth.kind == "oauth2_client_credentials":
            token_url = next(v for n, v in source.auth.fields if n == "token_url").evaluate(auth_scope)
            retry = source.retry
            self.oauth = OAuth2ClientCredentials(
                source.auth, auth_scope, redactor, token_url=self.url_for(token_url), timeout=source.timeout,
                clock=lambda: monotonic(),
                pause=lambda n: sleep(backoff_delay(retry.initial_delay, retry.max_delay, n)))
        self.limiter = RateLimiter(source.rate_limits) if source.rate_limits else None
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path:
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    def prepare(self, method: str, path: str, params, headers, body) -> requests.PreparedRequest:
        url = self.url_for(path)
        present = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
        merged = {k: v for k, v in self.params.items() if k not in present}  # a next-page URL has them already
        merged.update(params or {})
        request = requests.Request(method, url, params=merged, headers=dict(headers or {}), json=body)
        return self.session.prepare_request(request)

    def get_json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, body: Any = None) -> Page:
        """One logical request, retried as the source's policy says. Returns the decoded JSON."""
        prepared = self.prepare(method, path, params, headers, body)
        url = self.redactor(prepared.url)
        settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
        policy = self.source.retry
        attempt = 0
        refreshed = False
        started = monotonic()
        while True:
            attempt += 1
            token = self.authorize(prepared)
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                with self._count_lock:
                    self.requests_made += 1
                response = self.session.send(prepared, timeout=self.source.timeout, **settings)
            except RETRYABLE_ERRORS as exc:
                reason = _connection_reason(exc)
                if attempt >= policy.max_attempts:
                    raise FetchError(f"{method} {url} failed after {attempt} attempts: {reason}", url=url) from None
                delay = backoff_delay(policy.initial_delay, policy.max_delay, attempt)
                log.info("%s %s: %s; retry %d/%d in %.1fs", method, url, reason, attempt,
                         policy.max_attempts - 1, delay)
                sleep(delay)
                continue
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                raise FetchError(f"{method} {url}: the cassette holds no response for this request "
                                 f"(replay only); re-record it with --record-mode all, or check --config "
                                 f"and --base-url", url=url) from None
            status = response.status_code
            log.debug("%s %s -> %d (attempt %d)", method, url, status, attempt)
            if status == 401 and token is not None and not refreshed:
                log.info("%s %s -> 401: the access token was refused; getting a new one", method, url)
                self.oauth.refused(token)
                refreshed = True
                attempt -= 1  # a refresh is not a retry
                continue
            if status in policy.statuses and attempt < policy.max_attempts:
                delay = retry_after(response.headers.get("Retry-After"))
                if delay is None:
                    delay = backoff_delay(policy.initial_delay, policy.max_delay, attempt)
                elif delay > MAX_RETRY_AFTER:
                    raise self.error(method, url, response, f" (Retry-After asks for {delay:.0f}s; giving up)")
                log.info("%s %s -> %d; retry %d/%d in %.1fs", method, url, status, attempt,
                         policy.max_attempts - 1, delay)
                sleep(delay)
                continue
            if status >= 400:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise self.error(method, url, response, suffix)
            return Page(url=url, request_url=prepared.url, status=status, headers=response.headers,
                        body=self.decode(method, url, response), attempts=attempt,
                        elapsed_ms=(monotonic() - started) * 1000)

    def authorize(self, prepared: requests.PreparedRequest) -> str | None:
        """Put the current OAuth2 token on the request; returns it (None without OAuth2)."""
        if self.oauth is None:
            return None
        token = self.oauth.token()
        prepared.headers["Authorization"] = f"Bearer {token}"
        return token

    def decode(self, method: str, url: str, response: requests.Response) -> Any:
        content_type = response.headers.get("Content-Type", "")
        try:
            return decode_json(response.content)
        except RecursionError:
            raise FetchError(f"{method} {url} returned JSON nested too deeply to read "
                             f"({len(response.content)} bytes)", status=response.status_code, url=url) from None
        except (ValueError, UnicodeDecodeError):
            snippet = self.redactor(_snippet(response))
            kind = content_type or "no content type"
            raise FetchError(
                f"{method} {url} returned HTTP {response.status_code} with a body that is not JSON "
                f"({kind}, {len(response.content)} bytes): {snippet}",
                status=response.status_code, url=url, body=snippet,
            ) from None

    def error(self, method: str, url: str, response: requests.Response, suffix: str = "") -> FetchError:
        detail = self.vendor_message(response)
        status = response.status_code
        text = f"{method} {url} failed: HTTP {status} {response.reason or ''}".rstrip()
        if detail:
            text += f": {detail}"
        return FetchError(self.redactor(text + suffix), status=status, url=url,
                          body=self.redactor(_snippet(response)))

    def vendor_message(self, response: requests.Response) -> str:
        """The API's own error message, found with the source's ``error_message`` expression."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _snippet(response)
        try:
            found = self.source.error_message.evaluate(Scope(body, {}, self.options))
        except Exception:  # a body of an unexpected shape must not hide the HTTP error
            found = None
        if found in (None, "", [], {}):
            return _snippet(response)
        return found if isinstance(found, str) else json.dumps(found)


def cassette_miss(exc: Exception) -> bool:
    """A replayed cassette had no answer (vcrpy is only imported when a cassette is used)."""
    errors = sys.modules.get("vcr.errors")
    return errors is not None and isinstance(exc, errors.CannotOverwriteExistingCassetteException)


def decode_json(content: bytes) -> Any:
    """orjson (fast), or json for what orjson refuses but JSON allows (integers beyond 64 bits)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def backoff_delay(initial: float, cap: float, attempt: int) -> float:
    """Exponential backoff with 'equal jitter': between half and all of min(cap, initial * 2^(n-1))."""
    ceiling = min(cap, initial * (2 ** (attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _connection_reason(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection closed in the middle of the response body"
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "RemoteDisconnected",
                   "IncompleteRead", "Name or service not known", "Temporary failure in name resolution"):
        if marker in text:
            return marker.lower() if marker[0].isupper() and " " in marker else marker
    return type(exc).__name__ + (f": {text[:200]}" if text else "")


def _snippet(response: requests.Response, limit: int = 200) -> str:
    text = response.content[:limit].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(response.content) > limit else "")


# ----------------------------------------------------------------------------------------
# Concurrency


T = TypeVar("T")
R = TypeVar("R")


def ordered_map(func: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R | FetchError]]:
    """``(item, func(item))`` for every item, in input order, running up to ``concurrency``
    calls at once. A FetchError is returned in place of the result; other exceptions
    propagate. At most ``2 * concurrency`` results wait in memory."""

    def call(item: T) -> R | FetchError:
        try:
            return func(item)
        except FetchError as exc:
            return exc

    if concurrency <= 1:
        for item in items:
            yield item, call(item)
        return
    pending: deque = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="etl-fetch") as pool:
        for item in source:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= 2 * concurrency:
                break
        while pending:
            item, future = pending.popleft()
            result = future.result()
            following = next(source, _END)
            if following is not _END:
                pending.append((following, pool.submit(call, following)))
            yield item, result


_END = object()
