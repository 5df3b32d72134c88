"""A generic HR / people-directory API look-alike, served for the example mapping
``mappings/examples/people.yaml`` (a made-up but typical JSON REST API, like the
directories of most HR systems):

* ``Authorization: Bearer <token>``; a missing or wrong token gets
  401 ``{"error": "unauthorized", "message": "invalid or expired API token"}``;
* ``GET /v1/departments`` -> ``{"departments": [{"id", "name", "cost_center"}]}`` (no paging);
* ``GET /v1/people?page=N&per_page=M`` (page from 1, per_page at most 100, default 25) ->
  ``{"people": [...], "page": N, "per_page": M, "next_page": N + 1 or null}``. A person is
  ``{"id", "first_name", "last_name", "display_name", "email", "title", "department_id",
  "department", "manager_id", "manager_email", "employment_type", "active", "start_date",
  "end_date", "work_phone", "location"}``; emails are as HR typed them (mixed case).

The directory lines up with the bundled cassettes of the vendor mappings: Alice and Bob are
NowSecure users (``alice@example.com``, ``bob@example.com``); Carol, NowSecure's inactive
user, has left and is not in the directory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .server import LocalApi, Request, Response

API_TOKEN = "fake-people-token-0123456789abcdef"  # a test value, never a real token
ROOT = "/v1"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25

RESPONSE_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Server": "nginx",
    "Cache-Control": "no-store",
    "X-RateLimit-Limit": "600",
    "Date": "Mon, 23 Nov 2026 09:00:00 GMT",
}

DEPARTMENTS = [
    {"id": "D-01", "name": "Executive", "cost_center": "CC-01"},
    {"id": "D-10", "name": "Security", "cost_center": "CC-42"},
    {"id": "D-20", "name": "Engineering", "cost_center": "CC-20"},
    {"id": "D-30", "name": "Finance", "cost_center": "CC-30"},
]
_DEPARTMENT_NAMES = {d["id"]: d["name"] for d in DEPARTMENTS}


def _person(pid, first, last, email, title, department_id, manager=None, **extra):
    person = {
        "id": pid,
        "first_name": first,
        "last_name": last,
        "display_name": f"{first} {last}",
        "email": email,
        "title": title,
        "department_id": department_id,
        "department": _DEPARTMENT_NAMES[department_id],
        "manager_id": manager[0] if manager else None,
        "manager_email": manager[1] if manager else None,
        "employment_type": "employee",
        "active": True,
        "start_date": "2020-01-06",
        "end_date": None,
        "work_phone": None,
        "location": "Remote",
    }
    person.update(extra)
    return person


DANA = ("E1000", "dana.chief@example.com")
ALICE = ("E1001", "alice@example.com")
FRANK = ("E1004", "frank.lead@example.com")

PEOPLE = [
    _person(
        "E1000",
        "Dana",
        "Chief",
        "dana.chief@example.com",
        "Chief Executive Officer",
        "D-01",
        start_date="2015-03-02",
        work_phone="+1 555 0100",
        location="New York",
    ),
    _person(
        "E1001",
        "Alice",
        "Example",
        "alice@example.com",
        "Head of Security",
        "D-10",
        DANA,
        start_date="2018-09-17",
        work_phone="+1 555 0101",
        location="New York",
    ),
    # HR typed this address with capitals; the mapping lower-cases it.
    _person("E1002", "Bob", "Analyst", "Bob@Example.com", "Security Analyst", "D-10", ALICE, start_date="2021-02-01"),
    _person(
        "E1003",
        "Erin",
        "Engineer",
        "erin.engineer@example.com",
        "Mobile Engineer",
        "D-20",
        FRANK,
        start_date="2022-05-09",
        location="Lisbon",
    ),
    _person(
        "E1004",
        "Frank",
        "Lead",
        "frank.lead@example.com",
        "Engineering Manager",
        "D-20",
        DANA,
        start_date="2017-11-20",
        work_phone="+1 555 0104",
    ),
    _person(
        "E1005",
        "Grace",
        "Contractor",
        "grace@contractor.example.net",
        "Penetration Tester",
        "D-10",
        ALICE,
        employment_type="contractor",
        start_date="2026-06-01",
    ),
    _person(
        "E1006",
        "Henry",
        "Former",
        "henry.former@example.com",
        "Accountant",
        "D-30",
        DANA,
        active=False,
        start_date="2019-04-01",
        end_date="2025-12-31",
        location="New York",
    ),
]


@dataclass
class PeopleData:
    departments: list = field(default_factory=lambda: copy.deepcopy(DEPARTMENTS))
    people: list = field(default_factory=lambda: copy.deepcopy(PEOPLE))


def install(api: LocalApi, data: PeopleData | None = None, token: str = API_TOKEN) -> PeopleData:
    """Serve the directory from ``data`` on ``api`` under /v1."""
    data = data or PeopleData()
    api.default_headers = dict(RESPONSE_HEADERS)

    def authorized(handler):
        def wrapped(request: Request, **kwargs) -> Response:
            if request.headers.get("authorization") != f"Bearer {token}":
                return Response(401, {"error": "unauthorized", "message": "invalid or expired API token"})
            return handler(request, **kwargs)

        return wrapped

    def people(request: Request) -> Response:
        try:
            page = int(request.query.get("page", 1))
            per_page = min(int(request.query.get("per_page", DEFAULT_PER_PAGE)), MAX_PER_PAGE)
        except ValueError:
            return Response(400, {"error": "bad_request", "message": "page and per_page must be integers"})
        if page < 1 or per_page < 1:
            return Response(400, {"error": "bad_request", "message": "page and per_page start at 1"})
        start = (page - 1) * per_page
        items = data.people[start : start + per_page]
        more = start + per_page < len(data.people)
        return Response(
            200, {"people": items, "page": page, "per_page": per_page, "next_page": page + 1 if more else None}
        )

    api.route(
        "GET", f"{ROOT}/departments", authorized(lambda request: Response(200, {"departments": data.departments}))
    )
    api.route("GET", f"{ROOT}/people", authorized(people))
    api.route(
        "GET",
        f"{ROOT}/.*",
        authorized(lambda request: Response(404, {"error": "not_found", "message": "no such route"})),
    )
    return data
