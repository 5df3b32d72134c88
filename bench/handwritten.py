"""The no-framework limit: a hand-written DigiCert client doing the same work as
``etl run mappings/digicert.yaml`` - same requests, same entities, relationships and
mapped relationships, same output layout - with requests and plain dicts.

    python -m bench.handwritten --base-url http://127.0.0.1:PORT/services/v2 --output DIR

Written the way a competent developer would write a one-off integration: straight-line
code, one session, pages streamed, batches of 500 written as they fill.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid
from datetime import UTC, datetime

import requests

KEY = "bench-digicert-key"


def epoch_ms(text):
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class Writer:
    def __init__(self, root):
        self.root = root
        self.buffers = {}
        self.counts = {}

    def add(self, step, collection, obj):
        slot = (step, collection, obj["_type"])
        buffer = self.buffers.setdefault(slot, [])
        buffer.append(obj)
        self.counts[obj["_type"]] = self.counts.get(obj["_type"], 0) + 1
        if len(buffer) >= 500:
            self.flush(slot)

    def flush(self, slot):
        objects = self.buffers.pop(slot, [])
        if not objects:
            return
        step, collection, _ = slot
        directory = os.path.join(self.root, "graph", step, collection)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"{uuid.uuid4()}.json"), "w") as out:
            out.write(json.dumps({collection: objects}))

    def close(self):
        for slot in list(self.buffers):
            self.flush(slot)


def pages(session, url, key):
    offset = 0
    while True:
        body = session.get(url, params={"offset": offset, "limit": 1000}, timeout=60).json()
        items = body.get(key) or []
        yield items
        offset += len(items)
        if not items or offset >= body["page"]["total"]:
            return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    writer = Writer(args.output)
    session = requests.Session()
    session.headers["X-DC-DEVKEY"] = KEY
    base = args.base_url

    account = session.get(f"{base}/account", timeout=60).json()
    account_key = f"digicert_account:{account['id']}"
    admin = account.get("admin_email")
    writer.add(
        "fetch-account",
        "entities",
        {
            "_key": account_key,
            "_type": "digicert_account",
            "_class": ["Account"],
            "id": str(account["id"]),
            "name": str(account["id"]),
            "accountId": account["id"],
            "displayName": f"DigiCert:{account['id']}",
            "adminEmail": [e.strip() for e in admin.split(",")] if admin and "," in admin else admin,
            "_rawData": [{"name": "default", "rawData": account}],
        },
    )

    for users in pages(session, f"{base}/user", "users"):
        for user in users:
            roles = [r["name"] for r in user.get("access_roles") or []]
            entity = {
                "_key": f"digicert_user:{user['account_id']}:{user['id']}",
                "_type": "digicert_user",
                "_class": ["User"],
                "id": f"{user['account_id']}:{user['id']}",
                "accountId": user["account_id"],
                "userId": user["id"],
                "firstName": user.get("first_name"),
                "lastName": user.get("last_name"),
                "name": " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p),
                "displayName": user.get("email"),
                "email": user.get("email"),
                "username": user.get("username"),
                "status": user.get("status"),
                "active": user.get("status") == "active",
                "phone": user.get("telephone"),
                "jobTitle": user.get("job_title"),
                "type": user.get("type"),
                "roles": roles,
                "admin": "Administrator" in roles,
                "lastLoginOn": epoch_ms(user.get("last_login_date")),
                "_rawData": [{"name": "default", "rawData": user}],
            }
            writer.add("fetch-users", "entities", {k: v for k, v in entity.items() if v is not None})
            writer.add(
                "fetch-users",
                "relationships",
                {
                    "_key": f"{account_key}|has|{entity['_key']}",
                    "_type": "digicert_account_has_user",
                    "_class": "HAS",
                    "_fromEntityKey": account_key,
                    "_toEntityKey": entity["_key"],
                    "displayName": "HAS",
                },
            )

    for orders in pages(session, f"{base}/order/certificate", "orders"):
        for order in orders:
            cert = order.get("certificate") or {}
            key = f"digicert_certificate:{order['id']}"
            entity = {
                "_key": key,
                "_type": "digicert_certificate",
                "_class": ["Certificate"],
                "id": str(order["id"]),
                "orderId": order["id"],
                "certificateId": cert.get("id"),
                "name": cert.get("common_name"),
                "displayName": cert.get("common_name"),
                "domainName": cert.get("common_name"),
                "dnsNames": cert.get("dns_names"),
                "alternativeNames": cert.get("dns_names"),
                "active": (cert.get("days_remaining") or 0) > 0,
                "signatureHash": cert.get("signature_hash"),
                "type": order["product"]["type"],
                "productName": order["product"]["name"],
                "productId": order["product"]["name_id"],
                "validityYears": order.get("validity_years"),
                "hasDuplicates": order.get("has_duplicates"),
                "renewed": order.get("is_renewed"),
                "renewalNotification": not order.get("disable_renewal_notifications"),
                "status": order.get("status"),
                "issuedOn": epoch_ms(order["date_created"]) if order.get("status") == "issued" else None,
                "createdOn": epoch_ms(order.get("date_created")),
                "expiresOn": epoch_ms(cert.get("valid_till")),
            }
            entity = {k: v for k, v in entity.items() if v is not None}
            for field in order.get("custom_fields") or []:
                entity[f"tag.{field['label']}"] = field["value"]
            entity["_rawData"] = [{"name": "default", "rawData": order}]
            writer.add("fetch-orders", "entities", entity)
            writer.add(
                "fetch-orders",
                "relationships",
                {
                    "_key": f"{account_key}|has|{key}",
                    "_type": "digicert_account_has_certificate",
                    "_class": "HAS",
                    "_fromEntityKey": account_key,
                    "_toEntityKey": key,
                    "displayName": "HAS",
                },
            )
            common = (cert.get("common_name") or "").removeprefix("*.")
            names = [common] + [
                n for n in dict.fromkeys(d.removeprefix("*.") for d in cert.get("dns_names") or []) if n != common
            ]
            for number, name in enumerate(names):
                writer.add(
                    "fetch-orders",
                    "relationships",
                    {
                        "_key": f"{key}|has|REVERSE:_class=Domain:domainName={name}",
                        "_type": "domain_has_digicert_certificate",
                        "_class": "HAS",
                        "displayName": "HAS",
                        "_mapping": {
                            "relationshipDirection": "REVERSE",
                            "sourceEntityKey": key,
                            "targetFilterKeys": [["_class", "domainName"]],
                            "targetEntity": {
                                "_type": "domain",
                                "_class": "Domain",
                                "domainName": name,
                                "name": name,
                                "displayName": name,
                            },
                            "skipTargetCreation": number > 0,
                        },
                    },
                )
    writer.close()
    summary = {"metadata": {"partialDatasets": {"types": []}}, "counts": writer.counts}
    with open(os.path.join(args.output, "summary.json"), "w") as out:
        json.dump(summary, out)
    print(json.dumps(writer.counts))


if __name__ == "__main__":
    main()
