"""What every benchmark shares: running a program and measuring it, the machine it ran on,
generated graph files, a PostgreSQL schema of its own, and its section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"


@dataclass
class Sample:
    """One measured run of a program."""

    seconds: float  # wall time
    cpu: float  # user + system, of the program and the workers it waited for
    peak_mb: float  # peak resident memory
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)  # what a scenario adds (a step's duration, a page's size)


def measure(command: list[str], env: dict | None = None) -> Sample:
    """Run ``command`` from the repository's root; its wall time, CPU time and peak RSS from
    ``os.wait4``, and what it printed. A non-zero exit raises, with the end of its stderr.

    It runs with Python's bytecode cache, as an installed program does (pip compiles it):
    without it (PYTHONDONTWRITEBYTECODE, set on some machines) every run compiles every module
    it imports from source again, a fixed cost that grows with the number of modules and says
    nothing of the program's work."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env={**inherited, **(env or {})}, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{stderr[-2000:]}")
    return Sample(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, stderr)


def machine() -> str:
    """The CPU, cores, memory, system and Python the figures were taken on."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gb:.0f} GiB; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def write_graph_file(folder: Path, collection: str, objects: list[dict], number: int) -> None:
    """One graph file of a generated run, named and shaped as ``etl run`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{number:07d}.json").write_bytes(orjson.dumps({collection: objects}))


def postgres_schema(base: str, schema: str) -> tuple[str, Callable[[], None]]:
    """A schema of its own in the PostgreSQL database at ``base``: (a URL using it, a function
    that empties it)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    def reset() -> None:
        admin = sa.create_engine(make_url(base).set(drivername="postgresql+psycopg"))
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        admin.dispose()

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    return url, reset


def section_markers(name: str) -> tuple[str, str]:
    """The markers around a script's section of RESULTS.md."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, text: str) -> None:
    """Put ``text`` (which starts and ends with the markers of ``name``) in place of that
    section of RESULTS.md; appended the first time."""
    start, end = section_markers(name)
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(current)
