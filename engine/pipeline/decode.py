"""Bodies other than one JSON object (a step's ``response``): JSON Lines, CSV, XML, and gzip or
zip archives of any of them, read as streams of *documents*.

A document is what a step's ``records`` selector is applied to: a JSON body, one line of JSON
Lines, one row of CSV (an object keyed by the header), one XML file (or each of its
``response.xml.element`` elements: see ``xmlrecords.py``). A body is read from a file
(a download spooled to disk as it arrived: ``fetch.py``), a chunk at a time, and documents
come out one at a time, so memory stays flat whatever the size of the body. Bytes decompressed
here count against the source's ``max_response_bytes`` like the bytes of the response.

The format and compression are the mapping's (``response.format``, ``response.compression``);
``auto`` looks at the response's ``Content-Type``, then at the file name (``Content-Disposition``,
the URL's path, a zip member's name), then at the first bytes.

A row or line that cannot be read is a warning (``warn``) and the rest are kept; a body that
cannot be read at all is a :class:`~engine.errors.BodyFormatError`.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO
from urllib.parse import unquote, urlsplit

from ..errors import BodyFormatError
from ..jsonio import decode_json
from .fetch import Page
from .plan import CsvFormat, ResponseFormat
from .xmlrecords import XmlDocuments

CHUNK = 64 * 1024
SNIFF = 64 * 1024  # bytes looked at to tell JSON from JSON Lines
Warn = Callable[[str], None]

CONTENT_TYPES = {
    "application/json": "json",
    "text/json": "json",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/x-csv": "csv",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/zip": "zip",
    "application/x-zip-compressed": "zip",
}
SUFFIXES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".xml": "xml",
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zip": "zip",
}
BOOLEANS = {"true": True, "t": True, "yes": True, "y": True, "1": True}
BOOLEANS.update({"false": False, "f": False, "no": False, "n": False, "0": False})


@dataclass(frozen=True)
class Body:
    """A response body to read: the file it was spooled to, and what its response said."""

    file: BinaryIO
    name: str  # the file name (Content-Disposition, else the URL's last path segment), for auto and messages
    content_type: str  # the media type, lower case, without parameters
    max_bytes: int  # the limit of decompressed bytes
    label: str = ""  # what messages call it (the URL); the name when not given


class DocumentList(list):
    """The documents of a page decoded whole, when the body is many of them (JSON Lines, CSV,
    XML with ``element``, a zip): the step's ``records`` applies to each."""


class Documents:
    """The documents of ``body``, one at a time, as ``spec`` (or ``auto``) says. ``many`` tells
    whether the body is a sequence of documents (JSON Lines, CSV, XML with ``element``, a zip)
    or one document (JSON, XML without ``element``)."""

    def __init__(self, body: Body, spec: ResponseFormat, warn: Warn):
        self.body, self.spec, self.warn = body, spec, warn
        self.compression = spec.compression if spec.compression != "auto" else detect_compression(body)
        self.stream: BinaryIO = body.file
        self.label = body.label or body.name
        name, media = body.name, body.content_type
        if self.compression == "gzip":
            self.stream = _buffered(_Gunzip(body.file, body.max_bytes, self.label))
            name, media = _without_suffix(name, (".gz", ".gzip")), ""
        if self.compression == "zip":
            self.kind = "zip"
        else:
            self.kind = spec.format if spec.format != "auto" else detect_format(self.stream, name, media)
        self.many = self.kind in ("jsonl", "csv", "zip") or (self.kind == "xml" and bool(spec.xml.element))

    def __iter__(self) -> Iterator[Any]:
        if self.kind == "zip":
            return _zip_documents(self.body, self.spec, self.warn)
        return _documents_of(self.stream, self.spec, self.kind, self.label, "", self.warn)


def body_of(page: Page, max_bytes: int) -> Body:
    """The body of a download (``page.file``), named as its response names it."""
    assert page.file is not None
    name = file_name(page.headers, page.url)
    return Body(page.file, name, media_type(page.headers.get("Content-Type")), max_bytes, page.url)


def file_name(headers: Mapping[str, str], url: str) -> str:
    """The file name a response gives its body: ``Content-Disposition``'s, else the last
    segment of the URL's path (else ``body``)."""
    disposition = headers.get("Content-Disposition") or ""
    found = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition, re.IGNORECASE)
    if found:
        return unquote(found.group(1).strip()).rsplit("/", 1)[-1] or "body"
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "body"


def documents(body: Body, spec: ResponseFormat, warn: Warn) -> Iterator[Any]:
    """Every document of ``body``, one at a time (see :class:`Documents`)."""
    return iter(Documents(body, spec, warn))


def _documents_of(stream: BinaryIO, spec: ResponseFormat, kind: str, name: str, media: str, warn: Warn) -> Iterator:
    if kind == "auto":
        kind = detect_format(stream, name, media)
    if kind == "json":
        yield _json_document(stream, name)
    elif kind == "jsonl":
        yield from _json_lines(stream, name, warn)
    elif kind == "csv":
        yield from _csv_rows(stream, spec.csv, name, warn)
    else:
        yield from XmlDocuments(spec.xml, name, warn).read(stream)


# -- choosing ----------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _by_type(media: str) -> str | None:
    if media in CONTENT_TYPES:
        return CONTENT_TYPES[media]
    if media.endswith("+json"):
        return "json"
    if media.endswith("+xml"):
        return "xml"
    return None


def _by_name(name: str) -> str | None:
    lowered = name.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if lowered.endswith(suffix)), None)


def _without_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    lowered = name.lower()
    for suffix in suffixes:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_compression(body: Body) -> str:
    """gzip or zip by the content type, the file name, then the magic bytes; else none."""
    for found in (_by_type(body.content_type), _by_name(body.name)):
        if found in ("gzip", "zip"):
            return found
    head = _peek(body.file, 4)
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    return "none"


def detect_format(stream: BinaryIO, name: str, media: str) -> str:
    """json, jsonl, csv or xml by the content type, the file name, then the first bytes:
    ``<`` is XML; a JSON value followed by another on a later line is JSON Lines; JSON
    otherwise; text that starts like neither is CSV."""
    for found in (_by_type(media), _by_name(name)):
        if found in ("json", "jsonl", "csv", "xml"):
            return found
    head = _peek(stream, SNIFF).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "xml"
    if not head.startswith((b"{", b"[")):
        return "csv" if head else "json"
    first, newline, rest = head.partition(b"\n")
    if newline and rest.strip():
        try:
            decode_json(first)
        except ValueError:
            return "json"
        return "jsonl"
    return "json"


def _buffered(raw: io.RawIOBase) -> BinaryIO:
    return io.BufferedReader(raw, buffer_size=SNIFF)


def _peek(stream: BinaryIO, size: int) -> bytes:
    """The first ``size`` bytes of ``stream`` (at most what one read gives, when it cannot
    seek back), which is left where it was."""
    if not stream.seekable():
        return bytes(stream.peek(size)[:size])  # type: ignore[attr-defined]
    position = stream.tell()
    head = stream.read(size)
    stream.seek(position)
    return head


# -- decompression -------------------------------------------------------------------------------


class _Gunzip(io.RawIOBase):
    """A gzip stream (one member or several, concatenated) inflated a chunk at a time; more than
    ``limit`` bytes inflated is a :class:`BodyFormatError` (a decompression bomb is refused)."""

    def __init__(self, raw: BinaryIO, limit: int, name: str):
        self.raw, self.limit, self.name = raw, limit, name
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.leftover = b""  # bytes after the end of a member: the next member
        self.in_member = False
        self.pending = b""
        self.size = 0

    def readable(self) -> bool:
        return True

    def _more(self) -> bytes:
        """The next inflated bytes (b"" at the end)."""
        while True:
            if self.inflater.unconsumed_tail:
                data = self.inflater.unconsumed_tail
            elif self.leftover:
                data, self.leftover = self.leftover, b""
            else:
                data = self.raw.read(CHUNK)
            if not data:
                if self.in_member:
                    raise BodyFormatError(f"{self.name}: the gzip stream ends before its end (a truncated file)")
                return b""
            self.in_member = True
            try:
                out = self.inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise BodyFormatError(f"{self.name} is not a readable gzip file: {exc}") from None
            if self.inflater.eof:  # the end of one member; another may follow
                rest = self.inflater.unused_data
                self.leftover = rest if rest.strip(b"\x00") else b""
                self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.in_member = False
            if out:
                self.size += len(out)
                if self.size > self.limit:
                    raise BodyFormatError(
                        f"{self.name} inflates to more than the limit of {self.limit} bytes; refused (a "
                        f"decompression bomb, or a file larger than the source's max_response_bytes allows)"
                    )
                return out

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            self.pending = self._more()
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class _Limited(io.RawIOBase):
    """A stream (a zip member) whose bytes count against a limit shared by the archive."""

    def __init__(self, raw: IO[bytes], counter: list[int], limit: int, name: str):
        self.raw, self.counter, self.limit, self.name = raw, counter, limit, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.raw.read(len(buffer))
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise BodyFormatError(f"{self.name} cannot be read from the zip archive: {exc}") from None
        self.counter[0] += len(data)
        if self.counter[0] > self.limit:
            raise BodyFormatError(
                f"{self.name}: the zip archive inflates to more than the limit of {self.limit} bytes; refused"
            )
        buffer[: len(data)] = data
        return len(data)


def _zip_documents(body: Body, spec: ResponseFormat, warn: Warn) -> Iterator[Any]:
    """The documents of every file in a zip archive (``response.members``: those whose name
    matches), in archive order. A zip is read through its central directory, at its end: the
    archive is the spooled file, its members are inflated a chunk at a time."""
    try:
        archive = zipfile.ZipFile(body.file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BodyFormatError(f"{body.label or body.name} is not a readable zip archive: {exc}") from None
    counter = [0]
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if spec.members:
            members = [m for m in members if _matches(m.filename, spec.members)]
            if not members:
                names = ", ".join(m.filename for m in archive.infolist()[:10]) or "none"
                warn(
                    f"{body.label or body.name}: no file in the zip archive matches members '{spec.members}' "
                    f"(it has: {names})"
                )
        for member in members:
            name = f"{body.label or body.name}: {member.filename}"
            try:
                raw = archive.open(member)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                raise BodyFormatError(f"{name} cannot be read from the zip archive: {exc}") from None
            with raw:
                stream = _buffered(_Limited(raw, counter, body.max_bytes, name))
                kind = spec.format
                if _by_name(member.filename) == "gzip":
                    stream = _buffered(_Gunzip(stream, body.max_bytes, name))
                    if kind == "auto":
                        kind = detect_format(stream, _without_suffix(member.filename, (".gz", ".gzip")), "")
                yield from _documents_of(stream, spec, kind, name, "", warn)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)


# -- the formats -----------------------------------------------------------------------------------


def _json_document(stream: BinaryIO, name: str) -> Any:
    data = stream.read()
    try:
        return decode_json(data)
    except RecursionError:
        raise BodyFormatError(f"{name}: JSON nested too deeply to read ({len(data)} bytes)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyFormatError(f"{name} is not JSON ({len(data)} bytes): {exc}") from None


def _json_lines(stream: BinaryIO, name: str, warn: Warn) -> Iterator[Any]:
    """One document per non-blank line; a line that is not JSON is a warning."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield decode_json(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            shown = line[:80].decode("utf-8", "replace").strip()
            warn(f"{name}: line {number} is not JSON ({describe(exc)}): {shown!r}; skipped")


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


def _csv_rows(stream: BinaryIO, spec: CsvFormat, name: str, warn: Warn) -> Iterator[dict]:
    """One object per row, keyed by the header row, typed by ``spec.columns``; an empty cell is
    null. A row that cannot be read (its field count, a cell of the wrong type, bad quoting)
    is a warning, and the other rows are kept."""
    text = io.TextIOWrapper(stream, encoding=spec.encoding, newline="")
    reader = csv.reader(text, delimiter=spec.delimiter, quotechar=spec.quote, strict=True)
    types = dict(spec.columns)
    try:
        header = _next_row(reader, name, spec)
        while header is not None and not any(cell.strip() for cell in header):
            header = _next_row(reader, name, spec)
        if header is None:
            return
        header = [cell.strip() for cell in header]
        missing = [column for column in types if column not in header]
        if missing:
            warn(
                f"{name}: response.csv.columns names {', '.join(missing)}, which the header row does not have "
                f"(it has: {', '.join(header[:20])})"
            )
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            warn(f"{name}: the header row names {', '.join(repeated)} more than once; the last one is kept")
        converters = [(column, _converter(types.get(column, "string"), column)) for column in header]
        while True:
            first = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                lines = f"line {first}" if reader.line_num <= first else f"lines {first}-{reader.line_num}"
                warn(f"{name}: {lines}: not a readable CSV row ({exc}); skipped")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                warn(
                    f"{name}: line {reader.line_num}: {len(row)} field(s), but the header has {len(header)}; "
                    f"row skipped"
                )
                continue
            try:
                yield {column: convert(cell) for (column, convert), cell in zip(converters, row)}
            except _CellError as exc:
                warn(f"{name}: line {reader.line_num}: {exc}; row skipped")
    except UnicodeDecodeError as exc:
        raise BodyFormatError(
            f"{name} is not {spec.encoding} text ({exc.reason} at byte {exc.start}); set response.csv.encoding "
            f"(latin-1, say)"
        ) from None


def _next_row(reader: Any, name: str, spec: CsvFormat) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise BodyFormatError(f"{name}: the header row is not readable CSV: {exc}") from None


class _CellError(ValueError):
    """A cell that is not of its column's type."""


def _as_string(cell: str) -> str | None:
    return cell if cell != "" else None


def _as_integer(cell: str) -> int | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise _CellError(f"{cell!r} is not an integer")


def _as_number(cell: str) -> int | float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise _CellError(f"{cell!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _CellError(f"{cell!r} is not a finite number")
    return number


def _as_boolean(cell: str) -> bool | None:
    text = cell.strip().lower()
    if not text:
        return None
    if text in BOOLEANS:
        return BOOLEANS[text]
    raise _CellError(f"{cell!r} is not a boolean (true/false, yes/no, 1/0)")


def _as_json(cell: str) -> Any:
    if not cell.strip():
        return None
    try:
        return decode_json(cell)
    except (ValueError, RecursionError) as exc:
        raise _CellError(f"{cell[:60]!r} is not JSON ({describe(exc)})") from None


def _converter(kind: str, column: str) -> Callable[[str], Any]:
    """The converter of a column: its type's, naming the column when a cell is not of it."""
    convert = _CONVERTERS[kind]
    if kind == "string":
        return convert

    def typed(cell: str) -> Any:
        try:
            return convert(cell)
        except _CellError as exc:
            raise _CellError(f"column {column!r}: {exc}") from None

    return typed


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "string": _as_string,
    "integer": _as_integer,
    "number": _as_number,
    "boolean": _as_boolean,
    "json": _as_json,
}
