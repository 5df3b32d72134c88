"""Stage 3, continued: the requests a step makes, page after page.

:func:`paginate` knows every declared pagination kind and when each one ends, and guards
against the ways paginators fail to end: a token, URL, offset or page number that comes
back, or a page that repeats an earlier page's records, stops the step with a
:class:`PaginationLoopError` naming what repeated - never an endless run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import jinja2
import orjson
import requests

from ..errors import AuthenticationError, FetchError, PaginationLoopError, RecordsError, ValueProblem
from ..lang.values import Scope, Value, is_truthy
from .fetch import HttpClient, Page
from .plan import Pagination, RequestSpec

log = logging.getLogger("etl.http")


def render_pairs(pairs, scope: Scope) -> dict[str, Any]:
    return {name: value.evaluate(scope) for name, value in pairs}


def render_text_pairs(pairs, scope: Scope) -> dict[str, str]:
    """Query parameters or headers: null leaves one out, booleans are true/false, the rest text."""
    out = {}
    for name, value in pairs:
        result = value.evaluate(scope)
        if result is None:
            continue
        out[name] = ("true" if result else "false") if isinstance(result, bool) else str(result)
    return out


# ----------------------------------------------------------------------------------------
# One request


def fetch(
    client: HttpClient,
    spec: RequestSpec,
    scope: Scope,
    *,
    paging: Mapping[str, Any] | None = None,
    place: str = "query",
    url: str | None = None,
) -> Page:
    """Make one request of a step.

    ``paging`` (offset, limit, cursor... under their parameter names) goes where ``place``
    says: the query string, headers, the JSON body, or nowhere ('path': the path template
    reads it); GraphQL requests take it as variables. ``url`` (a next-page link) replaces
    the path and query. GraphQL errors are failures even with HTTP 200.
    """
    paging = {k: v for k, v in (paging or {}).items() if v is not None}
    try:
        path = url or spec.path.evaluate(scope)
        params = {} if url else render_text_pairs(spec.params, scope)
        headers = render_text_pairs(spec.headers, scope)
        if spec.graphql is not None:
            body: Any = {"query": spec.graphql, "variables": {**render_pairs(spec.variables, scope), **paging}}
        else:
            body = spec.body.evaluate(scope) if spec.body is not None else None
            if place == "query" and not url:
                params.update(paging)
            elif place == "header":
                headers.update({name: str(value) for name, value in paging.items()})
            elif place == "body" and paging:
                body = {**(body if isinstance(body, dict) else {}), **paging}
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
        raise FetchError(
            f"{method} {page.url}: a GraphQL response must be an object, got {type(body).__name__}", url=page.url
        )
    errors = body.get("errors")
    if errors:
        messages = [
            e.get("message", json.dumps(e)) if isinstance(e, dict) else str(e)
            for e in (errors if isinstance(errors, list) else [errors])
        ]
        raise FetchError(f"{method} {page.url}: GraphQL error: {'; '.join(messages)}", status=page.status, url=page.url)
    if body.get("data") is None:
        raise FetchError(f"{method} {page.url}: the GraphQL response has no data", url=page.url)


def validate_credentials(client: HttpClient, spec: RequestSpec, scope: Scope) -> None:
    """JupiterOne's validateInvocation: one cheap authenticated call before any step."""
    try:
        fetch(client, spec, scope)
    except AuthenticationError:
        raise
    except FetchError as exc:
        if exc.status in (401, 403):
            raise AuthenticationError(
                f"authentication failed: {exc} - check the API credentials in the config",
                status=exc.status,
                url=exc.url,
                body=exc.body,
            ) from None
        raise


# ----------------------------------------------------------------------------------------
# Pages


@dataclass
class LoopGuard:
    """Remembers what a paginator asked for and what it got, to catch it going round."""

    seen: dict[str, set] = field(default_factory=dict)
    pages: dict[bytes, int] = field(default_factory=dict)  # digest of a page's records -> page number

    def visit(self, what: str, value: Any, shown: str, after: str) -> None:
        """Note the ``what`` (offset, page, cursor, URL) of the next request; seen before is a loop."""
        values = self.seen.setdefault(what, set())
        if value in values:
            raise PaginationLoopError(
                f"pagination loop: the {what} {shown} came back (in the response to {after}); stopping this step",
                url=after,
            )
        values.add(value)

    def records(self, records: list, number: int, url: str) -> None:
        """A page whose records start, end and count like an earlier page's is that page again."""
        if not records:
            return
        sample = (len(records), records[0], records[-1])
        digest = hashlib.sha256(orjson.dumps(sample, option=orjson.OPT_SORT_KEYS, default=str)).digest()
        if digest in self.pages:
            raise PaginationLoopError(
                f"pagination loop: page {number} ({url}) repeats the records of page "
                f"{self.pages[digest]}; stopping this step",
                url=url,
            )
        self.pages[digest] = number


def paginate(
    client: HttpClient,
    spec: RequestSpec,
    pagination: Pagination,
    scope: Scope,
    select: Callable[[Any], list],
    truncated: Callable[[str], None] = lambda message: None,
    prefetch: bool = False,
) -> Iterator[tuple[Page, list]]:
    """Yield ``(page, records)`` for every page of a step's request (or of one fan-out child).

    ``select`` turns a page body into its records (the extract stage); offset pagination
    advances by the number of records each page really held. ``truncated`` hears about
    a stop at ``max_pages`` while the API had more. With ``prefetch`` the next page is
    requested (in one background thread) while the caller works on this one.
    """
    walker = _Walker(client, spec, pagination, scope)
    guard = LoopGuard()
    page = walker.request()
    walker.first(page, guard)
    number = 1
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-prefetch") if prefetch else nullcontext() as pool:
        while True:
            try:
                records = select(page.body)
            except RecordsError as exc:
                raise FetchError(f"{spec.method} {page.url}: {exc}", status=page.status, url=page.url) from None
            log_request(spec.method, page, len(records))
            guard.records(records, number, page.url)
            try:
                more, stop = _has_next(walker, pagination, page, records, guard, number, truncated), None
            except FetchError as exc:  # a loop, or a total that is not a number: after this page's records
                more, stop = False, exc
            upcoming = pool.submit(walker.request) if more and pool is not None else None
            yield page, records
            if stop is not None:
                raise stop
            if not more:
                return
            page = upcoming.result() if upcoming is not None else walker.request()
            number += 1


def _has_next(
    walker: _Walker,
    pagination: Pagination,
    page: Page,
    records: list,
    guard: LoopGuard,
    number: int,
    truncated: Callable[[str], None],
) -> bool:
    """Whether another page follows (and, if so, the walker is set up to request it)."""
    if not records and pagination.stop_on_empty:
        return False
    if pagination.has_more is not None and not is_truthy(walker.read(pagination.has_more, page)):
        return False
    if not walker.advance(page, records, guard):
        return False
    if pagination.max_pages is not None and number >= pagination.max_pages:
        truncated(
            f"{walker.spec.method} {page.url}: stopped after max_pages={pagination.max_pages}, before the last page"
        )
        return False
    return True


def log_request(method: str, page: Page, records: int) -> None:
    retries = page.attempts - 1
    suffix = f", {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    log.info(
        "%s %s -> %d in %.0f ms, %d record%s%s",
        method,
        page.url,
        page.status,
        page.elapsed_ms,
        records,
        "" if records == 1 else "s",
        suffix,
    )


class _Walker:
    """The state of one pagination: which request comes next."""

    def __init__(self, client: HttpClient, spec: RequestSpec, pagination: Pagination, scope: Scope):
        self.client, self.spec, self.pagination = client, spec, pagination
        self.kind = pagination.kind
        self.size = None
        if pagination.size is not None:
            size = pagination.size.evaluate(scope)
            try:
                self.size = int(size)
            except (TypeError, ValueError):
                raise FetchError(f"the page size ({pagination.size.source}) is {size!r}, not a whole number") from None
        self.values: dict[str, Any] = {
            "offset": pagination.start if self.kind == "offset" else None,
            "limit": self.size if self.kind == "offset" else None,
            "page": pagination.start if self.kind == "page" else None,
            "size": self.size if self.kind != "offset" else None,
            "cursor": None,
        }
        self.scope = scope
        self.url: str | None = None  # the next page's URL (next_url, link_header)

    def first(self, page: Page, guard: LoopGuard) -> None:
        """Note where pagination started, so coming back to it is caught too."""
        if self.kind == "offset":
            guard.visit("offset", self.values["offset"], str(self.values["offset"]), page.url)
        elif self.kind == "page":
            guard.visit("page", self.values["page"], str(self.values["page"]), page.url)
        elif self.kind in ("next_url", "link_header"):
            guard.visit("URL", page.request_url, page.url, page.url)

    def read(self, expression: Value, page: Page) -> Any:
        return expression.evaluate(Scope(page.body, {}, self.scope.options))

    def request(self) -> Page:
        p = self.pagination
        if self.kind == "none":
            return fetch(self.client, self.spec, self.scope)
        names = {
            "offset": p.offset_param,
            "limit": p.limit_param,
            "page": p.page_param,
            "size": p.size_param,
            "cursor": p.cursor_param,
        }
        paging = {name: v for k, v in self.values.items() if (name := names.get(k))}
        scope = Scope(self.scope.root, {**self.scope.variables, "paging": dict(self.values)}, self.scope.options)
        place = "variables" if self.spec.graphql is not None else p.place
        return fetch(self.client, self.spec, scope, paging=paging if not self.url else {}, place=place, url=self.url)

    def advance(self, page: Page, records: list, guard: LoopGuard) -> bool:
        """Work out the next request; False when this was the last page."""
        p, values = self.pagination, self.values
        if self.kind == "none":
            return False
        if self.kind == "offset":
            values["offset"] += len(records)
            guard.visit("offset", values["offset"], str(values["offset"]), page.url)
            total = self.read(p.total, page) if p.total is not None else None
            _check_number(total, p.total, page, self.spec.method, "the total")
            if total is not None:
                return values["offset"] < total
            return self.size is None or len(records) >= self.size
        if self.kind == "page":
            total_pages = self.read(p.total_pages, page) if p.total_pages is not None else None
            _check_number(total_pages, p.total_pages, page, self.spec.method, "the page count")
            if total_pages is not None and values["page"] - p.start + 1 >= total_pages:
                return False
            if total_pages is None and self.size is not None and len(records) < self.size:
                return False
            values["page"] += 1
            guard.visit("page", values["page"], str(values["page"]), page.url)
            return True
        if self.kind in ("cursor", "graphql_cursor"):
            if self.kind == "graphql_cursor":
                assert p.page_info is not None  # required for this kind (compile checks it)
                info = self.read(p.page_info, page)
                if not isinstance(info, dict):
                    raise FetchError(
                        f"{self.spec.method} {page.url}: page_info ({p.page_info.source}) is "
                        f"{json.dumps(info)}, not an object",
                        url=page.url,
                    )
                token = info.get("endCursor") if info.get("hasNextPage") else None
            else:
                assert p.cursor is not None  # required for this kind (compile checks it)
                token = self.read(p.cursor, page)
            if token in (None, ""):
                return False
            guard.visit("cursor", json.dumps(token, sort_keys=True), json.dumps(token), page.url)
            values["cursor"] = token
            return True
        if self.kind == "next_url":
            assert p.next_url is not None  # required for this kind (compile checks it)
            target = self.read(p.next_url, page)
        else:  # link_header
            target = _next_link(page.headers.get("Link"))
        if not target:
            return False
        if not isinstance(target, str):
            raise FetchError(
                f"{self.spec.method} {page.url}: the next page's URL is {json.dumps(target)}, not a string",
                url=page.url,
            )
        self.url = urljoin(page.request_url if self.kind == "link_header" else self.client.base_url + "/", target)
        guard.visit("URL", self.url, self.client.redactor(self.url), page.url)
        return True


def _next_link(header: str | None) -> str | None:
    """The rel="next" target of an RFC 8288 ``Link`` header."""
    if not header:
        return None
    for link in requests.utils.parse_header_links(header):
        if "next" in link.get("rel", "").split():
            return link.get("url")
    return None


def _check_number(value: Any, expression, page: Page, method: str, what: str) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise FetchError(
            f"{method} {page.url}: {what} ({expression.source}) is {json.dumps(value)[:80]}, not a number", url=page.url
        )
