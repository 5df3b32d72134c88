"""The query language's benchmark: J1QL on a 1,000,000-entity store, on SQLite and PostgreSQL.

    python -m bench.query                      # SQLite (and PostgreSQL: --postgres URL, or $ETL_TEST_POSTGRES_URL)
    python -m bench.query --scale 0.1          # a tenth of everything (a quick look)
    python -m bench.query --write              # and record the figures in bench/RESULTS.md
    python -m bench.query --reuse              # keep the loaded stores between invocations

The store is bench/store.py's: its generated run (1,000,000 hosts with arrays, booleans and
numbers; 1,000,000 host-to-host CONNECTS relationships) and its 100,000 certificates, each mapped
(REVERSE: ``host HAS certificate``) to the host named like it - resolved by the store's mapper,
so the one-hop queries cross integrations. Both are loaded with ``etl load`` (its time is
reported: the schema 3 indexes are part of it).

Each query runs through the Python API (``engine.query``: parse, SQL built, executed, rows read
back) on an open store, once to warm up and then ``--rounds`` times; the median and the range are
reported, with the size of the answer, which must be the same on both databases. ``etl query``'s
process start (Python and its imports) comes on top: measured once, reported apart.

Targets (issue 15): a selective ``FIND x WITH prop = 'v'`` <= 50 ms; a one-hop
``FIND A THAT HAS B WITH ...`` <= 500 ms; a two-hop with ``RETURN a.x, c.y`` <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import ROOT, machine, measure, postgres_schema, section_markers, write_section
from bench.store import generate_certificates, generate_run

START, END = section_markers("bench.query")


def queries(hosts: int, certificates: int) -> list[tuple[str, str, float | None]]:
    """(label, query, target in seconds) - the hosts and certificates named exist at any scale."""
    host, cert = hosts // 2 + 7, (certificates // 2) * 9 % certificates + 1  # a certificate whose host exists
    target_host = (cert * 9) % hosts
    return [
        ("selective: FIND x WITH prop = 'v' (indexed)", f"FIND bench_host WITH name = 'host-{host}'", 0.05),
        (
            "selective, a class and two properties",
            f"FIND Host WITH displayName = 'host-{host}' AND active = true",
            0.05,
        ),
        (
            "a property without an index (reads the type)",
            "FIND bench_host WITH owner = 'team-7' AND active = false",
            None,
        ),
        (
            "one hop: FIND A THAT HAS B WITH ...",
            f"FIND bench_host THAT HAS bench_certificate WITH name = 'cert-{cert}'",
            0.5,
        ),
        (
            "one hop, both ends filtered, RETURN",
            f"FIND bench_certificate AS c THAT HAS << bench_host WITH name = 'host-{target_host}' AS h "
            "RETURN c.name, c.expiresOn, h.hostname",
            0.5,
        ),
        (
            "one hop, negated (hosts without certificates among 20,000)",
            "FIND bench_host WITH owner = 'team-7' THAT !HAS bench_certificate",
            None,
        ),
        (
            "two hops, RETURN a.x, c.y",
            f"FIND bench_certificate WITH name = 'cert-{cert}' AS a THAT HAS bench_host THAT CONNECTS bench_host AS c "
            "RETURN a.name, c.name",
            2.0,
        ),
        (
            "two hops from 20,000 hosts (80,000 paths), RETURN a.x, c.y",
            "FIND bench_host WITH owner = 'team-7' AS a THAT CONNECTS bench_host THAT CONNECTS bench_host AS c "
            "RETURN a.name, c.name",
            None,
        ),
        (
            "aggregate over a hop",
            "FIND bench_host WITH owner = 'team-7' AS h THAT CONNECTS bench_host AS n RETURN h.active, count(n)",
            None,
        ),
    ]


@dataclass
class Timing:
    label: str
    text: str
    target: float | None
    seconds: list[float] = field(default_factory=list)
    total: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_queries(url: str, plan: list[tuple[str, str, float | None]], rounds: int) -> list[Timing]:
    from engine import query
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    store = open_store(parse_store_url(url), create=False)
    timings = []
    try:
        for label, text, target in plan:
            timing = Timing(label, text, target)
            for round_number in range(rounds + 1):
                started = time.perf_counter()
                answer = query.run(store, text)
                elapsed = time.perf_counter() - started
                if round_number:  # the first round warms the caches
                    timing.seconds.append(elapsed)
                timing.total = answer["totalCount"]
            timings.append(timing)
            print(f"  {timing.median * 1000:9.1f} ms  {timing.total:>7} results  {label}", flush=True)
    finally:
        store.close()
    return timings


def cli_seconds(url: str, text: str) -> float:
    """Wall time of one ``etl query`` process (start, imports, query, print)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "engine", "query", text, "--store", url, "--format", "json"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def load_store(url: str, runs: list[tuple[Path, str]]) -> list[float]:
    """Load the runs with ``etl load`` (wall seconds of each)."""
    seconds = []
    for run, integration in runs:
        sample = measure(
            [sys.executable, "-m", "engine", "load", str(run), "--store", url, "--integration", integration]
        )
        seconds.append(sample.seconds)
    return seconds


def schema_version(url: str) -> int:
    from engine.store import schema
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    try:
        store = open_store(parse_store_url(url), create=False)
    except Exception:  # noqa: BLE001 - no usable store: load one
        return 0
    try:
        with store.read() as conn:
            return schema.read_version(conn)
    finally:
        store.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def report(command: str, sizes: dict, backends: list[dict], load_at_start: float) -> str:
    lines = [
        START,
        "## Queries (`bench/query.py`)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; load average {load_at_start:.2f} at the start",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC",
        f"- Store: {sizes['entities']:,} hosts + {sizes['certificates']:,} certificates "
        f"({sizes['entities'] + sizes['certificates'] + sizes['placeholders']:,} entities with the mapper's "
        f"placeholders), {sizes['relationships']:,} CONNECTS + {sizes['certificates']:,} mapped HAS relationships "
        "(bench/store.py's generator)",
        f"- Each query through `engine.query.run` on an open store: one warm-up, then the median of {sizes['rounds']} "
        "rounds (min-max); the answers' sizes are the same on both databases",
        "",
    ]
    header = "| Query | " + " | ".join(b["label"] for b in backends) + " | Answer | Target |"
    lines += [header, "| --- | " + " | ".join("---" for _ in backends) + " | --- | --- |"]
    for index, timing in enumerate(backends[0]["timings"]):
        cells = []
        for backend in backends:
            t = backend["timings"][index]
            cells.append(f"{ms(t.median)} ({ms(min(t.seconds))}-{ms(max(t.seconds))})")
        target = f"<= {ms(timing.target)}" if timing.target else ""
        lines.append(
            f"| {timing.label}<br>`{timing.text}` | " + " | ".join(cells) + f" | {timing.total:,} | {target} |"
        )
    lines += [
        "",
        "The targets are the issue's three (a selective filter, a one-hop, a two-hop with RETURN); the other rows",
        "show where the time goes when a query starts from many entities: reading a type's JSON without an index,",
        "then one index lookup per relationship and entity of every path (80,000 paths of 2 hops: about 3 s on",
        "either database on this 2-core machine, over the 2 s the issue asks of a two-hop).",
        "",
    ]
    for backend in backends:
        loads = ", ".join(f"{s:.1f} s" for s in backend["loads"]) if backend["loads"] else "reused"
        lines.append(
            f"- {backend['label']}: `etl load` of the hosts run and of the certificates run (schema 3's indexes "
            f"included): {loads}; one whole `etl query` process for the first query: {backend['cli']:.2f} s "
            "(Python's start and imports included)"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark J1QL queries on a large store.")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1,000,000 entities and relationships")
    parser.add_argument("--postgres", default=os.environ.get("ETL_TEST_POSTGRES_URL"), help="a PostgreSQL URL too")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "etl-bench-store")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="reuse stores loaded by an earlier invocation")
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other work on the machine moves every figure
    hosts = relationships = int(1_000_000 * args.scale)
    certificates = int(100_000 * args.scale)
    scratch: Path = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    run = generate_run(scratch / f"run-{hosts}-{relationships}", hosts, relationships)
    certs = generate_certificates(scratch / f"certs-{certificates}", certificates, hosts)
    runs = [(run, "bench"), (certs, "certs")]
    plan = queries(hosts, certificates)
    backends = []
    db = scratch / f"query-{hosts}.db"
    sqlite_url = f"sqlite:///{db}"
    targets: list[tuple[str, str, object]] = [("SQLite", sqlite_url, None)]
    if args.postgres:
        url, reset = postgres_schema(args.postgres, f"etl_bench_query_{hosts}")
        targets.append(("PostgreSQL", url, reset))
    for label, url, reset in targets:
        loads: list[float] = []
        if not (args.reuse and schema_version(url) >= 3):
            if reset is None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
            else:
                reset()  # type: ignore[operator]
            print(f"{label}: loading ...", flush=True)
            loads = load_store(url, runs)
        print(f"{label}:", flush=True)
        timings = time_queries(url, plan, args.rounds)
        backends.append({"label": label, "timings": timings, "loads": loads, "cli": cli_seconds(url, plan[0][1])})
    for index, timing in enumerate(backends[0]["timings"]):
        totals = {b["label"]: b["timings"][index].total for b in backends}
        if len(set(totals.values())) != 1:
            raise SystemExit(f"the databases disagree on {timing.text!r}: {totals}")
    placeholders = certificates // 10  # one in ten certificates names no host: the mapper's placeholders
    sizes = {
        "entities": hosts,
        "relationships": relationships,
        "certificates": certificates,
        "placeholders": placeholders,
        "rounds": args.rounds,
    }
    command = (
        "python -m bench.query"
        + (f" --scale {args.scale}" if args.scale != 1.0 else "")
        + (" --postgres URL" if args.postgres else "")
    )
    section = report(command, sizes, backends, load_at_start)
    print(section)
    if args.write:
        write_section("bench.query", section)


if __name__ == "__main__":
    main()
