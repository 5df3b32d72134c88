"""Stage 3: fetch pages over HTTP.

:class:`HttpClient` wraps one ``requests.Session`` per source (connection reuse), adds the
source's headers and query parameters, retries what is worth retrying and turns every
other failure into a :class:`FetchError` that names the URL (with secrets redacted).
:func:`paginate` walks a step's pages. The client is thread-safe for concurrent GETs
(``requests.Session`` with one connection pool), which is what fan-out relies on.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import jinja2
import requests
from vcr.errors import CannotOverwriteExistingCassetteException

from .config import Redactor
from .errors import AuthenticationError, FetchError
from .expressions import Scope, ValueProblem
from .plan import Pagination, RequestSpec, Source

log = logging.getLogger("etl.http")

MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After fails the request instead of hanging the run
USER_AGENT = "etl (declarative JupiterOne graph engine)"

# Transport failures worth another attempt: refused/reset connections, timeouts, a body cut short.
RETRYABLE_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)

# Indirection so tests can make retries instant.
sleep = time.sleep


@dataclass(frozen=True)
class Page:
    url: str  # redacted
    status: int
    headers: Mapping[str, str]
    body: Any


class HttpClient:
    """HTTP for one source: base URL, default headers and params, retries, JSON decoding."""

    def __init__(self, source: Source, *, base_url: str, headers: dict[str, str], params: dict[str, str],
                 redactor: Redactor, options):
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.params = params
        self.redactor = redactor
        self.options = options  # JMESPath options, for the source's error_message expression
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.session.headers.update(headers)
        self.requests_made = 0

    def close(self) -> None:
        self.session.close()

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path:
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    def get_json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, body: Any = None) -> Page:
        """One logical request, retried as the source's policy says. Returns the decoded JSON."""
        request = requests.Request(
            method, self.url_for(path), params={**self.params, **(params or {})},
            headers=dict(headers or {}), json=body,
        )
        prepared = self.session.prepare_request(request)
        url = self.redactor(prepared.url)
        settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
        policy = self.source.retry
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                self.requests_made += 1
                response = self.session.send(prepared, timeout=self.source.timeout, **settings)
            except CannotOverwriteExistingCassetteException:
                raise FetchError(f"{method} {url}: the cassette holds no response for this request "
                                 f"(replay only); re-record it with --record-mode all, or check --config "
                                 f"and --base-url", url=url) from None
            except RETRYABLE_ERRORS as exc:
                reason = _connection_reason(exc)
                if attempt >= policy.max_attempts:
                    raise FetchError(f"{method} {url} failed after {attempt} attempts: {reason}", url=url) from None
                delay = backoff_delay(policy.initial_delay, policy.max_delay, attempt)
                log.info("%s %s: %s; retry %d/%d in %.1fs", method, url, reason, attempt,
                         policy.max_attempts - 1, delay)
                sleep(delay)
                continue
            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status_code
            log.debug("%s %s -> %d (%.0f ms, attempt %d)", method, url, status, elapsed_ms, attempt)
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
            return Page(url=url, status=status, headers=response.headers, body=self.decode(method, url, response))

    def decode(self, method: str, url: str, response: requests.Response) -> Any:
        content_type = response.headers.get("Content-Type", "")
        try:
            return json.loads(response.content)
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
        except (ValueError, UnicodeDecodeError):
            return _snippet(response)
        try:
            found = self.source.error_message.evaluate(Scope(body, {}, self.options))
        except Exception:  # a body of an unexpected shape must not hide the HTTP error
            found = None
        if found in (None, "", [], {}):
            return _snippet(response)
        return found if isinstance(found, str) else json.dumps(found)


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
# Requests and pagination


def render_pairs(pairs, scope: Scope) -> dict[str, Any]:
    return {name: value.evaluate(scope) for name, value in pairs}


def fetch(client: HttpClient, spec: RequestSpec, scope: Scope, paging: Mapping[str, Any] | None = None) -> Page:
    """Make one request of a step. ``paging`` (offset/limit...) goes into the query string,
    or into the variables of a GraphQL request, whose errors are failures even with HTTP 200."""
    try:
        path = spec.path.evaluate(scope)
        params = render_pairs(spec.params, scope)
        headers = render_pairs(spec.headers, scope)
        if spec.graphql is None:
            body = spec.body.evaluate(scope) if spec.body is not None else None
            params.update(paging or {})
        else:
            body = {"query": spec.graphql, "variables": {**render_pairs(spec.variables, scope), **(paging or {})}}
    except (jinja2.UndefinedError, ValueProblem) as exc:
        message = exc.message if isinstance(exc, jinja2.UndefinedError) else str(exc)
        raise FetchError(f"cannot build the request ({spec.path.source}): {message}") from None
    page = client.get_json(spec.method, path, params=params, headers=headers, body=body)
    if spec.graphql is not None:
        check_graphql(spec.method, page)
    return page


def check_graphql(method: str, page: Page) -> None:
    body = page.body
    if not isinstance(body, dict):
        raise FetchError(f"{method} {page.url}: a GraphQL response must be an object, got {type(body).__name__}",
                         url=page.url)
    errors = body.get("errors")
    if errors:
        messages = [e.get("message", json.dumps(e)) if isinstance(e, dict) else str(e)
                    for e in (errors if isinstance(errors, list) else [errors])]
        raise FetchError(f"{method} {page.url}: GraphQL error: {'; '.join(messages)}", status=page.status,
                         url=page.url)
    if body.get("data") is None:
        raise FetchError(f"{method} {page.url}: the GraphQL response has no data", url=page.url)


def validate_credentials(client: HttpClient, spec: RequestSpec, scope: Scope) -> None:
    """JupiterOne's validateInvocation: one cheap authenticated call before any step."""
    try:
        fetch(client, spec, scope)
    except FetchError as exc:
        if exc.status in (401, 403):
            raise AuthenticationError(
                f"authentication failed: {exc} - check the API credentials in the config",
                status=exc.status, url=exc.url, body=exc.body,
            ) from None
        raise


def paginate(client: HttpClient, spec: RequestSpec, pagination: Pagination, scope: Scope,
             select: Callable[[Any], list]) -> Iterator[tuple[Page, list]]:
    """Yield ``(page, records)`` for every page of a request.

    ``select`` turns a page body into its list of records (the extract stage); offset
    pagination advances by the number of records each page really held.
    """
    if pagination.kind == "none":
        page = fetch(client, spec, scope)
        yield page, select(page.body)
        return

    limit = int(pagination.limit.evaluate(scope)) if pagination.limit is not None else None
    offset = 0
    pages = 0
    while True:
        paging = {pagination.offset_param: offset}
        if limit is not None:
            paging[pagination.limit_param] = limit
        page = fetch(client, spec, scope, paging)
        records = select(page.body)
        pages += 1
        yield page, records
        if not records:
            return
        offset += len(records)
        if pagination.total is not None:
            total = pagination.total.evaluate(Scope(page.body, {}, scope.options))
            if total is not None and (not isinstance(total, (int, float)) or isinstance(total, bool)):
                raise FetchError(f"{spec.method} {page.url}: the total ({pagination.total.source}) is "
                                 f"{json.dumps(total)}, not a number", url=page.url)
            if total is not None and offset >= total:
                return
        if (pagination.total is None or total is None) and limit is not None and len(records) < limit:
            return  # without a total, a short page is the last
        if pagination.max_pages is not None and pages >= pagination.max_pages:
            log.warning("%s: stopped after max_pages=%d", page.url, pagination.max_pages)
            return


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
