"""The benchmark of ``etl visualize`` at real sizes: peak RSS and page size.

    python -m bench.visualize                  # 200,000 entities + 400,000 relationships
    python -m bench.visualize --scale 0.1      # a tenth of everything (a quick look)
    python -m bench.visualize --write          # and record the figures in bench/RESULTS.md

The run directory is generated (DigiCert-shaped, as ``mappings/digicert.yaml`` writes it: one
account, its users and certificates with ``_rawData``, ``HAS`` relationships from the account,
and one or two mapped ``HAS`` relationships per certificate to a ``Domain`` that is not in the
run) into ``$TMPDIR/etl-bench-visualize/`` and kept between invocations. Each scenario is an
``etl visualize`` subprocess; its wall time and peak RSS come from ``os.wait4``:

* default: ``etl visualize DIR`` (``--max-nodes`` at its default);
* narrowed: ``--type digicert_account --type digicert_user`` (the account, its 1,000 users and
  the relationships between them);
* larger: ``--max-nodes 20000``;
* unlimited: ``--max-nodes 0`` (every node: the page is as large as the run, the memory is not);
* memory: the default and the unlimited scenario at a tenth of the size too (flat: streamed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.harness import Sample, machine, measure, section_markers, write_graph_file, write_section

START, END = section_markers("bench.visualize")
PER_FILE = 500  # objects per graph file, as etl run writes them
BEFORE = (  # measured once with this script's runs and `etl visualize DIR` at that commit
    "Before this change (commit e41750a: every object, and the whole page, held in memory; no limits), "
    "the same 200,000 + 400,000 run drew everything: peak RSS 2,871 MB, a 353 MB page, 33.9 s "
    "(at a tenth of the run: 332 MB, a 35 MB page). The issue's 200,000-certificate run of the real "
    "DigiCert mapping: 4.8 GB, a 751 MB page."
)
ACCOUNT = "digicert_account:1234567"
SCENARIOS = (  # (name, extra arguments of etl visualize)
    ("default (`--max-nodes 2000`)", []),
    (
        "narrowed: `--type digicert_account --type digicert_user`",
        ["--type", "digicert_account", "--type", "digicert_user"],
    ),
    ("larger: `--max-nodes 20000`", ["--max-nodes", "20000"]),
    ("unlimited: `--max-nodes 0`", ["--max-nodes", "0"]),
)


def visualize(run: Path, page: Path, extra: list[str]) -> Sample:
    """``etl visualize RUN --output PAGE EXTRA...``, measured; the page's size (MB) in
    ``extra["page_mb"]``."""
    sample = measure([sys.executable, "-m", "engine", "visualize", str(run), "--output", str(page), *extra])
    sample.extra["page_mb"] = page.stat().st_size / 2**20
    page.unlink()
    return sample


# -- the generated run -------------------------------------------------------------------------------


def _batches(count: int):
    for number, start in enumerate(range(0, count, PER_FILE)):
        yield number, range(start, min(start + PER_FILE, count))


def _has(source: str, target: str, graph_type: str) -> dict:
    return {
        "_key": f"{source}|has|{target}",
        "_type": graph_type,
        "_class": "HAS",
        "_fromEntityKey": source,
        "_toEntityKey": target,
        "displayName": "HAS",
    }


def _user(i: int) -> dict:
    email = f"user{i}@example.com"
    return {
        "_key": f"digicert_user:1234567:{2000000 + i}",
        "_type": "digicert_user",
        "_class": ["User"],
        "id": f"1234567:{2000000 + i}",
        "name": f"User {i}",
        "displayName": email,
        "email": email,
        "username": email,
        "active": i % 9 != 0,
        "roles": ["Administrator" if i % 10 == 0 else "User"],
        "_rawData": [{"name": "default", "rawData": {"id": 2000000 + i, "email": email, "status": "active"}}],
    }


def _certificate(i: int, domain: str) -> dict:
    return {
        "_key": f"digicert_certificate:{100000 + i}",
        "_type": "digicert_certificate",
        "_class": ["Certificate"],
        "id": str(100000 + i),
        "orderId": 100000 + i,
        "name": domain,
        "displayName": domain,
        "domainName": domain,
        "dnsNames": [domain, f"www.{domain}"],
        "active": i % 13 != 0,
        "signatureHash": "sha256",
        "productName": "Standard SSL",
        "status": "issued",
        "issuedOn": 1718904596000 + i,
        "expiresOn": 1751241600000 + i,
        "tag.AccountName": "Example Corp",
        "_rawData": [
            {
                "name": "default",
                "rawData": {
                    "id": 100000 + i,
                    "certificate": {"common_name": domain, "dns_names": [domain, f"www.{domain}"]},
                    "status": "issued",
                    "organization": {"id": 7654321, "name": "Example Corp"},
                    "product": {"name_id": "ssl_plus", "name": "Standard SSL", "type": "ssl_certificate"},
                },
            }
        ],
    }


def _mapped(certificate: str, domain: str) -> dict:
    return {
        "_key": f"{certificate}|has|REVERSE:_class=Domain:domainName={domain}",
        "_type": "domain_has_digicert_certificate",
        "_class": "HAS",
        "_mapping": {
            "relationshipDirection": "REVERSE",
            "sourceEntityKey": certificate,
            "targetFilterKeys": [["_class", "domainName"]],
            "targetEntity": {"_type": "domain", "_class": "Domain", "domainName": domain, "displayName": domain},
            "skipTargetCreation": False,
        },
        "displayName": "HAS",
    }


def generate_run(root: Path, entities: int, relationships: int) -> Path:
    """A DigiCert-shaped run of ``entities`` entities and ``relationships`` relationships."""
    if (root / "summary.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    users = max(1, entities // 200)
    certificates = entities - 1 - users
    domains = max(1, certificates // 4)
    mapped = max(0, relationships - users - certificates)
    graph = root / "graph"
    account = {"_key": ACCOUNT, "_type": "digicert_account", "_class": ["Account"], "displayName": "DigiCert:1234567"}
    write_graph_file(graph / "fetch-account" / "entities", "entities", [account], 0)
    for number, batch in _batches(users):
        write_graph_file(graph / "fetch-users" / "entities", "entities", [_user(i) for i in batch], number)
        rels = [_has(ACCOUNT, _user(i)["_key"], "digicert_account_has_user") for i in batch]
        write_graph_file(graph / "fetch-users" / "relationships", "relationships", rels, number)
    for number, batch in _batches(certificates):
        certs = [_certificate(i, f"d{i % domains}.example.com") for i in batch]
        write_graph_file(graph / "fetch-orders" / "entities", "entities", certs, number)
        rels = [_has(ACCOUNT, c["_key"], "digicert_account_has_certificate") for c in certs]
        write_graph_file(graph / "fetch-orders" / "relationships", "relationships", rels, number)
    for number, batch in _batches(mapped):
        rels = [
            _mapped(f"digicert_certificate:{100000 + j % certificates}", f"d{j % domains}.example.com") for j in batch
        ]
        write_graph_file(graph / "fetch-orders-domains" / "relationships", "relationships", rels, number)
    steps = ["fetch-account", "fetch-users", "fetch-orders", "fetch-orders-domains"]
    summary = {
        "integrationStepResults": [{"id": s, "status": "success"} for s in steps],
        "metadata": {"partialDatasets": {"types": []}},
    }
    (root / "summary.json").write_bytes(orjson.dumps(summary))
    return root


# -- the report ---------------------------------------------------------------------------------------


def drawn(sample: Sample) -> str:
    """What the command said it drew (its stdout line without the page's path), and whether it
    printed the notice that the limit cut the graph."""
    line = sample.stdout.strip().split(": ", 1)[-1]
    return line + ("; notice printed" if "--max-nodes" in sample.stderr else "")


def section(command: str, sizes: dict, results: list[tuple[str, Sample]], tenth: list[tuple[str, Sample]]) -> str:
    lines = [
        START,
        "## Visualize at real sizes (`bench/visualize.py`)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Run: {sizes['entities']:,} entities + {sizes['relationships']:,} relationships "
        f"({sizes['bytes'] / 2**20:.0f} MB of graph files), DigiCert-shaped",
        "- Peak RSS and CPU time (user + system) from `os.wait4` of the `etl visualize` subprocess; one round. "
        "CPU time is the steadier figure on a shared machine.",
        "",
        "| Scenario | Peak RSS | Page | CPU time | Wall time | Drawn |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, sample in results:
        lines.append(
            f"| {name} | {sample.peak_mb:.0f} MB | {sample.extra['page_mb']:.2f} MB | {sample.cpu:.1f} s | "
            f"{sample.seconds:.1f} s | {drawn(sample)} |"
        )
    lines += ["", "Memory, flat in the size of the run (peak RSS at a tenth of the run, then at the full run):", ""]
    full = dict(results)
    for name, sample in tenth:
        lines.append(f"- {name}: {sample.peak_mb:.0f} MB, then {full[name].peak_mb:.0f} MB")
    lines += ["", BEFORE, END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark etl visualize on a large run: peak RSS and page size.")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 200,000 entities + 400,000 relationships")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "etl-bench-visualize")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    entities, relationships = int(200_000 * args.scale), int(400_000 * args.scale)
    scratch: Path = args.scratch
    run = generate_run(scratch / f"run-{entities}-{relationships}", entities, relationships)
    small = generate_run(scratch / f"run-{entities // 10}-{relationships // 10}", entities // 10, relationships // 10)
    sizes = {
        "entities": entities,
        "relationships": relationships,
        "bytes": sum(p.stat().st_size for p in (run / "graph").rglob("*.json")),
    }
    page = scratch / "page.html"
    results, tenth = [], []
    for name, extra in SCENARIOS:
        results.append((name, visualize(run, page, extra)))
        print(f"{name}: {results[-1][1]}", flush=True)
    for name, extra in (SCENARIOS[0], SCENARIOS[-1]):
        tenth.append((name, visualize(small, page, extra)))
        print(f"{name}, a tenth: {tenth[-1][1]}", flush=True)
    command = "python -m bench.visualize" + (f" --scale {args.scale}" if args.scale != 1.0 else "")
    text = section(command, sizes, results, tenth)
    print(text)
    if args.write:
        write_section("bench.visualize", text)


if __name__ == "__main__":
    main()
