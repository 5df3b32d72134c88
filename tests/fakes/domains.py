"""A generic DNS-hosting API look-alike, served for the example mapping
``mappings/examples/domains.yaml`` (a made-up but typical JSON REST API, shaped like the
zone and record APIs of most DNS providers):

* ``X-Api-Key: <key>``; a missing or wrong key gets
  401 ``{"error": {"code": "unauthorized", "message": "invalid API key"}}``;
* ``GET /v1/account`` -> ``{"id", "name", "email", "plan"}``;
* ``GET /v1/zones?page=N&per_page=M`` (page from 1, per_page at most 100, default 20) ->
  ``{"zones": [...], "page": N, "per_page": M, "total_pages": T, "total": Z}``; a zone is
  ``{"id", "name", "status", "type", "dnssec", "nameservers", "registrar", "auto_renew",
  "expires_at", "records_count", "created_at", "updated_at"}`` (``registrar``, ``auto_renew``
  and ``expires_at`` absent for a private zone);
* ``GET /v1/zones/{id}/records`` -> the whole zone, unpaged:
  ``{"zone_id", "zone_name", "records": [{"id", "zone_id", "zone_name", "name", "type",
  "content", "ttl", "priority", "created_at", "updated_at"}], "count": N}``; one record per
  value, ``name`` fully qualified (no trailing dot); 404 for an unknown zone.

The zones line up with the bundled DigiCert cassette: its certificates for ``www.example.com``,
``example.com``, ``example.org``, ``api.example.org`` and ``shop.example.com`` find their
names here; ``pending.example.com`` (not in DNS yet), ``checkout.example.com`` (a SAN with no
record) and ``old.example.net`` (decommissioned) deliberately do not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .server import LocalApi, Request, Response

API_KEY = "fake-dns-key-0123456789abcdef"  # a test value, never a real key
ROOT = "/v1"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20

RESPONSE_HEADERS = {
    "Content-Type": "application/json",
    "Server": "nginx",
    "Cache-Control": "private, max-age=0",
    "X-RateLimit-Limit": "1200",
    "Date": "Mon, 23 Nov 2026 09:00:00 GMT",
}

ACCOUNT = {"id": "acct-4821", "name": "Example Corp", "email": "hostmaster@example.com", "plan": "business"}

NAMESERVERS = ["ns1.dns.example.net", "ns2.dns.example.net"]


def _zone(zid, name, created, updated, **extra):
    zone = {
        "id": zid,
        "name": name,
        "status": "active",
        "type": "public",
        "dnssec": False,
        "nameservers": NAMESERVERS,
        "registrar": "Example Registrar, Inc.",
        "auto_renew": True,
        "expires_at": None,
        "records_count": 0,
        "created_at": created,
        "updated_at": updated,
    }
    zone.update(extra)
    if zone["type"] == "private":  # not registered anywhere: no registrar fields at all
        for name in ("registrar", "auto_renew", "expires_at"):
            del zone[name]
    return zone


ZONES = [
    _zone(
        "z-7d1f0a",
        "example.com",
        "2019-04-02T10:15:00Z",
        "2026-10-30T08:12:44Z",
        dnssec=True,
        expires_at="2027-08-13",
    ),
    _zone("z-2b9c4e", "example.org", "2020-07-21T16:40:00Z", "2026-03-11T10:20:31Z", expires_at="2027-01-20"),
    _zone(
        "z-5e3a91",
        "example.net",
        "2019-04-02T10:20:00Z",
        "2025-01-06T12:00:00Z",
        auto_renew=False,
        expires_at="2027-04-02",
    ),
    _zone("z-9a0d27", "corp.example", "2021-11-15T09:00:00Z", "2026-09-01T07:45:10Z", type="private"),
]


def _record(rid, zone, name, rtype, content, ttl=300, priority=None, created="2024-01-15T12:00:00Z", updated=None):
    return {
        "id": rid,
        "zone_id": zone["id"],
        "zone_name": zone["name"],
        "name": name,
        "type": rtype,
        "content": content,
        "ttl": ttl,
        "priority": priority,
        "created_at": created,
        "updated_at": updated or created,
    }


_COM, _ORG, _NET, _CORP = ZONES

RECORDS = {
    _COM["id"]: [
        _record("r-1001", _COM, "example.com", "NS", "ns1.dns.example.net", 86400, created="2019-04-02T10:15:00Z"),
        _record("r-1002", _COM, "example.com", "NS", "ns2.dns.example.net", 86400, created="2019-04-02T10:15:00Z"),
        _record("r-1003", _COM, "example.com", "A", "203.0.113.10"),
        _record("r-1004", _COM, "example.com", "MX", "mail.example.com", 3600, priority=10),
        _record("r-1005", _COM, "example.com", "TXT", "v=spf1 mx include:_spf.example.net -all", 3600),
        _record("r-1006", _COM, "example.com", "CAA", '0 issue "digicert.com"', 3600, created="2024-06-20T16:00:00Z"),
        _record("r-1007", _COM, "www.example.com", "CNAME", "example.com"),
        _record("r-1008", _COM, "shop.example.com", "A", "203.0.113.20", created="2025-02-14T07:30:00Z"),
        _record("r-1009", _COM, "shop.example.com", "AAAA", "2001:db8::20", created="2025-02-14T07:30:00Z"),
        _record("r-1010", _COM, "mail.example.com", "A", "203.0.113.25", 3600),
        _record("r-1011", _COM, "_dmarc.example.com", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com", 3600),
    ],
    _ORG["id"]: [
        _record("r-2001", _ORG, "example.org", "A", "198.51.100.7"),
        _record("r-2002", _ORG, "example.org", "A", "198.51.100.8"),
        _record("r-2003", _ORG, "api.example.org", "A", "198.51.100.20", 60, updated="2026-03-11T10:20:31Z"),
        _record("r-2004", _ORG, "*.example.org", "CNAME", "example.org"),
        _record("r-2005", _ORG, "example.org", "CAA", '0 issuewild "digicert.com"', 3600),
    ],
    _NET["id"]: [
        _record("r-3001", _NET, "example.net", "A", "192.0.2.50", created="2019-04-02T10:20:00Z"),
        _record("r-3002", _NET, "ns1.dns.example.net", "A", "192.0.2.53", 86400, created="2019-04-02T10:20:00Z"),
        _record("r-3003", _NET, "ns2.dns.example.net", "A", "192.0.2.54", 86400, created="2019-04-02T10:20:00Z"),
        _record("r-3004", _NET, "status.example.net", "CNAME", "status.example.org", 3600),
    ],
    _CORP["id"]: [
        _record("r-4001", _CORP, "vpn.corp.example", "A", "10.20.0.1", 600),
        _record("r-4002", _CORP, "wiki.corp.example", "A", "10.20.0.15", 600),
        _record("r-4003", _CORP, "wiki.corp.example", "AAAA", "fd00:20::15", 600),
    ],
}
for _each in ZONES:
    _each["records_count"] = len(RECORDS[_each["id"]])


@dataclass
class DnsData:
    account: dict = field(default_factory=lambda: copy.deepcopy(ACCOUNT))
    zones: list = field(default_factory=lambda: copy.deepcopy(ZONES))
    records: dict = field(default_factory=lambda: copy.deepcopy(RECORDS))


def error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def install(api: LocalApi, data: DnsData | None = None, api_key: str = API_KEY) -> DnsData:
    """Serve the DNS API from ``data`` on ``api`` under /v1."""
    data = data or DnsData()
    api.default_headers = dict(RESPONSE_HEADERS)

    def authorized(handler):
        def wrapped(request: Request, **kwargs) -> Response:
            if request.headers.get("x-api-key") != api_key:
                return error(401, "unauthorized", "invalid API key")
            return handler(request, **kwargs)

        return wrapped

    def zones(request: Request) -> Response:
        try:
            page = int(request.query.get("page", 1))
            per_page = min(int(request.query.get("per_page", DEFAULT_PER_PAGE)), MAX_PER_PAGE)
        except ValueError:
            return error(400, "bad_request", "page and per_page must be integers")
        if page < 1 or per_page < 1:
            return error(400, "bad_request", "page and per_page start at 1")
        start = (page - 1) * per_page
        total_pages = max(1, -(-len(data.zones) // per_page))
        body = {
            "zones": data.zones[start : start + per_page],
            "page": page,
            "per_page": per_page,
            "total_pages": total_pages,
            "total": len(data.zones),
        }
        return Response(200, body)

    def records(request: Request, zone_id: str) -> Response:
        zone = next((z for z in data.zones if z["id"] == zone_id), None)
        if zone is None:
            return error(404, "not_found", f"zone {zone_id} not found")
        items = data.records.get(zone_id, [])
        return Response(200, {"zone_id": zone_id, "zone_name": zone["name"], "records": items, "count": len(items)})

    api.route("GET", f"{ROOT}/account", authorized(lambda request: Response(200, data.account)))
    api.route("GET", f"{ROOT}/zones", authorized(zones))
    api.route("GET", f"{ROOT}/zones/(?P<zone_id>[^/]+)/records", authorized(records))
    api.route("GET", f"{ROOT}/.*", authorized(lambda request: error(404, "not_found", "no such route")))
    return data
