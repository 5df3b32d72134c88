"""Local look-alikes of the bulk-data APIs of issue 16: asynchronous export jobs, and files in
other formats than JSON.

``ExportApi(items)`` serves the two export examples of docs/examples/:

=================================== ===============================================================
``POST /exports``                   starts a job: ``202 {"export_id": "e-N"}``
``GET /exports/<id>``               ``{"status": "PROCESSING"}`` for ``polls_before_ready`` polls,
                                    then ``{"status": "FINISHED", "chunks": [1, 2, ...]}``
                                    (``fail_job``: ``{"status": "ERROR", "error": ...}``;
                                    ``never_ready``: always processing)
``GET /exports/<id>/chunks/<n>``    chunk n: ``chunk_size`` items, gzip-compressed JSON Lines
``POST /reports``                   starts a report: ``201``, ``Location: /reports/r-N``
``GET /reports/<id>``               ``{"state": "queued"}``, then ``{"state": "completed",
                                    "result": {"url": <a pre-signed URL on the storage origin>}}``
=================================== ===============================================================

The storage (``api.storage``, another :class:`LocalApi`: another origin) serves the report as a
zip holding ``items.csv``. Every API route requires ``X-Api-Key: <api.key>``; the storage
records what it received, so a test can check that no credential went there.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable

from .server import LocalApi, Request, Response

API_KEY = "export-key-123"


def make_items(count: int) -> list[dict]:
    return [{"id": i, "name": f"item {i}"} for i in range(1, count + 1)]


def jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def csv_of(items: list[dict]) -> bytes:
    return ("id,name\n" + "".join(f"{item['id']},{item['name']}\n" for item in items)).encode()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


class ExportApi(LocalApi):
    """Start with ``with ExportApi(items) as api:``; knobs are plain attributes."""

    def __init__(self, items: list[dict] | None = None, chunk_size: int = 10):
        super().__init__()
        self.items = items if items is not None else make_items(23)
        self.chunk_size = chunk_size
        self.key = API_KEY
        self.polls_before_ready = 2
        self.fail_job = False
        self.never_ready = False
        self.jobs = 0
        self.polls = 0
        self.chunk_body: Callable[[list[dict]], bytes] = lambda items: gzip.compress(jsonl(items))
        self.report_body: Callable[[list[dict]], bytes] = lambda items: zipped("items.csv", csv_of(items))
        self.storage = LocalApi()
        self.route("POST", "/exports", self.guarded(self.start_export))
        self.route("GET", r"/exports/(?P<job>[^/]+)", self.guarded(self.export_status))
        self.route("GET", r"/exports/(?P<job>[^/]+)/chunks/(?P<number>\d+)", self.guarded(self.chunk))
        self.route("POST", "/reports", self.guarded(self.start_report))
        self.route("GET", r"/reports/(?P<job>[^/]+)", self.guarded(self.report_status))

    def __enter__(self) -> ExportApi:
        super().__enter__()
        self.storage.__enter__()
        self.storage.route("GET", r"/bucket/(?P<name>[^/]+)", self.stored)
        return self

    def __exit__(self, *exc) -> None:
        self.storage.__exit__(*exc)
        super().__exit__(*exc)

    def guarded(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def wrapped(request: Request, **groups) -> Response:
            if request.headers.get("x-api-key") != self.key:
                return Response(401, {"message": "a valid X-Api-Key is required"})
            return handler(request, **groups)

        return wrapped

    # -- export jobs ---------------------------------------------------------------------------

    def chunks(self) -> list[int]:
        return list(range(1, (len(self.items) + self.chunk_size - 1) // self.chunk_size + 1))

    def start_export(self, request: Request) -> Response:
        self.jobs += 1
        return Response(202, {"export_id": f"e-{self.jobs}"})

    def status(self) -> str:
        self.polls += 1
        if self.fail_job and self.polls > self.polls_before_ready:
            return "ERROR"
        if self.never_ready or self.polls <= self.polls_before_ready:
            return "PROCESSING"
        return "FINISHED"

    def export_status(self, request: Request, job: str) -> Response:
        status = self.status()
        body: dict = {"status": status}
        if status == "FINISHED":
            body["chunks"] = self.chunks()
        if status == "ERROR":
            body["error"] = "the export ran out of disk"
        return Response(200, body)

    def chunk(self, request: Request, job: str, number: str) -> Response:
        start = (int(number) - 1) * self.chunk_size
        items = self.items[start : start + self.chunk_size]
        return Response(200, self.chunk_body(items), headers={"Content-Type": "application/octet-stream"})

    # -- a report on another origin --------------------------------------------------------------

    def start_report(self, request: Request) -> Response:
        self.jobs += 1
        return Response(201, {"accepted": True}, headers={"Location": f"/reports/r-{self.jobs}"})

    def report_status(self, request: Request, job: str) -> Response:
        status = self.status()
        if status == "FINISHED":
            url = f"{self.storage.url}/bucket/{job}.zip?signature=s3cr3t-signature"
            return Response(200, {"state": "completed", "result": {"url": url}})
        return Response(200, {"state": "failed" if status == "ERROR" else "queued"})

    def stored(self, request: Request, name: str) -> Response:
        if request.query.get("signature") != "s3cr3t-signature":
            return Response(403, {"message": "bad signature"})
        return Response(200, self.report_body(self.items), headers={"Content-Type": "application/zip"})
