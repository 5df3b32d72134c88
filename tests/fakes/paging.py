"""A configurable local API for the HTTP features of the engine: every pagination style, every
auth kind, and the faults real APIs have (cursors that repeat, links that point back, pages
served twice, totals that lie, tokens that expire).

``PagingApi(kind, total)`` is a :class:`~tests.fakes.server.LocalApi` serving ``total``
generated records ``{"id": i, "name": f"item {i}"}`` (i = 1..total) at ``/items`` in one
pagination style:

=============== ==================================================================================
``none``        ``GET /items`` -> ``{"items": [...every record...]}``
``offset``      ``offset``/``limit`` -> ``{"items", "meta": {"total", "offset", "limit"}, "has_more"}``
``page``        ``page``/``per_page`` -> ``{"items", "meta": {"page", "per_page", "total_pages",
                "total"}, "has_more"}``
``cursor``      ``cursor``/``limit`` -> ``{"items", "next_cursor", "has_more"}``; tokens ``after-N``
``next_url``    ``after``/``limit`` -> ``{"items", "links": {"next": "/items?after=N&limit=S"}}``
``link_header`` ``page``/``per_page`` -> a bare JSON list and ``Link: <...>; rel="next", ...``
``graphql_cursor`` ``POST /graphql``, variables ``first``/``after`` -> ``{"data": {"items":
                {"nodes", "pageInfo": {"hasNextPage", "endCursor"}}}}``
=============== ==================================================================================

Paging values are read wherever the client put them: the path (``/items/offset/<o>/limit/<l>``,
``/items/page/<p>`` and ``/items/page/<p>/size/<s>``), the query string, a header or the JSON
body (GraphQL: its ``variables``). Their names are ``api.names`` (per style, changeable).

Other routes: ``GET /account`` (one record, for a second step), ``GET /items/<id>/tags`` and
``GET /items/<id>/owners`` (fan-out children), ``POST /oauth/token`` (when ``api.oauth`` is set).

Knobs are plain attributes, read on every request, so a test may change them at any time.
Auth checks (``api.auth``, or ``api.oauth``) apply to every route but the token endpoint.
After ``request_limit`` data requests the API answers 410: a client that never stops
paginating fails (quickly) instead of hanging the test run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import yaml

from .server import LocalApi, Request, Response

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"

STYLES = ("none", "offset", "page", "cursor", "next_url", "link_header", "graphql_cursor")

# Where each style reads its paging values: role -> parameter name.
DEFAULT_NAMES = {
    "none": {},
    "offset": {"offset": "offset", "size": "limit"},
    "page": {"page": "page", "size": "per_page"},
    "cursor": {"cursor": "cursor", "size": "limit"},
    "next_url": {"after": "after", "size": "limit"},
    "link_header": {"page": "page", "size": "per_page"},
    "graphql_cursor": {"cursor": "after", "size": "first"},
}


def make_items(count: int) -> list[dict]:
    return [{"id": i, "name": f"item {i}"} for i in range(1, count + 1)]


def token_for(offset: int) -> str:
    """The cursor of the page that starts at ``offset``."""
    return f"after-{offset}"


class FakeClock:
    """A clock that only moves when someone sleeps on it (or a test advances it).

    Install it with ``monkeypatch.setattr(engine.http.clock, "sleep", clock.sleep)`` and
    ``monkeypatch.setattr(engine.http.clock, "monotonic", clock.monotonic)``. Each thread
    sleeps from the time it last read, so concurrent sleepers do not add up.
    """

    def __init__(self, start: float = 0.0):
        self.now = start
        self.sleeps: list[float] = []
        self._seen: dict[int, float] = {}
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            self._seen[threading.get_ident()] = self.now
            return self.now

    def time(self) -> float:
        return self.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            start = self._seen.get(threading.get_ident(), self.now)
            self.now = max(self.now, start + max(0.0, seconds))
            self._seen[threading.get_ident()] = self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


# -- auth checks: Request -> None when accepted, else the API's message for a 401 --------------

AuthCheck = Callable[[Request], "str | None"]


def require_bearer(token: str) -> AuthCheck:
    def check(request: Request) -> str | None:
        return None if request.headers.get("authorization") == f"Bearer {token}" else "invalid bearer token"

    return check


def require_basic(username: str, password: str) -> AuthCheck:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def check(request: Request) -> str | None:
        return None if request.headers.get("authorization") == expected else "invalid username or password"

    return check


def require_header(name: str, value: str) -> AuthCheck:
    def check(request: Request) -> str | None:
        return None if request.headers.get(name.lower()) == value else f"invalid or missing {name}"

    return check


def require_query(name: str, value: str) -> AuthCheck:
    def check(request: Request) -> str | None:
        return None if request.query.get(name) == value else f"invalid or missing {name}"

    return check


@dataclass
class OAuthServer:
    """An OAuth2 client-credentials token endpoint and the resource server's token check.

    Tokens expire ``expires_in`` seconds after issue on ``clock`` (when given), after
    ``max_uses`` API calls (when given), or at once (``reject_all``): the API then answers
    401 ``{"error": "invalid_token", "message": "the access token expired"}``. ``error``
    makes the token endpoint answer that response instead of issuing a token.
    """

    client_id: str
    client_secret: str
    client_auth: str = "body"  # 'body' (form fields) or 'basic' (Authorization header)
    scope: str | None = None  # required scope, when given
    params: dict[str, str] = field(default_factory=dict)  # other required form fields
    expires_in: int = 3600
    clock: FakeClock | None = None
    max_uses: int | None = None
    reject_all: bool = False
    error: Response | None = None
    issued: list[str] = field(default_factory=list)  # tokens, in issue order
    token_requests: list[dict] = field(default_factory=list)  # the forms received
    used: list[str] = field(default_factory=list)  # the token of every API call, accepted or not
    rejected: list[str] = field(default_factory=list)  # tokens the API answered 401 to
    _issued_at: dict[str, float] = field(default_factory=dict)
    _uses: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token_endpoint(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        with self._lock:
            self.token_requests.append(form)
        if self.error is not None:
            return self.error
        problem = self.check_client(request, form)
        if problem:
            return Response(
                400 if problem[0] != "invalid_client" else 401, {"error": problem[0], "error_description": problem[1]}
            )
        with self._lock:
            token = f"at-{secrets.token_hex(12)}-{len(self.issued) + 1}"
            self.issued.append(token)
            self._issued_at[token] = self.clock.now if self.clock else 0.0
            self._uses[token] = 0
        return Response(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def check_client(self, request: Request, form: dict) -> tuple[str, str] | None:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return "invalid_request", "the token request must be form-encoded"
        if form.get("grant_type") != "client_credentials":
            return "unsupported_grant_type", f"grant_type {form.get('grant_type')!r}"
        if self.client_auth == "basic":
            expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if request.headers.get("authorization") != expected or "client_secret" in form:
                return "invalid_client", "client authentication failed (expected HTTP Basic)"
        elif (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
            or "authorization" in request.headers
        ):
            return "invalid_client", "client authentication failed (expected form fields)"
        if self.scope is not None and form.get("scope") != self.scope:
            return "invalid_scope", f"scope {form.get('scope')!r}"
        for name, value in self.params.items():
            if form.get(name) != value:
                return "invalid_request", f"{name} {form.get(name)!r}"
        return None

    def check(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        with self._lock:
            self.used.append(token)
            problem = None
            if token not in self._uses:
                problem = "invalid access token"
            elif (
                self.reject_all
                or self.clock is not None
                and getattr(request, "arrived_at", self.clock.now) >= self._issued_at[token] + self.expires_in
                or self.max_uses is not None
                and self._uses[token] >= self.max_uses
            ):
                problem = "the access token expired"
            if problem:
                self.rejected.append(token)
            else:
                self._uses[token] += 1
            return problem


# -- the API -------------------------------------------------------------------------------------


class _Log(list):
    """LocalApi's request log, telling its owner about each request as it arrives."""

    def __init__(self, on_append: Callable[[Request], None]):
        super().__init__()
        self.on_append = on_append

    def append(self, request: Request) -> None:
        super().append(request)
        self.on_append(request)


class PagingApi(LocalApi):
    """See the module docstring. ``with PagingApi("cursor", 23) as api: ...``"""

    def __init__(self, kind: str = "offset", total: int = 23, *, default_size: int = 10):
        super().__init__()
        assert kind in STYLES, kind
        self.kind = kind
        self.items = make_items(total)
        self.names = dict(DEFAULT_NAMES[kind])
        self.default_size = default_size  # when the client sends no size
        self.max_size = 100
        self.first_page = 1  # number of the first page (page and link_header styles)

        # Faults and lies.
        self.reported_total: int | None = None  # meta.total says this instead of the truth
        self.reported_total_pages: int | None = None  # meta.total_pages says this
        self.has_more_until: int | None = None  # has_more is false from this page index on
        self.empty_pages: set[int] = set()  # page indices served without records (paging still advances)
        self.same_page = False  # every request gets the first page's records (pointers still advance)
        self.next_on_last_page = False  # cursor style: the last page still has a next_cursor
        self.end_cursor: str | None = None  # cursor style: the next_cursor of the last page (None or "")
        self.loop_back: tuple[int, int] | None = None  # (at, to): page index `at` points next to page `to`
        self.absolute_next = False  # next_url style: absolute next URLs (else relative to the host)

        # Auth, clock and safety.
        self.auth: AuthCheck | None = None
        self.oauth: OAuthServer | None = None
        self.token_path = "/oauth/token"
        self.clock: FakeClock | None = None  # when set, seen_at has its time at every request (not tokens)
        self.clock_step: Callable[[int], float] | float = 0.0  # then advance it by this (or step(n)) seconds
        self.seen_at: list[float] = []
        self.request_limit = 300
        self.data_requests = 0
        self._counter = threading.Lock()

        for method in ("GET", "POST"):
            self.route(method, "/items", self.guarded(self.items_page))
            self.route(
                method, r"/items/offset/(?P<offset>\d+)(?:/limit/(?P<limit>\d+))?", self.guarded(self.items_page)
            )
            self.route(method, r"/items/page/(?P<page>-?\d+)(?:/size/(?P<size>\d+))?", self.guarded(self.items_page))
        self.route("POST", "/graphql", self.guarded(self.graphql))
        self.route(
            "GET", "/account", self.guarded(lambda request: Response(200, {"id": "acct-1", "name": "Example account"}))
        )
        self.route(
            "GET",
            r"/items/(?P<item>\d+)/tags",
            self.guarded(
                lambda request, item: Response(
                    200, [{"id": f"{item}-{x}", "name": f"tag {x} of item {item}"} for x in ("a", "b")]
                )
            ),
        )
        self.route(
            "GET",
            r"/items/(?P<item>\d+)/owners",
            self.guarded(
                lambda request, item: Response(200, [{"id": f"owner-{item}", "name": f"owner of item {item}"}])
            ),
        )
        self.log = _Log(self._logged)
        self._matched_faults: list[tuple[str, dict, list[Response]]] = []

    # -- plumbing ----------------------------------------------------------------------------

    def __exit__(self, *exc) -> None:
        # serve_forever notices a shutdown only between polls (every 0.5 s): a connection
        # made just after the shutdown request wakes it at once.
        address = self._server.server_address[:2] if self._server else None

        def wake() -> None:
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.2).close()

        if address:
            threading.Timer(0.01, wake).start()
        super().__exit__(*exc)

    def fail_request(self, match: dict[str, str], *responses: Response, path: str = "/items") -> None:
        """The next requests to ``path`` whose query has all of ``match`` get these responses, in order
        (``fail_next`` of LocalApi fails the next requests whatever their query)."""
        with self._lock:
            self._matched_faults.append((path, dict(match), list(responses)))

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            for path, match, queue in self._matched_faults:
                if queue and request.path == path and all(request.query.get(k) == v for k, v in match.items()):
                    return queue.pop(0)
        if self.oauth is not None and request.path == self.token_path and request.method == "POST":
            return self.oauth.token_endpoint(request)
        return super()._dispatch(request)

    def guarded(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        """Auth and the runaway guard around a data route."""

        def wrapped(request: Request, **groups) -> Response:
            with self._counter:
                self.data_requests += 1
                number = self.data_requests
            if number > self.request_limit:
                return Response(410, {"message": f"the fake API stops after {self.request_limit} requests"})
            for check in (self.auth, self.oauth.check if self.oauth else None):
                problem = check(request) if check else None
                if problem:
                    return Response(
                        401, {"error": "invalid_token" if self.oauth else "unauthorized", "message": problem}
                    )
            return handler(request, **groups)

        return wrapped

    def _logged(self, request: Request) -> None:
        """Every request (faults included), as it arrives: the clock's time, then the clock's step."""
        if self.clock is None or request.path == self.token_path:
            return
        request.arrived_at = self.clock.now  # what the auth check sees, whatever the step
        self.seen_at.append(self.clock.now)
        step = self.clock_step(len(self.seen_at) - 1) if callable(self.clock_step) else self.clock_step
        if step:
            self.clock.advance(step)

    def data_log(self) -> list[Request]:
        """The requests for the paged records (not the token, account or child routes)."""
        if self.kind == "graphql_cursor":
            return [r for r in self.log if r.path == "/graphql"]
        return [r for r in self.log if r.path == "/items" or r.path.startswith(("/items/offset/", "/items/page/"))]

    @staticmethod
    def json_body(request: Request) -> Any:
        if not request.body:
            return None
        try:
            return json.loads(request.body)
        except ValueError:
            return None

    def param(self, request: Request, role: str, groups: dict) -> str | None:
        """A paging value, from the path, the query string, a header or the JSON body."""
        if groups.get(role) is not None:
            return groups[role]
        name = self.names.get(role, role)
        if name in request.query:
            return request.query[name]
        if name.lower() in request.headers:
            return request.headers[name.lower()]
        body = self.json_body(request)
        if isinstance(body, dict):
            source = body.get("variables") if request.path == "/graphql" else body
            if isinstance(source, dict) and source.get(name) is not None:
                return str(source[name])
        return None

    def size_of(self, request: Request, groups: dict) -> int:
        value = self.param(request, "size", groups)
        if groups.get("limit") is not None:
            value = groups["limit"]
        return min(self.max_size, int(value)) if value else self.default_size

    def window(self, offset: int, size: int) -> tuple[int, list[dict]]:
        """(page index, records) of the page at ``offset``."""
        index = offset // size if size else 0
        if index in self.empty_pages:
            return index, []
        start = 0 if self.same_page else offset
        return index, self.items[start : start + size]

    def next_offset(self, index: int, offset: int, size: int) -> int | None:
        """Where the next page starts, or None after the last one (``loop_back`` may lie)."""
        if self.loop_back is not None and index == self.loop_back[0]:
            return self.loop_back[1] * size
        following = offset + size
        return following if following < len(self.items) else None

    def has_more(self, index: int, following: int | None) -> bool:
        if self.has_more_until is not None and index >= self.has_more_until:
            return False
        return following is not None

    def bad_request(self, message: str) -> Response:
        return Response(400, {"message": message})

    # -- the styles --------------------------------------------------------------------------

    def items_page(
        self,
        request: Request,
        offset: str | None = None,
        limit: str | None = None,
        page: str | None = None,
        size: str | None = None,
    ) -> Response:
        groups = {"offset": offset, "limit": limit, "page": page, "size": size}
        kind = self.kind
        if kind == "none":
            return Response(200, {"items": self.items})
        try:
            size_ = self.size_of(request, groups)
            if kind == "offset":
                return self.offset_page(request, groups, size_)
            if kind in ("page", "link_header"):
                return self.numbered_page(request, groups, size_)
            if kind == "cursor":
                return self.cursor_page(request, groups, size_)
            if kind == "next_url":
                return self.next_url_page(request, groups, size_)
        except ValueError as exc:
            return self.bad_request(f"bad paging value: {exc}")
        return Response(404, {"message": f"no /items in the {kind} style"})

    def offset_page(self, request: Request, groups: dict, size: int) -> Response:
        offset = int(self.param(request, "offset", groups) or 0)
        index, records = self.window(offset, size)
        following = self.next_offset(index, offset, size)
        total = self.reported_total if self.reported_total is not None else len(self.items)
        return Response(
            200,
            {
                "items": records,
                "meta": {"total": total, "offset": offset, "limit": size},
                "has_more": self.has_more(index, following),
            },
        )

    def numbered_page(self, request: Request, groups: dict, size: int) -> Response:
        number = int(self.param(request, "page", groups) or self.first_page)
        if number < self.first_page:
            return self.bad_request(f"page {number} is before the first page, {self.first_page}")
        offset = (number - self.first_page) * size
        index, records = self.window(offset, size)
        following = self.next_offset(index, offset, size)
        pages = max(1, math.ceil(len(self.items) / size))
        if self.kind == "page":
            total_pages = self.reported_total_pages if self.reported_total_pages is not None else pages
            return Response(
                200,
                {
                    "items": records,
                    "meta": {"page": number, "per_page": size, "total_pages": total_pages, "total": len(self.items)},
                    "has_more": self.has_more(index, following),
                },
            )
        return Response(200, records, headers={"Link": self.link_header(number, following, size, pages)})

    def page_url(self, number: int, size: int) -> str:
        query = urlencode({self.names["page"]: number, self.names["size"]: size})
        return f"{self.url}/items?{query}"

    def link_header(self, number: int, following: int | None, size: int, pages: int) -> str:
        # rel="next" deliberately not first, as GitHub and others send it.
        links = [f'<{self.page_url(self.first_page, size)}>; rel="first"']
        if number > self.first_page:
            links.append(f'<{self.page_url(number - 1, size)}>; rel="prev"')
        if following is not None:
            links.append(f'<{self.page_url(self.first_page + following // size, size)}>; rel="next"')
        links.append(f'<{self.page_url(self.first_page + pages - 1, size)}>; rel="last"')
        return ", ".join(links)

    def offset_of_cursor(self, cursor: str | None) -> int:
        if cursor in (None, ""):
            return 0
        if not cursor.startswith("after-"):
            raise ValueError(f"cursor {cursor!r}")
        return int(cursor.removeprefix("after-"))

    def cursor_page(self, request: Request, groups: dict, size: int) -> Response:
        offset = self.offset_of_cursor(self.param(request, "cursor", groups))
        index, records = self.window(offset, size)
        following = self.next_offset(index, offset, size)
        if following is not None:
            next_cursor = token_for(following)
        elif self.next_on_last_page:
            next_cursor = token_for(offset + size)
        else:
            next_cursor = self.end_cursor
        return Response(
            200, {"items": records, "next_cursor": next_cursor, "has_more": self.has_more(index, following)}
        )

    def next_url_page(self, request: Request, groups: dict, size: int) -> Response:
        offset = int(self.param(request, "after", groups) or 0)
        index, records = self.window(offset, size)
        following = self.next_offset(index, offset, size)
        next_url = None
        if following is not None:
            next_url = f"/items?{urlencode({self.names['after']: following, self.names['size']: size})}"
            if self.absolute_next:
                next_url = self.url + next_url
        return Response(200, {"items": records, "links": {"next": next_url}})

    def graphql(self, request: Request) -> Response:
        if self.kind != "graphql_cursor":
            return Response(404, {"message": "no GraphQL here"})
        body = self.json_body(request)
        if not isinstance(body, dict) or "query" not in body:
            return Response(400, {"errors": [{"message": "a GraphQL request needs a query"}]})
        try:
            size = self.size_of(request, {})
            offset = self.offset_of_cursor(self.param(request, "cursor", {}))
        except ValueError as exc:
            return Response(200, {"data": None, "errors": [{"message": f"bad paging value: {exc}"}]})
        index, records = self.window(offset, size)
        following = self.next_offset(index, offset, size)
        # Like real GraphQL servers, endCursor is the last node's cursor even on the last page.
        end_cursor = token_for(following if following is not None else offset + len(records))
        return Response(
            200,
            {
                "data": {
                    "items": {
                        "nodes": records,
                        "pageInfo": {"hasNextPage": following is not None, "endCursor": end_cursor},
                    }
                }
            },
        )


# -- mappings for tests ----------------------------------------------------------------------------

ITEM_ENTITY = {
    "resource": "Item",
    "type": "example_item",
    "class": "Record",
    "key": "example_item:{{ record.id }}",
    "properties": {"name": "name", "itemId": "id"},
}

ACCOUNT_STEP = {
    "id": "fetch-account",
    "name": "Fetch the account",
    "request": {"path": "/account"},
    "entities": [
        {
            "resource": "Account",
            "type": "example_account",
            "class": "Account",
            "key": "example_account:{{ record.id }}",
            "properties": {"name": "name"},
        }
    ],
}


def item_mapping(
    pagination: dict | None = None,
    *,
    request: dict | None = None,
    records: str = "items",
    source: dict | None = None,
    config: dict | None = None,
    step: dict | None = None,
    steps_before: list[dict] = (),
    steps_after: list[dict] = (),
) -> dict:
    """A small mapping with one step building ``example_item`` entities from ``/items``."""
    item_step = {
        "id": "fetch-items",
        "name": "Fetch items",
        "request": request or {"path": "/items"},
        "records": records,
        "entities": [ITEM_ENTITY],
    }
    if pagination is not None:
        item_step["pagination"] = pagination
    item_step.update(step or {})
    src = {
        "base_url": "https://api.example.invalid",
        "timeout": 2,
        "retry": {"max_attempts": 3, "initial_delay": 0.5, "max_delay": 4},
    }
    src.update(source or {})
    data = {
        "version": 1,
        "integration": {"id": "example", "name": "Example"},
        "sources": {"api": src},
        "steps": [*steps_before, item_step, *steps_after],
    }
    if config:
        data["config"] = config
    return data


def tags_step(**changes) -> dict:
    """A fan-out step after ``item_mapping``'s: the tags of each example_item
    (``GET /items/<id>/tags``), as ``example_tag`` entities; ``changes`` replace its keys."""
    step = {
        "id": "fetch-tags",
        "name": "Fetch tags",
        "depends_on": ["fetch-items"],
        "for_each": "example_item",
        "request": {"path": "/items/{{ parent.itemId }}/tags"},
        "entities": [
            {
                "resource": "Tag",
                "type": "example_tag",
                "class": "Record",
                "key": "example_tag:{{ record.id }}",
                "properties": {"name": "name"},
            }
        ],
    }
    return {**step, **changes}


def write_mapping(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def item_ids(output: dict) -> list[int]:
    """The ``id`` of every example_item entity of a run's output, sorted."""
    return sorted(e["itemId"] for e in output["entities"] if e["_type"] == "example_item")


def step_status(output: dict, step_id: str) -> str:
    return next(s["status"] for s in output["summary"]["integrationStepResults"] if s["id"] == step_id)


def partial_types(output: dict) -> list[str]:
    return output["summary"]["metadata"]["partialDatasets"]["types"]


# -- a server that does not answer ------------------------------------------------------------------


@dataclass
class HeldResponse(Response):
    """A response held back until ``release`` is set (at most ``hold`` seconds): an API that
    stops answering in the middle of a run. ``arrived`` is set when the request reaches it.
    Queue it with ``fail_next`` or ``fail_request``; set ``release`` when the test ends, so
    the server's thread ends too (see :func:`ignore_disconnects`)."""

    hold: float = 60.0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def encoded(self) -> bytes:
        self.arrived.set()
        self.release.wait(self.hold)
        return super().encoded()


def ignore_disconnects(api: LocalApi) -> None:
    """Let ``api`` (started) answer a client that has gone away without printing a traceback:
    a held response released after its client process was stopped has nobody to write to."""
    assert api._server is not None, "start the server first"
    api._server.handle_error = lambda request, client_address: None
