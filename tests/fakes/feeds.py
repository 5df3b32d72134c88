"""A local look-alike of list APIs that answer in other shapes than one JSON object per page:
CSV and XML files, an incremental feed, totals and cursors in headers, search APIs paged
through the POST body.

``FeedApi(items)`` serves ``items`` (``{"id", "name", "updated_at", ...}``):

=============================== ==================================================================
``GET /items.csv``              a CSV file (``csv_body`` may replace it)
``GET /items.xml``              an XML file ``<items><item id=".."><name>..</name>..</item></items>``
``GET /items``                  JSON; ``?updated_since=T`` keeps the items updated after T
``GET /list``                   a bare JSON list; ``offset``/``limit``, ``X-Total-Count``; or
                                ``cursor``/``limit`` and ``X-Next-Cursor`` (``cursor_style``)
``POST /search``                ``{"from", "size"}`` or ``{"search_after", "size"}`` in the body ->
                                ``{"hits": {"total": {"value"}, "hits": [{"_source", "sort"}]}}``
=============================== ==================================================================
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape, quoteattr

from .server import LocalApi, Request, Response


def make_items(count: int) -> list[dict]:
    return [
        {"id": i, "name": f"item {i}", "updated_at": f"2026-01-{i:02d}T00:00:00Z", "score": i / 2, "active": i % 2 == 0}
        for i in range(1, count + 1)
    ]


def csv_of(items: list[dict]) -> str:
    lines = ["id,name,updated_at,score,active"]
    lines += [
        f"{i['id']},{i['name']},{i['updated_at']},{i['score']},{'true' if i['active'] else 'false'}" for i in items
    ]
    return "\n".join(lines) + "\n"


def xml_of(items: list[dict]) -> str:
    rows = "".join(
        f"  <item id={quoteattr(str(i['id']))}><name>{escape(i['name'])}</name>"
        f"<updated>{i['updated_at']}</updated><tag>a</tag><tag>b</tag></item>\n"
        for i in items
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<items xmlns="urn:example:items">\n{rows}</items>\n'


class FeedApi(LocalApi):
    def __init__(self, items: list[dict] | None = None):
        super().__init__()
        self.items = items if items is not None else make_items(23)
        self.csv_body: bytes | None = None
        self.xml_body: bytes | None = None
        self.cursor_style = False  # /list: cursor and X-Next-Cursor instead of offset and X-Total-Count
        self.reported_total: int | None = None
        self.route("GET", "/items.csv", self.csv)
        self.route("GET", "/items.xml", self.xml)
        self.route("GET", "/items", self.feed)
        self.route("GET", "/list", self.listing)
        self.route("POST", "/search", self.search)

    def csv(self, request: Request) -> Response:
        body = self.csv_body if self.csv_body is not None else csv_of(self.items).encode()
        return Response(200, body, headers={"Content-Type": "text/csv; charset=utf-8"})

    def xml(self, request: Request) -> Response:
        body = self.xml_body if self.xml_body is not None else xml_of(self.items).encode()
        return Response(200, body, headers={"Content-Type": "application/xml"})

    def feed(self, request: Request) -> Response:
        since = request.query.get("updated_since")
        items = [i for i in self.items if since is None or i["updated_at"] > since]
        return Response(200, {"items": items})

    def listing(self, request: Request) -> Response:
        limit = int(request.query.get("limit", "10"))
        if self.cursor_style:
            start = int(request.query.get("cursor", "0") or 0)
            page = self.items[start : start + limit]
            headers = {"X-Next-Cursor": str(start + limit)} if start + limit < len(self.items) else {}
            return Response(200, page, headers=headers)
        offset = int(request.query.get("offset", "0"))
        total = len(self.items) if self.reported_total is None else self.reported_total
        return Response(200, self.items[offset : offset + limit], headers={"X-Total-Count": str(total)})

    def search(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        size = int(body.get("size", 10))
        ordered = sorted(self.items, key=lambda i: (i["updated_at"], i["id"]))
        if "search_after" in body:
            after = tuple(body["search_after"])
            ordered = [i for i in ordered if (i["updated_at"], i["id"]) > after]
            start = 0
        else:
            start = int(body.get("from", 0))
        page = ordered[start : start + size]
        hits = [{"_id": str(i["id"]), "_source": i, "sort": [i["updated_at"], i["id"]]} for i in page]
        return Response(200, {"hits": {"total": {"value": len(self.items), "relation": "eq"}, "hits": hits}})
