"""The store under real processes, on both backends: a load killed (SIGKILL) in the middle of its
transaction leaves the previous state; two loads at the same time both succeed - different
instances (concurrently on PostgreSQL, one after the other on SQLite's lock), and the same
instance (serialised)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from engine.store.connect import open_store
from engine.store.url import parse_store_url
from tests.conftest import ROOT
from tests.storetools import entity, props, relationship, rows, store_url, write_run

__all__ = ["store_url"]  # fixture

# A child that loads a run; with ETL_TEST_PAUSE it stops inside the transaction, after the
# entities were merged, and says so on stdout (the parent then kills it).
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from engine.store import load
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    url, run, instance = sys.argv[1:4]
    pause = os.environ.get("ETL_TEST_PAUSE")
    merge = load.merge

    def merge_then_pause(conn, table, *args, **kwargs):
        counts = merge(conn, table, *args, **kwargs)
        if pause and table.name == "etl_entities":
            print("MERGED", flush=True)
            time.sleep(float(pause))
        return counts

    load.merge = merge_then_pause
    store = open_store(parse_store_url(url))
    ready = os.environ.get("ETL_TEST_START_AT")
    if ready:
        time.sleep(max(0.0, float(ready) - time.time()))
    result = load.load_run(store, Path(run), integration="acme", instance=instance, parallel=False)
    print("DONE", result.counts["entities"].created, flush=True)
    """
)


def child(url: str, run: Path, instance: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(run), instance],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def instances(store) -> list[tuple]:
    import sqlalchemy as sa

    with store.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM etl_instances ORDER BY id"))]


def hosts(prefix: str, count: int, **props) -> list[dict]:
    return [entity(f"{prefix}{n}", **props) for n in range(count)]


def test_a_load_killed_mid_transaction_leaves_the_previous_state(store_url, tmp_path):
    first = write_run(tmp_path / "first", hosts("h", 300), [relationship("h0", "h1")])
    process = child(store_url, first, "acme")
    assert process.communicate(timeout=120)[0].startswith("DONE 300")
    store = open_store(parse_store_url(store_url))
    before = (rows(store, "etl_entities"), rows(store, "etl_relationships"), instances(store))
    store.close()
    second = write_run(tmp_path / "second", hosts("h", 200, changed=True) + hosts("new", 50), [])
    process = child(store_url, second, "acme", ETL_TEST_PAUSE="60")
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "MERGED"  # the entities are merged, not committed
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    store = open_store(parse_store_url(store_url))
    try:
        after = (rows(store, "etl_entities"), rows(store, "etl_relationships"), instances(store))
        assert after == before
        # and the store still works: the same load, not killed, goes through
        process = child(store_url, second, "acme")
        assert process.communicate(timeout=120)[0].startswith("DONE 250")
        assert len(rows(store, "etl_entities", "acme", current=True)) == 250
    finally:
        store.close()


def test_two_loads_at_the_same_time_both_succeed(store_url, tmp_path):
    store = open_store(parse_store_url(store_url))  # the schema exists before the race
    store.close()
    east = write_run(tmp_path / "east", hosts("e", 2000))
    west = write_run(tmp_path / "west", hosts("w", 2000))
    start = str(time.time() + 2.0)  # both children start loading at this moment
    processes = [child(store_url, run, name, ETL_TEST_START_AT=start) for run, name in ((east, "east"), (west, "west"))]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
        assert stdout.startswith("DONE 2000")
    store = open_store(parse_store_url(store_url))
    try:
        assert len(rows(store, "etl_entities", "east", current=True)) == 2000
        assert len(rows(store, "etl_entities", "west", current=True)) == 2000
    finally:
        store.close()


def test_two_loads_of_the_same_instance_serialise(store_url, tmp_path):
    store = open_store(parse_store_url(store_url))
    store.close()
    one = write_run(tmp_path / "one", hosts("h", 1500, run=1))
    two = write_run(tmp_path / "two", hosts("h", 1500, run=2))
    start = str(time.time() + 2.0)
    processes = [child(store_url, run, "acme", ETL_TEST_START_AT=start) for run in (one, two)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    store = open_store(parse_store_url(store_url))
    try:
        current = rows(store, "etl_entities", "acme", current=True)
        assert len(current) == 1500  # one current version per key: the loads did not interleave
        every = rows(store, "etl_entities", "acme")
        assert len(every) == 3000 and {r["_version"] for r in every} == {1, 2}
        assert len({props(r)["run"] for r in current}) == 1  # all from the load that committed last
    finally:
        store.close()
