"""The graph store's benchmark: load, reload and the mapper, on SQLite and PostgreSQL.

    python -m bench.store                      # 1,000,000 entities + 1,000,000 relationships
    python -m bench.store --scale 0.1          # a tenth of everything (a quick look)
    python -m bench.store --postgres URL       # also PostgreSQL (default: $ETL_TEST_POSTGRES_URL)
    python -m bench.store --write              # and record the figures in bench/RESULTS.md

Scenarios (each an ``etl load`` subprocess; wall time, CPU time of it and its workers, and
peak RSS come from ``os.wait4``):

* load: a generated run directory (hosts with arrays, booleans, numbers; host-to-host
  relationships) into a new store;
* reload, unchanged: the same directory again - and the check that no row was written;
* reload, 1% changed: the same run with one entity in a hundred changed (the set-based compare);
* memory: peak RSS of the load at a tenth of the size and at full size (flat: streamed);
* mapper: 100,000 certificates, each with a mapped relationship to a host by
  ``[["_class", "hostname"]]`` (one in ten names no host: a placeholder), loaded into a store
  holding the hosts, then loaded again with one certificate changed (the mapper runs again);
  the mapper's own time is the one ``etl load`` prints.

Targets (issue 14): load <= 15 s and peak RSS <= 200 MB on the 2-core machine; reload unchanged
<= 50% of the load and zero rows rewritten; mapper <= 10 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.harness import (
    Sample,
    machine,
    measure,
    postgres_schema,
    section_markers,
    write_graph_file,
    write_section,
)

START, END = section_markers("bench.store")
PER_FILE = 500  # objects per graph file, as etl run writes them


# -- generated runs --------------------------------------------------------------------------------


def generate_run(root: Path, entities: int, relationships: int, *, changed_every: int = 0) -> Path:
    """A run directory of ``entities`` hosts and ``relationships`` host-to-host relationships."""
    if (root / "summary.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    step = root / "graph" / "fetch-hosts"
    for collection in ("entities", "relationships"):
        (step / collection).mkdir(parents=True)
    for number, start in enumerate(range(0, entities, PER_FILE)):
        batch = []
        for i in range(start, min(start + PER_FILE, entities)):
            batch.append(
                {
                    "_key": f"bench_host:{i}",
                    "_type": "bench_host",
                    "_class": ["Host"],
                    "name": f"host-{i}",
                    "displayName": f"host-{i}",
                    "hostname": f"host-{i}.example.com",
                    "ipAddress": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"],
                    "active": i % 7 != 0,
                    "createdOn": 1700000000000 + i,
                    "owner": f"team-{i % 50}" if not (changed_every and i % changed_every == 0) else "team-moved",
                }
            )
        write_graph_file(step / "entities", "entities", batch, number)
    for number, start in enumerate(range(0, relationships, PER_FILE)):
        batch = []
        for i in range(start, min(start + PER_FILE, relationships)):
            source, target = i % entities, (i * 7919 + 1) % entities
            batch.append(
                {
                    "_key": f"bench_host:{source}|connects|bench_host:{target}|{i}",
                    "_type": "bench_host_connects_host",
                    "_class": "CONNECTS",
                    "_fromEntityKey": f"bench_host:{source}",
                    "_toEntityKey": f"bench_host:{target}",
                    "displayName": "CONNECTS",
                    "port": i % 65536,
                }
            )
        write_graph_file(step / "relationships", "relationships", batch, number)
    _summary(root, "fetch-hosts")
    return root


def generate_certificates(root: Path, count: int, hosts: int, *, changed: bool = False) -> Path:
    """``count`` certificates, each mapped (REVERSE) to the host named like it; one in ten names none."""
    if (root / "summary.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    step = root / "graph" / "fetch-certificates"
    for collection in ("entities", "relationships"):
        (step / collection).mkdir(parents=True)
    for number, start in enumerate(range(0, count, PER_FILE)):
        certificates, mapped = [], []
        for i in range(start, min(start + PER_FILE, count)):
            host = (i * 9) % hosts if i % 10 else hosts + i  # one in ten: no such host
            key = f"bench_certificate:{i}"
            certificates.append(
                {
                    "_key": key,
                    "_type": "bench_certificate",
                    "_class": ["Certificate"],
                    "name": f"cert-{i}",
                    "expiresOn": 1800000000000 + i + (1 if changed and i == 0 else 0),
                }
            )
            target = {"_type": "bench_host", "_class": "Host", "hostname": f"host-{host}.example.com"}
            mapped.append(
                {
                    "_key": f"{key}|has|REVERSE:_class=Host:hostname=host-{host}.example.com",
                    "_type": "bench_host_has_certificate",
                    "_class": "HAS",
                    "_mapping": {
                        "relationshipDirection": "REVERSE",
                        "sourceEntityKey": key,
                        "targetFilterKeys": [["_class", "hostname"]],
                        "targetEntity": target,
                        "skipTargetCreation": False,
                    },
                    "displayName": "HAS",
                }
            )
        write_graph_file(step / "entities", "entities", certificates, number)
        write_graph_file(step / "relationships", "relationships", mapped, number)
    _summary(root, "fetch-certificates")
    return root


def _summary(root: Path, step: str) -> None:
    summary = {
        "integrationStepResults": [{"id": step, "status": "success"}],
        "metadata": {"partialDatasets": {"types": []}},
    }
    (root / "summary.json").write_bytes(orjson.dumps(summary))


# -- the scenarios ---------------------------------------------------------------------------------


def etl_load(run: Path, store: str, integration: str) -> list[str]:
    return [sys.executable, "-m", "engine", "load", str(run), "--store", store, "--integration", integration]


def rows_written_since(store: str, since_ms: int) -> tuple[int, int]:
    """(rows, rows whose version began or ended after ``since_ms``) in the store's graph tables."""
    import sqlalchemy as sa

    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    opened = open_store(parse_store_url(store), create=False)
    try:
        with opened.read() as conn:
            total = touched = 0
            for table in ("etl_entities", "etl_relationships"):
                total += conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0
                touched += (
                    conn.execute(
                        sa.text(f'SELECT count(*) FROM {table} WHERE "_beginOn" > :t OR "_endOn" > :t'),
                        {"t": since_ms},
                    ).scalar()
                    or 0
                )
        return total, touched
    finally:
        opened.close()


def load_scenarios(label: str, store: str, run: Path, changed: Path, reset) -> dict:
    reset()
    first = measure(etl_load(run, store, "bench"))
    after_first = int(time.time() * 1000)
    before_rows, _ = rows_written_since(store, after_first)
    again = measure(etl_load(run, store, "bench"))
    after_rows, touched = rows_written_since(store, after_first)
    changed_sample = measure(etl_load(changed, store, "bench"))
    return {
        "label": label,
        "load": first,
        "reload": again,
        "rows": (before_rows, after_rows, touched),
        "changed": changed_sample,
    }


def mapper_scenario(store: str, hosts: Path, certificates: Path, changed: Path, reset) -> dict:
    reset()
    measure(etl_load(hosts, store, "bench"))
    first = measure(etl_load(certificates, store, "certs"))
    again = measure(etl_load(changed, store, "certs"))
    return {"first": first, "indexed": again}


def mapper_seconds(sample: Sample) -> str:
    found = re.search(r"mapper: (.*)\(([\d.]+) s\)", sample.stdout)
    return f"{float(found.group(2)):.2f}" if found else "?"


def mapper_counts(sample: Sample) -> str:
    found = re.search(r"mapper: ([^;]*);", sample.stdout)
    return found.group(1) if found else "?"


def report(command: str, results: dict, scale: float, load_at_start: float) -> str:
    n = results["sizes"]
    lines = [
        START,
        "## Graph store (`bench/store.py`)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; load average {load_at_start:.2f} at the start",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Run: {n['entities']:,} entities + {n['relationships']:,} relationships "
        f"({n['bytes'] / 1e6:.0f} MB of graph files); mapper: {n['certificates']:,} mapped relationships "
        f"against {n['entities']:,} entities",
        "- Wall time, CPU time (user + system of `etl load` and its staging workers) and peak RSS from "
        "`os.wait4`; one round. CPU time is the steadier figure on a shared machine.",
        "",
        "| Scenario | " + " | ".join(r["label"] for r in results["backends"]) + " |",
        "| --- |" + " --- |" * len(results["backends"]),
    ]

    def row(name: str, cell) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results["backends"]) + " |")

    def fmt(sample: Sample) -> str:
        return f"{sample.seconds:.1f} s (CPU {sample.cpu:.1f} s), {sample.peak_mb:.0f} MB"

    row("load (new store)", lambda r: fmt(r["load"]))
    row("reload, unchanged", lambda r: fmt(r["reload"]))
    row("reload / load (wall)", lambda r: f"{r['reload'].seconds / r['load'].seconds:.0%}")
    row("rows before / after reload, rows written by it", lambda r: "{:,} / {:,}, {:,}".format(*r["rows"]))
    row("reload, 1% of entities changed", lambda r: fmt(r["changed"]))
    lines.append("")
    if "small" in results:
        small = results["small"]
        lines += [
            f"Memory, flat in the data size (SQLite load): peak RSS {small.peak_mb:.0f} MB at a tenth of the run, "
            f"{results['backends'][0]['load'].peak_mb:.0f} MB at the full run.",
            "",
        ]
    lines += [
        "| Mapper | " + " | ".join(r["label"] for r in results["mappers"]) + " |",
        "| --- |" + " --- |" * len(results["mappers"]),
    ]
    for name, key in (
        ("first load of the certificates (it creates the hostname index)", "first"),
        ("next load (one certificate changed: the mapper runs again)", "indexed"),
    ):
        lines.append(
            f"| {name}: mapper time | "
            + " | ".join(f"{mapper_seconds(r[key])} s (whole load {r[key].seconds:.1f} s)" for r in results["mappers"])
            + " |"
        )
    lines.append("| resolved | " + " | ".join(mapper_counts(r["indexed"]) for r in results["mappers"]) + " |")
    lines += [
        "",
        "Targets: load <= 15 s and <= 200 MB; reload unchanged <= 50% of the load, zero rows written; "
        'mapper <= 10 s. See the notes below the table in `bench/README.md` ("Graph store").',
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the graph store (load, reload, mapper).")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1,000,000 entities and relationships")
    parser.add_argument("--postgres", default=os.environ.get("ETL_TEST_POSTGRES_URL"), help="a PostgreSQL URL too")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "etl-bench-store")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other work on the machine moves every figure
    entities = relationships = int(1_000_000 * args.scale)
    certificates = int(100_000 * args.scale)
    scratch: Path = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    size = f"{entities}-{relationships}"
    run = generate_run(scratch / f"run-{size}", entities, relationships)
    changed = generate_run(scratch / f"run-{size}-changed", entities, relationships, changed_every=100)
    small = generate_run(scratch / f"run-{size}-tenth", entities // 10, relationships // 10)
    certs = generate_certificates(scratch / f"certs-{certificates}", certificates, entities)
    certs_changed = generate_certificates(
        scratch / f"certs-{certificates}-changed", certificates, entities, changed=True
    )
    graph_bytes = sum(p.stat().st_size for p in (run / "graph").rglob("*.json"))
    results: dict = {
        "sizes": {
            "entities": entities,
            "relationships": relationships,
            "certificates": certificates,
            "bytes": graph_bytes,
        },
        "backends": [],
        "mappers": [],
    }
    db = scratch / "graph.db"

    def reset_sqlite() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    sqlite_url = f"sqlite:///{db}"
    reset_sqlite()
    results["small"] = measure(etl_load(small, sqlite_url, "bench"))
    print("small load:", results["small"].seconds, results["small"].peak_mb, flush=True)
    results["backends"].append(load_scenarios("SQLite", sqlite_url, run, changed, reset_sqlite))
    print("sqlite:", results["backends"][-1], flush=True)
    results["mappers"].append(
        {"label": "SQLite", **mapper_scenario(sqlite_url, run, certs, certs_changed, reset_sqlite)}
    )
    if args.postgres:
        url, reset_pg = postgres_schema(args.postgres, "etl_bench_store")
        results["backends"].append(load_scenarios("PostgreSQL", url, run, changed, reset_pg))
        print("postgresql:", results["backends"][-1], flush=True)
        results["mappers"].append({"label": "PostgreSQL", **mapper_scenario(url, run, certs, certs_changed, reset_pg)})
        reset_pg()
    reset_sqlite()
    command = (
        "python -m bench.store"
        + (f" --scale {args.scale}" if args.scale != 1.0 else "")
        + (" --postgres URL" if args.postgres else "")
    )
    section = report(command, results, args.scale, load_at_start)
    print(section)
    if args.write:
        write_section("bench.store", section)


if __name__ == "__main__":
    main()
