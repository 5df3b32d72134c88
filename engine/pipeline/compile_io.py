"""Compiling what a step reads and remembers besides JSON pages: ``response`` (bodies in other
formats), ``export`` (asynchronous export jobs), ``incremental`` (the high-water mark), and
pagination values read from response headers (``{header: NAME}``).

A mixin of :class:`~engine.pipeline.compile.Compiler`; every problem is located
(``FILE:LINE:COL``) like the rest of the compiler's.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any

from ..lang.template_checks import REQUEST_VARIABLES
from ..lang.values import Value
from .compile_values import ValueCompiler
from .load import PathT
from .plan import (
    CsvFormat,
    ExportJob,
    Incremental,
    RequestSpec,
    ResponseFormat,
    XmlFormat,
)

# What the templates of an export's status and download requests see.
EXPORT_VARIABLES = (REQUEST_VARIABLES - {"paging", "parent"}) | {"job"}
DOWNLOAD_VARIABLES = EXPORT_VARIABLES | {"file"}
FALSE_TEXTS = frozenset({"", "false", "0", "no", "off"})


def header_value(name: str, holds: str) -> Value:
    """``{header: NAME}``: the response header ``NAME`` (any case), as ``holds`` says: a
    ``number`` (its text converted; text that is not one is left for the caller to refuse), a
    ``flag`` (``false``, ``0``, ``no``, ``off`` and empty are false) or ``text``. A missing
    header is null."""
    convert = _CONVERSIONS[holds]

    def evaluate(scope: Any) -> Any:
        headers = scope.variables.get("headers") or {}
        text = headers.get(name)
        return None if text is None else convert(text.strip())

    return Value("header", f"header {name}", evaluate)


def _number(text: str) -> Any:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


_CONVERSIONS: dict[str, Callable[[str], Any]] = {
    "number": _number,
    "flag": lambda text: text.lower() not in FALSE_TEXTS,
    "text": lambda text: text or None,
}


class StepIoCompiler(ValueCompiler):
    """Compiles a step's ``response``, ``export`` and ``incremental``."""

    # the compiler's request compiler (compile.py)
    request: Callable[..., RequestSpec | None]

    def body_or_header(self, raw: Any, path: PathT, holds: str) -> Value | None:
        """A value read from the body (a JMESPath string) or from a header (``{header: NAME}``)."""
        if isinstance(raw, dict):
            return header_value(str(raw["header"]), holds)
        return self.expression(raw, path)

    # -- response ----------------------------------------------------------------------------

    def response_format(self, spec: dict | None, path: PathT) -> ResponseFormat | None:
        if spec is None:
            return None
        kind = spec.get("format", "auto")
        compression = spec.get("compression", "auto")
        for name, fits in (("csv", ("csv", "auto")), ("xml", ("xml", "auto"))):
            if name in spec and kind not in fits:
                self.problem(path + (name,), f"'{name}' options are for format {name} (or auto), not {kind}", key=True)
        if "members" in spec and compression not in ("zip", "auto"):
            self.problem(path + ("members",), f"'members' picks files of a zip archive; compression is {compression}")
        return ResponseFormat(
            format=kind,
            compression=compression,
            members=spec.get("members"),
            csv=self.csv_format(spec.get("csv") or {}, path + ("csv",)),
            xml=self.xml_format(spec.get("xml") or {}, path + ("xml",)),
        )

    def csv_format(self, spec: dict, path: PathT) -> CsvFormat:
        encoding = spec.get("encoding", "utf-8-sig")
        try:
            codecs.lookup(encoding)
        except LookupError:
            self.problem(path + ("encoding",), f"unknown text encoding '{encoding}' (utf-8, latin-1, cp1252, ...)")
            encoding = "utf-8-sig"
        if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            encoding = "utf-8-sig"  # a byte order mark is never part of the first column's name
        delimiter = spec.get("delimiter", ",")
        quote = spec.get("quote", '"')
        if delimiter == quote:
            self.problem(path + ("quote",), "the quote character cannot be the delimiter")
        return CsvFormat(
            delimiter=delimiter,
            quote=quote,
            encoding=encoding,
            columns=tuple((str(name), kind) for name, kind in (spec.get("columns") or {}).items()),
        )

    def xml_format(self, spec: dict, path: PathT) -> XmlFormat:
        namespaces = spec.get("namespaces", "strip")
        element: tuple[str, ...] = ()
        if "element" in spec:
            raw = str(spec["element"]).strip()
            parts = [part.strip() for part in raw.strip("/").split("/")]
            if not raw.strip("/") or not all(parts):
                self.problem(path + ("element",), f"'{raw}' is not an element name or a path like report/hosts/host")
            if namespaces == "strip":
                parts = [part.rsplit(":", 1)[-1] for part in parts]
            element = tuple(parts)
        return XmlFormat(
            element=element,
            rooted="/" in str(spec.get("element", "")),
            namespaces=namespaces,
            attribute_prefix=spec.get("attribute_prefix", ""),
            text_key=spec.get("text_key", "_text"),
            lists=frozenset(spec.get("lists") or ()),
        )

    # -- export --------------------------------------------------------------------------------

    def export_job(
        self, spec: dict | None, path: PathT, step: dict, source_names: set[str], extra: frozenset[str]
    ) -> ExportJob | None:
        """``export``: needs the step's request (it starts the job); no fan-out, no pagination."""
        if spec is None:
            return None
        if "request" not in step:
            self.problem(path, "an export needs the step's request: the request that starts the job")
        if "for_each" in step:
            self.problem(path, "an export job cannot be started per parent entity (for_each); use one step per job")
        if (step.get("pagination") or {}).get("kind", "none") != "none":
            self.problem(path, "an export step has no pagination: its records come from the job's files")
        source = (step.get("request") or {}).get("source")
        status = self.request(
            {"source": source, **spec["status"]} if source else spec["status"],
            path + ("status",),
            source_names,
            EXPORT_VARIABLES | extra,
        )
        download = None
        if "download" in spec:
            raw = spec["download"]
            download = self.request(
                {"source": source, **raw} if source and "source" not in raw else raw,
                path + ("download",),
                source_names,
                DOWNLOAD_VARIABLES | extra,
            )
        poll = spec.get("poll") or {}
        interval = float(poll.get("interval", 2))
        max_interval = float(poll.get("max_interval", 30))
        if max_interval < interval:
            self.problem(path + ("poll", "max_interval"), f"max_interval ({max_interval:g}) is less than interval")
        job_id = self.body_or_header(spec["job_id"], path + ("job_id",), "text")
        ready = self.expression(spec["ready"], path + ("ready",))
        failed = self.expression(spec["failed"], path + ("failed",)) if "failed" in spec else None
        files = self.expression(spec["files"], path + ("files",))
        if None in (job_id, ready, files, status):
            return None
        assert job_id is not None and ready is not None and files is not None and status is not None
        return ExportJob(
            job_id=job_id,
            status=status,
            ready=ready,
            failed=failed,
            files=files,
            download=download,
            interval=interval,
            max_interval=max_interval,
            backoff=float(poll.get("backoff", 1.5)),
            timeout=float(poll.get("timeout", 3600)),
        )

    # -- incremental -----------------------------------------------------------------------

    def incremental(self, spec: dict | None, path: PathT, step: dict) -> Incremental | None:
        if spec is None:
            return None
        if "request" not in step:
            self.problem(path, "an incremental step needs a request to pass its state to")
        mark = self.expression(spec["mark"], path + ("mark",)) if "mark" in spec else None
        return Incremental(mark=mark, compare=spec.get("compare", "time"))
