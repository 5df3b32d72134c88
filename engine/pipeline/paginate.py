"""Stage 3, continued: the requests a step makes, page after page.

:func:`paginate` knows every declared pagination kind and when each one ends, and guards
against the ways paginators fail to end: a token, URL, offset or page number that comes
back, or a page that repeats an earlier page's records, stops the step with a
:class:`PaginationLoopError` naming what repeated - never an endless run.

It also guards against ending too early, silently: a page without records (empty, without
its records key, a body of another shape) while the API's declared total says more exist,
and a total that shrinks during the run, are reported as truncations (the step's types
become partial); a template of a request that cannot be evaluated is a
:class:`RequestBuildError` naming its field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson
import requests

from ..errors import (
    AuthenticationError,
    BodyFormatError,
    FetchError,
    PaginationLoopError,
    RecordsError,
    RequestBuildError,
)
from ..lang.values import Scope, Value, is_truthy
from .build import describe
from .decode import DocumentList, Documents, body_of
from .fanout import Workers
from .fetch import AccountBase, HttpClient, Page
from .plan import Pagination, RequestSpec, ResponseFormat

log = logging.getLogger("etl.http")

TotalHook = Callable[[str, float], None]  # ("records" or "pages", the total a page declared)
BODY: Any = object()  # what a pagination expression reads by default: the page's body


def render_pairs(pairs, scope: Scope, where: str = "") -> dict[str, Any]:
    return {name: evaluate(value, scope, f"{where}.{name}") for name, value in pairs}


def render_text_pairs(pairs, scope: Scope, where: str = "") -> dict[str, str]:
    """Query parameters or headers: null leaves one out, booleans are true/false, the rest text.
    ``where`` (``request.params``) names them when one cannot be evaluated."""
    out = {}
    for name, value in pairs:
        result = evaluate(value, scope, f"{where}.{name}")
        if result is None:
            continue
        out[name] = ("true" if result else "false") if isinstance(result, bool) else str(result)
    return out


def evaluate(value: Value, scope: Scope, where: str) -> Any:
    """A template of a request; any failure is a :class:`RequestBuildError` naming ``where``."""
    try:
        return value.evaluate(scope)
    except Exception as exc:  # an undefined name, a null in text, a type error of an operator...
        raise RequestBuildError(f"cannot build the request ({value.source}): {describe(exc)}", field=where) from None


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
    response: ResponseFormat | None = None,
    spooled: bool = False,
    account: AccountBase | None = None,
) -> Page:
    """Make one request of a step (for an ``account``: :class:`~.fetch.AccountBase`).

    ``paging`` (offset, limit, cursor... under their parameter names) goes where ``place``
    says: the query string, headers, the JSON body, or nowhere ('path': the path template
    reads it); GraphQL requests take it as variables. ``url`` (a next-page link) replaces
    the path and query. GraphQL errors are failures even with HTTP 200.

    With ``response`` (a step's ``response`` format) the body is downloaded and decoded whole
    (``decode.py``) into the page's body: its documents (see :func:`read_page`). ``spooled``
    downloads it and leaves it undecoded, for the caller to stream from the page's ``file``.
    """
    paging = {k: v for k, v in (paging or {}).items() if v is not None}
    path = url or evaluate(spec.path, scope, "request.path")
    params = {} if url else render_text_pairs(spec.params, scope, "request.params")
    headers = render_text_pairs(spec.headers, scope, "request.headers")
    if spec.graphql is not None:
        variables = render_pairs(spec.variables, scope, "request.graphql.variables")
        body: Any = {"query": spec.graphql, "variables": {**variables, **paging}}
    else:
        body = evaluate(spec.body, scope, "request.body") if spec.body is not None else None
        if place == "query" and not url:
            params.update(paging)
        elif place == "header":
            headers.update({name: str(value) for name, value in paging.items()})
        elif place == "body" and paging:
            body = {**(body if isinstance(body, dict) else {}), **paging}
    if response is not None or spooled:
        page = client.download(spec.method, path, params=params, headers=headers, body=body, account=account)
        return page if response is None else read_page(page, response, client.source.max_response_bytes, spec.method)
    page = client.get_json(spec.method, path, params=params, headers=headers, body=body, account=account)
    if spec.graphql is not None:
        check_graphql(spec.method, page)
    return page


def read_page(page: Page, response: ResponseFormat, max_bytes: int, method: str) -> Page:
    """A downloaded page, decoded whole: its body is its documents (a list, for formats of
    many: JSON Lines, CSV, XML with ``element``, zip) or its one document (JSON, XML), and
    its ``notes`` what could not be read (rows or records skipped)."""
    notes: list[str] = []
    assert page.file is not None  # a download
    try:
        decoded = Documents(body_of(page, max_bytes), response, notes.append)
        documents = list(decoded)
    except BodyFormatError as exc:
        raise FetchError(f"{method} {page.url}: {exc}", status=page.status, url=page.url) from None
    finally:
        page.file.close()
    body = DocumentList(documents) if decoded.many else (documents[0] if documents else None)
    return dataclasses.replace(page, body=body, file=None, notes=tuple(notes))


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


REFUSED_STATUSES = (401, 403)


def validate_credentials(client: HttpClient, spec: RequestSpec, scope: Scope) -> None:
    """JupiterOne's validateInvocation: one cheap authenticated call before any step."""
    try:
        fetch(client, spec, scope)
    except AuthenticationError:
        raise
    except FetchError as exc:
        if exc.status in REFUSED_STATUSES:
            raise credentials_refused(exc) from None
        raise


def credentials_refused(error: FetchError) -> AuthenticationError:
    """A 401 or 403 that means the source's credentials were refused (the ``validate`` call's,
    or the first request to a source that has none), as the run-ending error users see."""
    return AuthenticationError(
        f"authentication failed: {error} - check the API credentials in the config",
        status=error.status,
        url=error.url,
        body=error.body,
    )


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
        digest = hashlib.sha256(_canonical(sample)).digest()
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
    warn: Callable[[str], None] = lambda message: None,
    total_known: TotalHook | None = None,
    response: ResponseFormat | None = None,
    account: AccountBase | None = None,
) -> Iterator[tuple[Page, list]]:
    """Yield ``(page, records)`` for every page of a step's request (or of one fan-out child).

    ``select`` turns a page body into its records (the extract stage); offset pagination
    advances by the number of records each page really held. ``truncated`` hears about
    every stop before the data's end: at ``max_pages`` while the API had more, and at a page
    without records (empty, no records key, a body of the wrong shape) while the declared
    total (offset ``total``, page ``total_pages``, a Link header's ``rel="last"``) says more
    exist; also a total that shrinks during the run (records were skipped). ``warn`` hears
    about a total that grows. With ``prefetch`` the next page is requested (in one daemon
    thread, see :class:`~.fanout.Workers`) while the caller works on this one.

    ``total_known`` (for a progress display) hears ``("records", total)`` (offset ``total``)
    or ``("pages", page count)`` (page ``total_pages``) when the API first declares its total,
    before that page is yielded, and again only when it changes: at most once per page, on
    the caller's thread.

    With ``response`` (a step's format other than JSON) each page is downloaded and decoded
    whole (:func:`read_page`); ``select`` gets its body. With ``account`` the requests are an
    account's (:class:`AccountBase`).
    """
    walker = _Walker(client, spec, pagination, scope, truncated, warn, total_known, response)
    walker.account = account
    guard = LoopGuard()
    page = walker.request()
    walker.first(page, guard)
    number = 1
    pool = Workers(1, "etl-prefetch") if prefetch else None
    try:
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
    finally:
        if pool is not None:
            pool.shutdown()  # never waits: a prefetch blocked in a read must not hold up Ctrl-C


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
        walker.ran_out(page)
        return False
    if pagination.has_more is not None and not is_truthy(walker.read(pagination.has_more, page, "has_more")):
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
    """The state of one pagination: which request comes next, and what the API said its total is."""

    def __init__(
        self,
        client: HttpClient,
        spec: RequestSpec,
        pagination: Pagination,
        scope: Scope,
        truncated: Callable[[str], None],
        warn: Callable[[str], None],
        total_known: TotalHook | None = None,
        response: ResponseFormat | None = None,
    ):
        self.client, self.spec, self.pagination = client, spec, pagination
        self.response = response
        self.truncated, self.warn, self.total_known = truncated, warn, total_known
        self.kind = pagination.kind
        self.size = None
        if pagination.size is not None:
            where = "pagination.limit" if self.kind == "offset" else "pagination.size"
            size = evaluate(pagination.size, scope, where)
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
            "after": None,
        }
        self.scope = scope
        self.url: str | None = None  # the next page's URL (next_url, link_header)
        # The declared total: offset 'total' (records) or page 'total_pages' (pages).
        self.total_of: tuple[Value, str, str] | None = None  # (expression, its field, what it counts)
        if self.kind == "offset" and pagination.total is not None:
            self.total_of = (pagination.total, "total", "the total")
        elif self.kind == "page" and pagination.total_pages is not None:
            self.total_of = (pagination.total_pages, "total_pages", "the page count")
        self.total: int | float | None = None  # the last total a page declared
        self.account: AccountBase | None = None  # an account's base URL, headers and params

    def first(self, page: Page, guard: LoopGuard) -> None:
        """Note where pagination started, so coming back to it is caught too."""
        if self.kind == "offset":
            guard.visit("offset", self.values["offset"], str(self.values["offset"]), page.url)
        elif self.kind == "page":
            guard.visit("page", self.values["page"], str(self.values["page"]), page.url)
        elif self.kind in ("next_url", "link_header"):
            guard.visit("URL", page.request_url, page.url, page.url)

    def read(self, expression: Value, page: Page, name: str, root: Any = BODY) -> Any:
        """A pagination expression (``name``: its field) evaluated on a page's body (or on
        ``root``); ``{header: NAME}`` values read the page's headers."""
        try:
            scope = Scope(page.body if root is BODY else root, {"headers": page.headers}, self.scope.options)
            return expression.evaluate(scope)
        except Exception as exc:  # a function given the wrong type by an odd body
            raise FetchError(
                f"{self.spec.method} {page.url}: pagination.{name} ({expression.source}) failed on this page: "
                f"{describe(exc)}",
                url=page.url,
            ) from None

    def declared(self, page: Page) -> int | float | None:
        """The total this page declares, else the last one declared (None without either).
        A total that changes is told: growing is a warning, shrinking makes the data partial."""
        if self.total_of is None:
            return None
        expression, name, what = self.total_of
        value = self.read(expression, page, name)
        _check_number(value, expression, page, self.spec.method, what)
        if value is None:
            return self.total
        previous, self.total = self.total, value
        if value != previous and self.total_known is not None:
            self.total_known("records" if self.kind == "offset" else "pages", value)
        if previous is not None and value != previous:
            where = self.position()
            message = (
                f"{self.spec.method} {page.url}: {what} ({expression.source}) changed from {previous} to {value} "
                f"during the run (at {where})"
            )
            if value < previous:
                self.truncated(f"{message}: records may have been skipped")
            else:
                self.warn(f"{message}: records added meanwhile may be missing or repeated")
        return value

    def position(self) -> str:
        if self.kind == "offset":
            return f"offset {self.values['offset']}"
        return f"page {self.values['page']}"

    def ran_out(self, page: Page) -> None:
        """A page without records ends pagination: tell ``truncated`` if the API declared more."""
        shape = _shape(page.body)
        if self.kind == "offset":
            total = self.declared(page)
            offset = self.values["offset"]
            if total is not None and offset < total:
                assert self.total_of is not None
                self.truncated(
                    f"{self.spec.method} {page.url}: {shape} at offset {offset}, but the total "
                    f"({self.total_of[0].source}) is {total}: {_count(total - offset)} record(s) not received"
                )
        elif self.kind == "page":
            pages = self.declared(page)
            reached = self.values["page"] - self.pagination.start + 1
            if pages is not None and reached < pages:
                assert self.total_of is not None
                last = _count(self.pagination.start + pages - 1)
                self.truncated(
                    f"{self.spec.method} {page.url}: {shape} at page {self.values['page']}, but the page count "
                    f"({self.total_of[0].source}) is {pages}: pages {self.values['page']} to {last} brought no records"
                )
        elif self.kind == "link_header":
            links = _links(page.headers.get("Link"))
            final = links.get("last")
            if links.get("next") and final and urljoin(page.request_url, final) != page.request_url:
                self.truncated(
                    f"{self.spec.method} {page.url}: {shape}, but the Link header names a next page and a "
                    f"last page after this one"
                )

    def request(self) -> Page:
        p = self.pagination
        if self.kind == "none":
            return fetch(self.client, self.spec, self.scope, response=self.response, account=self.account)
        names = {
            "offset": p.offset_param,
            "limit": p.limit_param,
            "page": p.page_param,
            "size": p.size_param,
            "cursor": p.cursor_param,
            "after": p.after_param,
        }
        paging = {name: v for k, v in self.values.items() if (name := names.get(k))}
        scope = Scope(self.scope.root, {**self.scope.variables, "paging": dict(self.values)}, self.scope.options)
        place = "variables" if self.spec.graphql is not None else p.place
        return fetch(
            self.client,
            self.spec,
            scope,
            paging=paging if not self.url else {},
            place=place,
            url=self.url,
            response=self.response,
            account=self.account,
        )

    def advance(self, page: Page, records: list, guard: LoopGuard) -> bool:
        """Work out the next request; False when this was the last page."""
        p, values = self.pagination, self.values
        if self.kind == "none":
            return False
        if self.kind == "offset":
            total = self.declared(page)
            values["offset"] += len(records)
            guard.visit("offset", values["offset"], str(values["offset"]), page.url)
            if total is not None:
                return values["offset"] < total
            return self.size is None or len(records) >= self.size
        if self.kind == "page":
            total_pages = self.declared(page)
            if total_pages is not None and values["page"] - p.start + 1 >= total_pages:
                return False
            if total_pages is None and self.size is not None and len(records) < self.size:
                return False
            values["page"] += 1
            guard.visit("page", values["page"], str(values["page"]), page.url)
            return True
        if self.kind == "search_after":
            return self.search_after(page, records, guard)
        if self.kind in ("cursor", "graphql_cursor"):
            if self.kind == "graphql_cursor":
                assert p.page_info is not None  # required for this kind (compile checks it)
                info = self.read(p.page_info, page, "page_info")
                if not isinstance(info, dict):
                    raise FetchError(
                        f"{self.spec.method} {page.url}: page_info ({p.page_info.source}) is "
                        f"{json.dumps(info)}, not an object",
                        url=page.url,
                    )
                token = info.get("endCursor") if info.get("hasNextPage") else None
            else:
                assert p.cursor is not None  # required for this kind (compile checks it)
                token = self.read(p.cursor, page, "cursor")
            if token in (None, ""):
                return False
            guard.visit("cursor", json.dumps(token, sort_keys=True), json.dumps(token), page.url)
            values["cursor"] = token
            return True
        if self.kind == "next_url":
            assert p.next_url is not None  # required for this kind (compile checks it)
            target = self.read(p.next_url, page, "next_url")
        else:  # link_header
            target = _links(page.headers.get("Link")).get("next")
        if not target:
            return False
        if not isinstance(target, str):
            raise FetchError(
                f"{self.spec.method} {page.url}: the next page's URL is {json.dumps(target)}, not a string",
                url=page.url,
            )
        base_url = (self.account.base_url if self.account is not None else None) or self.client.base_url
        self.url = urljoin(page.request_url if self.kind == "link_header" else base_url.rstrip("/") + "/", target)
        guard.visit("URL", self.url, self.client.redactor(self.url), page.url)
        return True

    def search_after(self, page: Page, records: list, guard: LoopGuard) -> bool:
        """search_after: the next request carries the sort values of this page's last record;
        a page shorter than ``size`` (or one whose last record has no sort values) is the last."""
        assert self.pagination.after is not None  # defaulted when compiled
        if not records or (self.size is not None and len(records) < self.size):
            return False
        after = self.read(self.pagination.after, page, "after", root=records[-1])
        if after in (None, "", []):
            return False
        guard.visit("search_after", json.dumps(after, sort_keys=True), json.dumps(after)[:80], page.url)
        self.values["after"] = after
        return True


def _links(header: str | None) -> dict[str, str]:
    """The targets of an RFC 8288 ``Link`` header by relation (``next``, ``last``...)."""
    if not header:
        return {}
    out: dict[str, str] = {}
    for link in requests.utils.parse_header_links(header):
        for relation in link.get("rel", "").split():
            out.setdefault(relation, link.get("url", ""))
    return out


def _shape(body: Any) -> str:
    """What a page without records was, for messages."""
    if body is None:
        return "a null body"
    if isinstance(body, dict):
        return "an empty object as the body" if not body else "a page without records"
    if isinstance(body, list):
        return "a list as the body" if body else "an empty list as the body"
    return f"a body that is {type(body).__name__}"


def _count(value: int | float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _check_number(value: Any, expression, page: Page, method: str, what: str) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise FetchError(
            f"{method} {page.url}: {what} ({expression.source}) is {json.dumps(value)[:80]}, not a number", url=page.url
        )


def _canonical(value: Any) -> bytes:
    """``value`` as canonical JSON bytes, for comparing pages: orjson, or json where orjson refuses
    (text that is not valid UTF-8, such as a lone surrogate a JSON escape can produce)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=True).encode()
