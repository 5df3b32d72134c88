"""dlt's ``rest_api`` source on the same DigiCert-shaped pages (the optional ``bench`` extra).

    python -m bench.dlt_rest --base-url http://127.0.0.1:PORT/services/v2 --workdir DIR --mode extract|pipeline

``extract``: fetch and parse every page through the source, nothing written (dlt's
fetch-and-parse floor). ``pipeline``: dlt's default pipeline, loading into duckdb.
Requests are sequential in both, like etl's (which overlaps one page ahead).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import dlt
from dlt.sources.rest_api import rest_api_source

KEY = "bench-digicert-key"


def source(base_url: str):
    return rest_api_source(
        {
            "client": {
                "base_url": base_url,
                "auth": {"type": "api_key", "name": "X-DC-DEVKEY", "api_key": KEY, "location": "header"},
            },
            "resources": [
                {
                    "name": "orders",
                    "endpoint": {
                        "path": "order/certificate",
                        "data_selector": "orders",
                        "paginator": {
                            "type": "offset",
                            "limit": 1000,
                            "offset_param": "offset",
                            "limit_param": "limit",
                            "total_path": "page.total",
                        },
                    },
                }
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--mode", choices=["extract", "pipeline"], required=True)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if args.mode == "extract":
        count = sum(1 for _ in source(args.base_url).resources["orders"])
        print(count)
        return
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(str(workdir / "bench.duckdb")),
        dataset_name="digicert",
        pipelines_dir=str(workdir / "pipelines"),
    )
    print(pipeline.run(source(args.base_url)))


if __name__ == "__main__":
    main()
