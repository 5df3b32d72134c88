"""Local look-alikes of APIs whose data is a tree, or split between accounts.

``WorkspaceApi`` serves an organisation -> project -> issue tree (bearer token ``TOKEN``):

=================================================== =============================================
``GET /orgs``                                       ``{"orgs": [{"id", "name"}]}``
``GET /orgs/{org}/projects?page=N&per_page=M``      ``{"projects": [...], "meta": {"total_pages"}}``
``GET /orgs/{org}/projects/{project}/issues``       ``{"issues": [{"id"}]}`` (ids only; 404 when the
                                                    project is not the organisation's)
``GET /issues/{id}``                                ``{"issue": {"id", "title", "severity", ...}}``
=================================================== =============================================

``RegionApi`` is one region of a multi-account API: ``GET /users?page=N`` answers the users of
the account named by the ``X-Account`` header or the ``account`` query parameter (bearer token
``TOKEN``), two per page,
``GET /users/{id}`` one of them as ``{"user": {...}}``, ``GET /t/{account}/users`` all of an
account named in the path, and
``GET /accounts`` (on the region that also plays the directory) lists every account with the
``apiUrl`` of its region.
"""

from __future__ import annotations

from .server import LocalApi, Request, Response

TOKEN = "tenant-token-4711"


def authorized(request: Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {TOKEN}"


UNAUTHORIZED = Response(401, {"error": "bad token"})


def account_of(request: Request) -> str | None:
    return request.headers.get("x-account") or request.query.get("account")


class WorkspaceApi(LocalApi):
    """Two organisations, each with projects, each with issues (``tree`` may replace them)."""

    def __init__(self) -> None:
        super().__init__()
        # org id -> project id -> issue ids
        self.tree: dict[str, dict[str, list[str]]] = {
            "o1": {"p1": ["I-1", "I-2"], "p2": ["I-3"], "p3": []},
            "o2": {"p4": ["I-4", "I-5", "I-6"]},
        }
        self.delays: dict[str, float] = {}  # issue id -> seconds its detail takes
        self.route("GET", "/orgs", self.orgs)
        self.route("GET", r"/orgs/(?P<org>[^/]+)/projects", self.projects)
        self.route("GET", r"/orgs/(?P<org>[^/]+)/projects/(?P<project>[^/]+)/issues", self.issues)
        self.route("GET", r"/issues/(?P<issue>[^/]+)", self.issue)

    def orgs(self, request: Request) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        return Response(200, {"orgs": [{"id": org, "name": f"Org {org}"} for org in self.tree]})

    def projects(self, request: Request, org: str) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        if org not in self.tree:
            return Response(404, {"error": f"no org {org}"})
        names = list(self.tree[org])
        page, size = int(request.query.get("page", "1")), int(request.query.get("per_page", "2"))
        chunk = names[(page - 1) * size : page * size]
        total_pages = max(1, -(-len(names) // size))
        projects = [{"id": p, "name": f"Project {p}"} for p in chunk]
        return Response(200, {"projects": projects, "meta": {"page": page, "total_pages": total_pages}})

    def issues(self, request: Request, org: str, project: str) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        if project not in self.tree.get(org, {}):
            return Response(404, {"error": f"no project {project} in org {org}"})
        return Response(200, {"issues": [{"id": issue} for issue in self.tree[org][project]]})

    def issue(self, request: Request, issue: str) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        for org, projects in self.tree.items():
            for project, issues in projects.items():
                if issue in issues:
                    number = int(issue.split("-")[1])
                    detail = {
                        "id": issue,
                        "title": f"Issue {number}",
                        "severity": "high" if number % 2 else "low",
                        "project": project,
                        "org": org,
                    }
                    return Response(200, {"issue": detail}, delay=self.delays.get(issue, 0.0))
        return Response(404, {"error": f"no issue {issue}"})


class RegionApi(LocalApi):
    """One region: ``accounts`` maps each account it hosts to its users' names."""

    def __init__(self, accounts: dict[str, list[str]]):
        super().__init__()
        self.accounts = accounts
        self.directory: list[dict] = []  # what GET /accounts lists (set by the test)
        self.route("GET", "/users", self.users)
        self.route("GET", r"/users/(?P<user>[^/]+)", self.user)
        self.route("GET", r"/t/(?P<tenant>[^/]+)/users", self.tenant_users)
        self.route("GET", "/accounts", self.listing)

    def listing(self, request: Request) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        return Response(200, {"accounts": self.directory})

    def users(self, request: Request) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        account = account_of(request)
        if account not in self.accounts:
            return Response(404, {"error": f"no account {account!r} in this region"})
        names = self.accounts[account]
        page = int(request.query.get("page", "1"))
        users = self.all_users(account)[(page - 1) * 2 : page * 2]
        return Response(200, {"users": users, "total_pages": max(1, -(-len(names) // 2))})

    def tenant_users(self, request: Request, tenant: str) -> Response:
        """The account named in the path (``/t/{account}/users``), all on one page."""
        if not authorized(request):
            return UNAUTHORIZED
        if tenant not in self.accounts:
            return Response(404, {"error": f"no account {tenant!r} in this region"})
        return Response(200, {"users": self.all_users(tenant), "total_pages": 1})

    def user(self, request: Request, user: str) -> Response:
        if not authorized(request):
            return UNAUTHORIZED
        account = account_of(request)
        found = [u for u in self.all_users(account) if u["id"] == user] if account in self.accounts else []
        if not found:
            return Response(404, {"error": f"no user {user} in account {account!r}"})
        return Response(200, {"user": {**found[0], "lastLogin": "2026-11-01T00:00:00Z"}})

    def all_users(self, account: str) -> list[dict]:
        names = self.accounts[account]
        return [
            {"id": f"u{n}", "name": name, "email": f"{name.lower()}@{account}.example"}
            for n, name in enumerate(names, 1)
        ]
