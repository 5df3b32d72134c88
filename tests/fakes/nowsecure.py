"""NowSecure look-alikes, from NowSecure's API documentation: the lab REST API
(``lab-api.nowsecure.com``: bare JSON arrays, no pagination, trailing slashes, Bearer auth,
401 ``{"message": "Unauthorized"}``, 429 with ``Retry-After``) and the platform GraphQL API
(``api.nowsecure.com/graphql``: POST ``{query, variables}``, ``{data, errors}`` envelope,
errors possible with HTTP 200, ``auto.applications(limit, offset)``).

Dates are relative to :data:`AS_OF`, the clock the cassettes are replayed with.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .server import LocalApi, Request, Response

API_TOKEN = "fake-nowsecure-token-0123456789abcdef"  # a test value, never a real token
AS_OF = "2026-11-23T09:00:00Z"
_NOW = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)

RESPONSE_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Server": "nginx",
    "Strict-Transport-Security": "max-age=15552000; includeSubDomains",
    "Date": "Mon, 23 Nov 2026 09:00:00 GMT",
}


def ago(days: float) -> str:
    """An ISO timestamp with milliseconds and Z, ``days`` before AS_OF."""
    return (_NOW - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


USERS = [
    {
        "id": 113,
        "ref": "5f0d3a2e-1c2b-4b7a-9a39-0c6f1b2a7e11",
        "name": "Alice Example",
        "email": "Alice@Example.com",
        "active": True,
        "organization_id": 105,
        "created_at": "2023-01-10T14:03:22.512Z",
        "updated_at": "2024-05-02T08:11:09.004Z",
        "deleted_at": None,
        "roles": [{"id": 6, "name": "org_admin", "label": "Organization Admin"}],
    },
    {
        "id": 114,
        "ref": "6a1e4b3f-2d3c-4c8b-8b4a-1d7f2c3b8f22",
        "name": "Bob Analyst",
        "email": "bob@example.com",
        "active": True,
        "organization_id": 105,
        "created_at": "2023-03-01T09:00:00.000Z",
        "updated_at": "2024-09-12T16:45:30.250Z",
        "deleted_at": None,
        "roles": [
            {"id": 2, "name": "analyst", "label": "Analyst"},
            {"id": 3, "name": "developer", "label": "Developer"},
        ],
    },
    {
        "id": 115,
        "ref": "7b2f5c40-3e4d-4d9c-9c5b-2e8a3d4c9a33",
        "name": "Carol Viewer",
        "email": "carol@example.com",
        "active": False,
        "organization_id": 105,
        "created_at": "2024-02-20T11:30:00.000Z",
        "updated_at": "2024-02-20T11:30:00.000Z",
        "deleted_at": None,
        "roles": [],
    },
]

ACCOUNT = "363df3a1-0e8b-4960-bb6e-000000000000"
GROUP = "376124c4-824b-485e-82d9-000000000000"


def _app(ref, platform, package, title, created):
    app = {
        "ref": ref,
        "account": ACCOUNT,
        "group": GROUP,
        "platform": platform,
        "package": package,
        "created": created,
        "archived_at": None,
        "config_level": "default",
        "binary": "3f8c0d6e9b1a2c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d",
        "test_runner_binary": None,
        "config": {},
    }
    if title is not None:
        app["title"] = title
    return app


APP_ANDROID = _app(
    "7f0ab7a2-2068-11ec-a8e7-000000000001",
    "android",
    "com.example.mobile",
    "Example Mobile",
    "2024-02-07T20:29:15.769Z",
)
APP_IOS = _app(
    "7f0ab7a2-2068-11ec-a8e7-000000000002", "ios", "com.example.mobile", "Example Mobile", "2024-02-08T10:00:00.000Z"
)
APP_NO_TITLE = _app(
    "7f0ab7a2-2068-11ec-a8e7-000000000003", "android", "com.example.notitle", None, "2024-06-01T12:00:00.000Z"
)
APP_EMPTY = _app(
    "7f0ab7a2-2068-11ec-a8e7-000000000004", "ios", "com.example.empty", "Empty App", "2025-01-15T08:00:00.000Z"
)
APPS = [APP_ANDROID, APP_IOS, APP_NO_TITLE, APP_EMPTY, copy.deepcopy(APP_ANDROID)]  # the API repeats a record


def _vuln(uid, finding_id, title, cvss, opened, last_seen, closed=None, versions=("3.4.0", "3.6.1")):
    return {
        "unique_vulnerability_id": uid,
        "finding_id": finding_id,
        "finding_title": title,
        "opened_at": opened,
        "last_seen_at": last_seen,
        "last_seen_cvss": cvss,
        "closed_at": closed,
        "opened_in_assessment_id": "6f1d2c3b-1111-11ef-9a0b-000000000001",
        "last_seen_in_assessment_id": "6f1d2c3b-2222-11ef-9a0b-000000000002",
        "closed_in_assessment_id": "6f1d2c3b-3333-11ef-9a0b-000000000003" if closed else None,
        "opened_in_app_version": versions[0],
        "last_seen_in_app_version": versions[1],
        "closed_in_app_version": versions[1] if closed else None,
    }


VULNERABILITIES = {
    APP_ANDROID["ref"]: [
        _vuln(918273645, "insecure_network_communication", "Insecure Network Communication", 7.4, ago(120), ago(2)),
        _vuln(918273646, "weak_crypto_hash", "Weak Hashing Algorithm", 5.3, ago(90), ago(10), closed=ago(10)),
        _vuln(918273647, "debug_flag_enabled", None, 0, ago(40), ago(3)),
        _vuln(918273648, "old_sdk_version", "Outdated SDK", 4.0, ago(400), ago(75)),  # outside a 30-day window
        _vuln(918273645, "insecure_network_communication", "Insecure Network Communication", 7.4, ago(120), ago(2)),
    ],
    APP_IOS["ref"]: [
        _vuln(
            918273700,
            "hardcoded_credentials",
            "Hardcoded Credentials",
            9.8,
            ago(30),
            ago(1),
            versions=("2.0.0", "2.1.0"),
        ),
        _vuln(
            918273701,
            "ats_disabled",
            "App Transport Security Disabled",
            6.5,
            ago(20),
            ago(1),
            versions=("2.0.0", "2.1.0"),
        ),
    ],
    APP_NO_TITLE["ref"]: [
        _vuln(
            918273800,
            "clipboard_exposure",
            "Sensitive Data on Clipboard",
            2.1,
            ago(15),
            ago(5),
            versions=("1.0.0", "1.0.0"),
        ),
    ],
    APP_EMPTY["ref"]: [],
}


def _finding(key, title, category, severity, cvss, uid, affected=True):
    return {
        "key": key,
        "checkId": key,
        "title": title,
        "category": category,
        "severity": severity,
        "cvss": cvss,
        "cvssVector": "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N" if cvss else None,
        "impactType": severity,
        "uniqueVulnerabilityId": uid,
        "affected": affected,
        "kind": "static",
    }


def _gql_app(app, assessment):
    return {
        "ref": app["ref"],
        "platformType": app["platform"],
        "packageKey": app["package"],
        "title": app.get("title"),
        "createdAt": app["created"],
        "group": {"ref": GROUP, "name": "Default"},
        "latestCompleteAssessment": assessment,
    }


def _assessment(ref, task, days, findings):
    return {
        "ref": ref,
        "taskId": str(task),
        "createdAt": ago(days),
        "score": 62.5,
        "packageVersion": "3.6.1",
        "report": {"findings": findings},
    }


GRAPHQL_APPS = [
    _gql_app(
        APP_ANDROID,
        _assessment(
            "00000000-0000-1000-8000-000000000101",
            4242,
            2,
            [
                _finding(
                    "insecure_network_communication",
                    "Insecure Network Communication",
                    "network",
                    "high",
                    7.4,
                    918273645,
                ),
                _finding("debug_flag_enabled", "Debug Flag Enabled", "code", "info", 0.0, 918273647),
                _finding(
                    "weak_crypto_hash", "Weak Hashing Algorithm", "crypto", "medium", 5.3, 918273646, affected=False
                ),
            ],
        ),
    ),
    _gql_app(
        APP_IOS,
        _assessment(
            "00000000-0000-1000-8000-000000000102",
            4243,
            1,
            [
                _finding("hardcoded_credentials", "Hardcoded Credentials", "secrets", "critical", 9.8, 918273700),
            ],
        ),
    ),
    _gql_app(
        APP_NO_TITLE,
        _assessment(
            "00000000-0000-1000-8000-000000000103",
            4244,
            5,
            [
                _finding("clipboard_exposure", "Sensitive Data on Clipboard", "privacy", "low", 2.1, 918273800),
            ],
        ),
    ),
    _gql_app(APP_EMPTY, None),  # no completed assessment yet
]


@dataclass
class NowSecureData:
    users: list = field(default_factory=lambda: copy.deepcopy(USERS))
    apps: list = field(default_factory=lambda: copy.deepcopy(APPS))
    vulnerabilities: dict = field(default_factory=lambda: copy.deepcopy(VULNERABILITIES))
    graphql_apps: list = field(default_factory=lambda: copy.deepcopy(GRAPHQL_APPS))


def install_lab(api: LocalApi, data: NowSecureData | None = None, token: str = API_TOKEN) -> NowSecureData:
    """Serve the lab REST API at the root of ``api``."""
    data = data or NowSecureData()
    api.default_headers = dict(RESPONSE_HEADERS)

    def authorized(handler):
        def wrapped(request: Request, **kwargs) -> Response:
            if request.headers.get("authorization") != f"Bearer {token}":
                return Response(401, {"message": "Unauthorized"})
            return handler(request, **kwargs)

        return wrapped

    def vulnerabilities(request: Request, ref: str) -> Response:
        if ref not in data.vulnerabilities:
            return Response(401, {"message": "Unauthorized access to application"})
        return Response(200, data.vulnerabilities[ref])

    api.route("GET", "/account/user/", authorized(lambda request: Response(200, data.users)))
    api.route("GET", "/app/", authorized(lambda request: Response(200, data.apps)))
    api.route("GET", r"/resource/app/(?P<ref>[^/]+)/vulnerability/", authorized(vulnerabilities))
    return data


def install_graphql(api: LocalApi, data: NowSecureData | None = None, token: str = API_TOKEN) -> NowSecureData:
    """Serve the platform GraphQL endpoint at ``/graphql`` of ``api``."""
    data = data or NowSecureData()
    api.default_headers = dict(RESPONSE_HEADERS)

    def graphql(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            return Response(401, {"message": "Unauthorized"})
        try:
            payload = json.loads(request.body)
            query, variables = payload["query"], payload.get("variables") or {}
        except (ValueError, KeyError):
            return Response(400, {"errors": [{"message": "Must provide query string."}]})
        if "applications" not in query:
            return Response(
                200,
                {
                    "data": None,
                    "errors": [
                        {"message": 'Cannot query field on type "Query".', "locations": [{"line": 1, "column": 3}]}
                    ],
                },
            )
        limit, offset = variables.get("limit"), variables.get("offset") or 0
        if limit is not None and not isinstance(limit, int):
            return Response(
                200,
                {
                    "data": None,
                    "errors": [
                        {
                            "message": f'Variable "$limit" got invalid value {json.dumps(limit)}; Int cannot represent '
                            f"non-integer value: {json.dumps(limit)}"
                        }
                    ],
                },
            )
        apps = data.graphql_apps[offset : offset + limit if limit is not None else None]
        return Response(200, {"data": {"auto": {"applications": apps}}})

    api.route("POST", "/graphql", graphql)
    return data
