"""A synthetic API for benchmarks: DigiCert- and NowSecure-shaped data at any size.

    python -m bench.server --certificates 60000 --users 50 --apps 240 --latency-ms 0 --vuln-latency-ms 50

Runs in its own process (so it never competes with the client for the GIL), listens on
127.0.0.1 on an ephemeral port, prints ``READY <port>`` and serves until killed:

* ``/services/v2/account``, ``/services/v2/user``, ``/services/v2/order/certificate``
  (offset/limit pages with ``page.total``, like DigiCert CertCentral);
* ``/account/user/``, ``/app/``, ``/resource/app/<ref>/vulnerability/`` (bare arrays,
  like NowSecure's lab API).

Pages are generated on the fly from the record number, so memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KEY = "bench-digicert-key"
TOKEN = "bench-nowsecure-token"


def order(i: int) -> dict:
    issued = i % 5 != 1
    certificate = {
        "id": 500000 + i,
        "common_name": f"host{i}.example.com",
        "dns_names": [f"host{i}.example.com", f"www.host{i}.example.com"],
        "signature_hash": "sha256",
    }
    if issued:
        certificate.update(valid_till="2027-06-30", days_remaining=200 + i % 300)
    record = {
        "id": 100000 + i,
        "certificate": certificate,
        "status": "issued" if issued else "pending",
        "is_renewed": i % 7 == 0,
        "date_created": "2024-06-20T17:29:56+00:00",
        "organization": {"id": 7654321, "name": "Example Corp"},
        "validity_years": 1,
        "disable_renewal_notifications": False,
        "container": {"id": 345678, "name": "Example Corp"},
        "product": {"name_id": "ssl_plus", "name": "Standard SSL", "type": "ssl_certificate"},
        "has_duplicates": False,
        "product_name_id": "ssl_plus",
    }
    if i % 3 == 0:
        record["custom_fields"] = [{"metadata_id": 112, "label": "Cost center", "value": f"CC-{i % 97}"}]
    return record


def user(i: int) -> dict:
    return {
        "id": 2000000 + i,
        "username": f"user{i}@example.com",
        "account_id": 1234567,
        "first_name": "User",
        "last_name": str(i),
        "email": f"user{i}@example.com",
        "status": "active",
        "access_roles": [{"id": 1, "name": "Administrator" if i % 10 == 0 else "User"}],
        "type": "standard",
        "container": {"id": 345678, "name": "Example Corp"},
        "has_container_assignments": False,
    }


ACCOUNT = {
    "id": 1234567,
    "primary_organization_id": 7654321,
    "primary_organization_name": "Example Corp",
    "admin_email": "admin@example.com",
    "cert_central_type": "retail",
}


def app(i: int) -> dict:
    return {
        "ref": f"00000000-0000-1000-8000-{i:012d}",
        "platform": "android" if i % 2 else "ios",
        "package": f"com.example.app{i}",
        "title": f"App {i}",
        "created": "2024-02-07T20:29:15.769Z",
    }


def vulnerabilities(i: int) -> list:
    return [
        {
            "unique_vulnerability_id": 900000000 + i * 10 + k,
            "finding_id": f"check_{k}",
            "finding_title": f"Check {k}",
            "opened_at": "2026-10-01T00:00:00.000Z",
            "last_seen_at": "2026-11-20T00:00:00.000Z",
            "last_seen_cvss": (k * 2.5) % 10,
            "closed_at": None,
            "opened_in_app_version": "1.0",
            "last_seen_in_app_version": "1.1",
            "closed_in_app_version": None,
        }
        for k in range(3)
    ]


def make_handler(args):
    @cache  # each page is built once: afterwards the server costs almost nothing
    def listing(kind: str, offset: int, limit: int) -> bytes:
        count = args.certificates if kind == "orders" else args.users
        make = order if kind == "orders" else user
        items = [make(i) for i in range(offset, min(offset + limit, count))]
        body = {"page": {"total": count, "limit": limit, "offset": offset}}
        if items:
            body = {kind: items, **body}
        return json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *a):
            pass

        def send(self, body: bytes, status: int = 200):
            self.send_response_only(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            path = parts.path
            if path.startswith("/services/v2/"):
                if args.latency_ms:
                    time.sleep(args.latency_ms / 1000)
                if self.headers.get("X-DC-DEVKEY") != KEY:
                    return self.send(b'{"errors":[{"code":"access_denied","message":"bad key"}]}', 403)
                offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 1000)), 1000)
                if path.endswith("/account"):
                    return self.send(json.dumps(ACCOUNT).encode())
                if path.endswith("/user"):
                    return self.send(listing("users", offset, limit))
                if path.endswith("/order/certificate"):
                    return self.send(listing("orders", offset, limit))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.send(b'{"message":"Unauthorized"}', 401)
            if path == "/account/user/":
                return self.send(
                    json.dumps(
                        [
                            {
                                **user(i),
                                "id": i,
                                "name": f"User {i}",
                                "created_at": "2023-01-10T14:03:22.512Z",
                                "updated_at": "2024-05-02T08:11:09.004Z",
                                "roles": [{"label": "Analyst"}],
                            }
                            for i in range(args.users)
                        ]
                    ).encode()
                )
            if path == "/app/":
                return self.send(json.dumps([app(i) for i in range(args.apps)]).encode())
            if path.startswith("/resource/app/"):
                time.sleep(args.vuln_latency_ms / 1000)
                ref = path.split("/")[3]
                return self.send(json.dumps(vulnerabilities(int(ref.rsplit("-", 1)[1]))).encode())
            return self.send(b'{"message":"Not Found"}', 404)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--certificates", type=int, default=60000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--apps", type=int, default=240)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every DigiCert request")
    parser.add_argument("--vuln-latency-ms", type=float, default=50.0, help="added to every vulnerability request")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args))
    server.daemon_threads = True
    server.request_queue_size = 128
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
