"""A DigiCert CertCentral Services API v2 look-alike, from DigiCert's API documentation.

Behaves like the real API where the engine can tell: ``X-DC-DEVKEY`` auth answered with
403 ``access_denied|access_denied_invalid_key``; offset/limit pagination with a ``page``
object (default and maximum limit 1000); the list key omitted when a page is empty;
fields omitted rather than null; pending orders without ``valid_till``/``days_remaining``;
both ``last_login_date`` formats; nginx/Imperva-style response headers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .server import LocalApi, Request, Response

API_KEY = "fake-digicert-key-0123456789abcdef"  # a test value, never a real key
ROOT = "/services/v2"
MAX_LIMIT = 1000

# Headers the real API sends (from JupiterOne's recordings), minus cookies.
RESPONSE_HEADERS = {
    "Content-Type": "application/json",
    "Server": "nginx",
    "Cache-Control": "private,no-cache",
    "Strict-Transport-Security": "max-age=31536000",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1; mode=block",
    "X-CDN": "Imperva",
    "Date": "Mon, 23 Nov 2026 09:00:00 GMT",
}

CONTAINER = {
    "id": 345678,
    "public_id": "0abc1def2ghi3jkl4mno5pqr6stu7vwx",
    "name": "Example Corp",
    "parent_id": 0,
    "template_id": 5,
    "ekey": "1a2b3c4d5e6f7g8h9i0j1k2l3m4n",
    "has_logo": False,
    "is_active": True,
}

ACCOUNT = {
    "id": 1234567,
    "primary_organization_id": 7654321,
    "primary_organization_name": "Example Corp",
    "primary_organization_country": "us",
    "make_renewal_calls": True,
    "express_install_enabled": False,
    "display_rep": True,
    "rep_photo_id": 0,
    "balance_negative_limit": 0,
    "root_container_id": 345678,
    "cert_transparency": "embed",
    "cert_central_type": "retail",
    "billing_account_id": 1234567,
    "billing_account_name": "Example Corp",
    "language_id": 1,
    "migrated": False,
    "has_auth_key": False,
    "client_mgr_photo_id": 0,
    "ent_support_plan": "1",
    "default_country": "us",
    "admin_email": "alice.admin@example.com, security@example.com",
}


def _user(uid, first, last, email, roles, **extra):
    user = {
        "id": uid,
        "username": email,
        "account_id": ACCOUNT["id"],
        "first_name": first,
        "last_name": last,
        "email": email,
        "status": "active",
        "container": CONTAINER,
        "access_roles": [{"id": rid, "name": name} for rid, name in roles],
        "type": "standard",
        "has_container_assignments": False,
    }
    user.update(extra)
    return user


USERS = [
    _user(
        2000001,
        "Alice",
        "Admin",
        "alice.admin@example.com",
        [(1, "Administrator")],
        job_title="Security Engineer",
        telephone="+15555550100",
        last_login_date="2023-10-13T15:15:13+00:00",
    ),
    _user(
        2000002,
        "Bob",
        "Finance",
        "bob.finance@example.com",
        [(3, "Finance Manager")],
        last_login_date="2020-05-01 15:47:26",
    ),
    _user(
        2000003,
        "Carol",
        "Manager",
        "carol.manager@example.com",
        [(2, "Manager"), (1, "Administrator")],
        job_title="IT Manager",
    ),
    _user(2000004, "Dan", "Departed", "dan.departed@example.com", [(4, "User")], status="inactive"),
    _user(
        2000005,
        "Erin",
        "Api",
        "erin.api@example.com",
        [(4, "User")],
        type="api",
        last_login_date="2024-11-02T08:30:00+00:00",
    ),
]


def _order(oid, cid, common_name, dns_names, status, created, product, **extra):
    certificate = {"id": cid, "common_name": common_name, "dns_names": dns_names, "signature_hash": "sha256"}
    certificate.update(extra.pop("certificate", {}))
    order = {
        "id": oid,
        "certificate": certificate,
        "status": status,
        "is_renewed": False,
        "date_created": created,
        "organization": {"id": 7654321, "name": "Example Corp"},
        "validity_years": 1,
        "disable_renewal_notifications": False,
        "container": {"id": 345678, "name": "Example Corp"},
        "product": product,
        "has_duplicates": False,
        "product_name_id": product["name_id"],
    }
    order.update(extra)
    return order


SSL_PLUS = {"name_id": "ssl_plus", "name": "Standard SSL", "type": "ssl_certificate"}
WILDCARD = {"name_id": "ssl_wildcard", "name": "Wildcard SSL", "type": "wildcard_ssl_certificate"}
BASIC_OV = {"name_id": "ssl_basic", "name": "Basic OV", "type": "ssl_certificate"}
EV_MULTI = {"name_id": "ssl_ev_multi_domain", "name": "EV Multi-Domain SSL", "type": "ev_ssl_certificate"}

ORDERS = [
    _order(
        100001,
        500001,
        "www.example.com",
        ["www.example.com", "example.com"],
        "issued",
        "2024-06-20T17:29:56+00:00",
        SSL_PLUS,
        certificate={"valid_till": "2025-06-30", "days_remaining": 180},
        custom_fields=[
            {"metadata_id": 112, "label": "Cost center", "value": "CC-42"},
            {"metadata_id": 113, "label": "Auto renew", "value": "true"},
        ],
    ),
    _order(
        100002, 500002, "pending.example.com", ["pending.example.com"], "pending", "2024-12-01T09:00:00+00:00", BASIC_OV
    ),
    _order(
        100003,
        500003,
        "*.example.org",
        ["*.example.org", "example.org", "api.example.org"],
        "issued",
        "2024-03-11T10:20:30+00:00",
        WILDCARD,
        is_renewed=True,
        certificate={"valid_till": "2026-04-11", "days_remaining": 139, "signature_hash": "sha384"},
        custom_fields=[{"metadata_id": 112, "label": "Cost center", "value": "1042"}],
    ),
    _order(
        100004,
        500004,
        "old.example.net",
        ["old.example.net"],
        "expired",
        "2022-01-05T12:00:00+00:00",
        SSL_PLUS,
        disable_renewal_notifications=True,
        certificate={"valid_till": "2023-01-05", "days_remaining": 0},
    ),
    _order(
        100005,
        500005,
        "shop.example.com",
        ["shop.example.com", "checkout.example.com", "www.example.com"],
        "issued",
        "2025-02-14T08:00:00+00:00",
        EV_MULTI,
        validity_years=2,
        has_duplicates=True,
        certificate={"valid_till": "2027-02-14", "days_remaining": 448},
    ),
]


@dataclass
class DigiCertData:
    account: dict = field(default_factory=lambda: copy.deepcopy(ACCOUNT))
    users: list = field(default_factory=lambda: copy.deepcopy(USERS))
    orders: list = field(default_factory=lambda: copy.deepcopy(ORDERS))
    forbidden: set = field(default_factory=set)  # paths answering 403 missing_permission


def error(status: int, code: str, message: str) -> Response:
    return Response(status, {"errors": [{"code": code, "message": message}]})


def install(api: LocalApi, data: DigiCertData | None = None, api_key: str = API_KEY) -> DigiCertData:
    """Serve DigiCert's API from ``data`` on ``api`` under /services/v2."""
    data = data or DigiCertData()
    api.default_headers = dict(RESPONSE_HEADERS)

    def authorized(handler):
        def wrapped(request: Request, **kwargs) -> Response:
            if request.headers.get("x-dc-devkey") != api_key:
                return error(
                    403, "access_denied|access_denied_invalid_key", "Access denied due to access_denied_invalid_key."
                )
            if request.path in data.forbidden:
                return error(403, "access_denied|missing_permission", "Access denied due to missing_permission.")
            return handler(request, **kwargs)

        return wrapped

    def listing(key: str, items_of):
        def handler(request: Request) -> Response:
            try:
                offset = int(request.query.get("offset", 0))
                limit = min(int(request.query.get("limit", MAX_LIMIT)), MAX_LIMIT)
            except ValueError:
                return error(400, "bad_request_format", "Invalid offset or limit.")
            items = items_of()
            body = {"page": {"total": len(items), "limit": limit, "offset": offset}}
            page = items[offset : offset + limit]
            if page:  # the real API leaves the list key out of an empty page
                body = {key: page, **body}
            return Response(200, body)

        return handler

    api.route("GET", f"{ROOT}/account", authorized(lambda request: Response(200, data.account)))
    api.route("GET", f"{ROOT}/user", authorized(listing("users", lambda: data.users)))
    api.route("GET", f"{ROOT}/order/certificate", authorized(listing("orders", lambda: data.orders)))
    api.route(
        "GET",
        f"{ROOT}/.*",
        authorized(lambda request: error(404, "not_found|route", "The specified route was not found.")),
    )
    return data
