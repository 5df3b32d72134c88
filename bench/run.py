"""Run every benchmark and write bench/RESULTS.md.

    python -m bench.run [--repeat 5] [--quick] [--million]

Each scenario starts the synthetic API (bench/server.py) in its own process and runs the
measured programs as subprocesses, alternating them so that a noisy machine hurts each
the same way; wall time and peak RSS come from the operating system (``os.wait4``).
Figures are medians with min and max; ratios are taken between runs of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import RESULTS, ROOT, Sample, machine, measure
from engine.pipeline import check  # the key index's sizes, for the report

PYTHON = sys.executable
DIGICERT_KEY = "bench-digicert-key"
OPTIMISATIONS = ROOT / "bench" / "optimisations.md"  # the history of changes, copied into RESULTS.md
NOWSECURE_TOKEN = "bench-nowsecure-token"
LOAD_AT_START = 0.0
MILLION = 1_000_000
MILLION_TARGET_MB = 150
# Sections of RESULTS.md other scripts write (``<!-- name:start -->`` ... ``<!-- name:end -->``),
# kept when this one rewrites the file.
SECTION = re.compile(r"<!-- ([\w.-]+):start -->.*?<!-- \1:end -->", re.DOTALL)


@contextmanager
def api(**options):
    """The synthetic API in a subprocess; yields its base URL."""
    args = [PYTHON, "-m", "bench.server"] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"bench server did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        process.terminate()
        process.wait()


def etl_digicert(base: str, out: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "engine",
        "run",
        "mappings/digicert.yaml",
        "--base-url",
        f"{base}/services/v2",
        "--output",
        str(out),
        "--config",
        f"apiKey={DIGICERT_KEY}",
        "-q",
    ]


def handwritten(base: str, out: Path) -> list[str]:
    return [PYTHON, "-m", "bench.handwritten", "--base-url", f"{base}/services/v2", "--output", str(out)]


def dlt_command(base: str, out: Path, mode: str) -> list[str]:
    return [PYTHON, "-m", "bench.dlt_rest", "--base-url", f"{base}/services/v2", "--workdir", str(out), "--mode", mode]


def dlt_available() -> bool:
    return subprocess.run([PYTHON, "-c", "import dlt, duckdb"], capture_output=True).returncode == 0


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


# ----------------------------------------------------------------------------------------
# Scenarios


def bulk(repeat: int, certificates: int, scratch: Path) -> dict:
    """60,000 certificates in pages of 1,000: etl against the hand-written client (and dlt)."""
    rounds = []
    with_dlt = dlt_available()
    with api(certificates=certificates) as base:
        measure(handwritten(base, scratch / "hw"))  # warm-up: the server builds its pages once
        measure(etl_digicert(base, scratch / "etl"))  # and both programs' bytecode is cached
        for number in range(repeat):
            # Alternate who goes first, so neither always runs on a machine the other just warmed.
            order = ["etl", "handwritten"] if number % 2 == 0 else ["handwritten", "etl"]
            commands = {"etl": etl_digicert(base, scratch / "etl"), "handwritten": handwritten(base, scratch / "hw")}
            measured = {name: measure(commands[name]) for name in order}
            runs = {"etl": measured["etl"], "handwritten": measured["handwritten"]}
            if with_dlt:
                runs["dlt (fetch and parse)"] = measure(dlt_command(base, scratch / "dlt", "extract"))
                runs["dlt (default pipeline to duckdb)"] = measure(dlt_command(base, scratch / "dlt", "pipeline"))
            rounds.append(runs)
            print(
                f"  bulk round {number + 1}: "
                + ", ".join(f"{k} {v.seconds:.2f}s/{v.peak_mb:.0f}MB" for k, v in runs.items()),
                flush=True,
            )
    return {"rounds": rounds, "dlt": with_dlt}


def memory(sizes: list[int], repeat: int, scratch: Path) -> dict[int, list[Sample]]:
    """Peak RSS (and wall time) of ``etl run`` at each size: ``{size: [Sample, ...]}``."""
    peaks = {}
    for size in sizes:
        with api(certificates=size) as base:
            peaks[size] = [measure(etl_digicert(base, scratch / f"mem{size}")) for _ in range(repeat)]
        print(f"  memory {size}: {stats([s.peak_mb for s in peaks[size]])} MB", flush=True)
    return peaks


def median_peak(samples: list[Sample]) -> float:
    return statistics.median(s.peak_mb for s in samples)


def fanout(repeat: int, apps: int, latency_ms: float, concurrency: int, scratch: Path) -> dict:
    """240 NowSecure apps whose vulnerability requests each take 50 ms."""
    results = []
    with api(certificates=0, apps=apps, vuln_latency_ms=latency_ms) as base:
        for _ in range(repeat):
            out = scratch / "fanout"
            sample = measure(
                [
                    PYTHON,
                    "-m",
                    "engine",
                    "run",
                    "mappings/nowsecure.yaml",
                    "--base-url",
                    f"lab={base}",
                    "--output",
                    str(out),
                    "--concurrency",
                    str(concurrency),
                    "--as-of",
                    "2026-11-23T00:00:00Z",
                    "-q",
                ],
                env={"NOWSECURE_API_TOKEN": NOWSECURE_TOKEN},
            )
            summary = json.loads((out / "summary.json").read_text())
            step = next(s for s in summary["integrationStepResults"] if s["id"] == "fetch-findings")
            sample.extra["fanout_seconds"] = step["duration"] / 1000
            results.append(sample)
    ideal = apps * latency_ms / 1000 / concurrency
    return {
        "samples": results,
        "ideal": ideal,
        "requests": apps,
        "latency": latency_ms / 1000,
        "concurrency": concurrency,
    }


# ----------------------------------------------------------------------------------------
# Report


def report(command: str, bulk_result: dict, peaks: dict, fan: dict, certificates: int) -> str:
    rounds = bulk_result["rounds"]
    names = list(rounds[0])
    lines = [
        "# Benchmark results",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; load average {LOAD_AT_START:.2f} at the start",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Rounds: {len(rounds)} (medians, with min and max; ratios are per round, then the median)",
        "",
        f"## Bulk: {certificates:,} DigiCert certificates in pages of 1,000",
        "",
        "Every program fetches the same pages from the same local API (its own process, 127.0.0.1).",
        "`etl` and the hand-written client build the full graph (entities, relationships, mapped",
        "relationships, raw data) and write it in the `.j1-integration` layout; dlt's rows are the",
        "orders as the API gives them.",
        "",
        "| Program | Wall time (s) | Peak RSS (MB) |",
        "| --- | --- | --- |",
    ]
    for name in names:
        lines.append(
            f"| {name} | {stats([r[name].seconds for r in rounds])} | {stats([r[name].peak_mb for r in rounds])} |"
        )
    ratio_hw = [r["etl"].seconds / r["handwritten"].seconds for r in rounds]
    lines += ["", f"- etl / hand-written, wall time: **{stats(ratio_hw)}** (target ≤ 1.00)"]
    checks = [("bulk time ≤ 1.0 × hand-written", statistics.median(ratio_hw) <= 1.0)]
    if bulk_result["dlt"]:
        key = "dlt (default pipeline to duckdb)"
        speedup = [r[key].seconds / r["etl"].seconds for r in rounds]
        lines.append(f"- dlt default pipeline / etl, wall time: **{stats(speedup)}×** (target ≥ 5)")
        checks.append(("≥ 5× faster than dlt's default pipeline", statistics.median(speedup) >= 5))
    else:
        lines.append('- dlt was not installed (`pip install -e ".[bench]"`): no dlt figures this time.')
    small, large = min(peaks), certificates
    lines += [
        "",
        "## Memory: peak RSS of `etl run` (streaming)",
        "",
        f"Keys are compared exactly (`engine/pipeline/check.py`): a run's first {check.SPILL_AT:,} keys as strings,",
        "then on disk (temporary files, indexed in SQLite when looked up often) with the recent keys and a",
        f"filter in memory (the set of the keys' hashes, then past {check.HASHES_AT_MOST:,} keys a Bloom filter).",
        "",
        "| Certificates | Peak RSS (MB) | Wall time (s) |",
        "| --- | --- | --- |",
    ]
    for size, samples in sorted(peaks.items()):
        lines.append(f"| {size:,} | {stats([s.peak_mb for s in samples])} | {stats([s.seconds for s in samples])} |")
    large_peak, small_peak = median_peak(peaks[large]), median_peak(peaks[small])
    lines += [
        "",
        f"- {large:,} / {small:,} certificates: {large_peak / small_peak:.2f}× "
        f"(target ≤ 1.5×; the graph is streamed, not held)",
    ]
    checks.append((f"peak RSS ≤ 100 MB at {large:,} certificates", large_peak <= 100))
    checks.append((f"peak RSS at {large:,} ≤ 1.5 × at {small:,}", large_peak <= 1.5 * small_peak))
    if MILLION in peaks:
        million_peak = median_peak(peaks[MILLION])
        lines.append(f"- {MILLION:,} certificates: {million_peak:.0f} MB (target ≤ {MILLION_TARGET_MB} MB)")
        target = f"peak RSS ≤ {MILLION_TARGET_MB} MB at {MILLION:,} certificates"
        checks.append((target, million_peak <= MILLION_TARGET_MB))
    samples = fan["samples"]
    fan_times = [s.extra["fanout_seconds"] for s in samples]
    effective = [fan["requests"] * fan["latency"] / t for t in fan_times]
    lines += [
        "",
        f"## Fan-out: {fan['requests']} NowSecure apps, each vulnerability request taking "
        f"{fan['latency'] * 1000:.0f} ms, concurrency {fan['concurrency']}",
        "",
        "| | Seconds |",
        "| --- | --- |",
        f"| the fan-out step (summary.json) | {stats(fan_times)} |",
        f"| ideal: requests × latency / concurrency | {fan['ideal']:.2f} |",
        f"| whole run | {stats([s.seconds for s in samples])} |",
        "",
        f"- Effective concurrency (requests × latency / step time): **{stats(effective)}** "
        f"(target ≥ {0.8 * fan['concurrency']:.1f} = 0.8 × {fan['concurrency']})",
    ]
    checks.append(
        ("fan-out effective concurrency ≥ 0.8 × configured", statistics.median(effective) >= 0.8 * fan["concurrency"])
    )
    lines += ["", "## Targets", "", "| Target | Met |", "| --- | --- |"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in checks]
    lines += ["", OPTIMISATIONS.read_text().replace("# ", "## ", 1).rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write bench/RESULTS.md.")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per scenario")
    parser.add_argument("--quick", action="store_true", help="6,000 certificates, 2 rounds: a smoke test")
    parser.add_argument(
        "--million", action="store_true", help="also measure memory at 1,000,000 certificates (a few minutes a run)"
    )
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    certificates = 6000 if args.quick else 60000
    global LOAD_AT_START
    LOAD_AT_START = os.getloadavg()[0]  # other work on the machine moves every figure
    scratch = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    try:
        print(f"bulk ({certificates:,} certificates)", flush=True)
        bulk_result = bulk(repeat, certificates, scratch)
        print("memory", flush=True)
        sizes = [6000, certificates] + ([MILLION] if args.million else [])
        peaks = memory(sorted(set(sizes)), max(1, repeat // 2), scratch)
        print("fan-out", flush=True)
        fan = fanout(repeat, apps=240, latency_ms=50, concurrency=8, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    command = (
        "python -m bench.run"
        + (" --quick" if args.quick else f" --repeat {args.repeat}")
        + (" --million" if args.million else "")
    )
    text = report(command, bulk_result, peaks, fan, certificates)
    if not args.quick:
        RESULTS.write_text(with_other_sections(text))
    print(text)


def with_other_sections(text: str) -> str:
    """``text`` followed by the sections other scripts wrote into RESULTS.md (kept as they are)."""
    previous = RESULTS.read_text() if RESULTS.exists() else ""
    kept = [match.group(0) for match in SECTION.finditer(previous)]
    return text if not kept else text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"


if __name__ == "__main__":
    main()
