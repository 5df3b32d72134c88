"""Every error the engine reports, and every exit code of the ``etl`` command.

An error a user can act on is an :class:`EtlError`: its message is complete (what went
wrong, where, and what to do) and its class carries the exit code. The CLI converts
errors in one place (``engine/cli/__init__.py``): it prints ``etl: error: <message>``
(redacted) and exits with ``error.exit_code``. Anything else that escapes a command is a
bug: one line naming it, a hint to re-run with ``--debug`` for the traceback, and
:data:`EXIT_INTERNAL` - never 1, which means "partial success".

The few errors that are not :class:`EtlError` are signals between the engine's own parts
(an expression that does not compile, a value a function cannot convert); each is
caught and turned into a located message before a user sees it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

import requests

# -- exit codes (README.md "Exit codes" and each command's --help) -------------------------

EXIT_OK = 0
EXIT_PARTIAL = 1  # the run finished and wrote output, but some data is missing
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_INVALID_MAPPING = 3
EXIT_CONFIG = 4
EXIT_RUN_FAILED = 5  # nothing was written; the previous output is intact
EXIT_INTERNAL = 70  # a bug in etl (sysexits' EX_SOFTWARE); re-run with --debug for the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; the previous output is intact
EXIT_BROKEN_PIPE = 141  # stdout was closed by the reader (128 + SIGPIPE), e.g. `etl diff a b | head`

# `etl diff`, as diff(1)
EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_BAD_OUTPUT = 3  # a directory is not a readable output directory

# `etl alerts`
EXIT_NO_ALERTS = 0
EXIT_ALERTS = 1
EXIT_BAD_RULES = 4
EXIT_RULE_FAILED = 5


# -- where a problem is --------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A position in a mapping file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One problem found in a mapping (or rules) file."""

    location: Location | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"

    def sort_key(self) -> tuple:
        loc = self.location
        return (loc.file, loc.line, loc.column) if loc else ("", 0, 0)


def did_you_mean(name: object, options: Iterable[object], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``name``, or ``''``."""
    match = difflib.get_close_matches(str(name), sorted(map(str, options)), n=1, cutoff=cutoff)
    return f" (did you mean '{match[0]}'?)" if match else ""


# -- errors users see ------------------------------------------------------------------------


class EtlError(Exception):
    """Base class of every error the engine reports to users; carries the exit code."""

    exit_code = EXIT_RUN_FAILED


class ProblemsError(EtlError):
    """A file with problems; carries every problem found, sorted by position."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=Problem.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class MappingError(ProblemsError):
    """The mapping file is invalid."""

    exit_code = EXIT_INVALID_MAPPING


class RulesError(ProblemsError):
    """An alert rules file cannot be read, or is invalid."""

    exit_code = EXIT_BAD_RULES


class UsageError(EtlError):
    """An option or argument cannot be used as given (found after the command line was parsed)."""

    exit_code = EXIT_USAGE


class ConfigError(EtlError):
    """A configuration value (or a credential of a command) is missing or has the wrong type."""

    exit_code = EXIT_CONFIG


class FetchError(EtlError):
    """An HTTP request failed for good (after retries), or its response was unusable."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "", body: str = ""):
        self.status = status
        self.url = url
        self.body = body
        super().__init__(message)


class AuthenticationError(FetchError):
    """The credentials were refused. Fatal for the whole run."""


class PaginationLoopError(FetchError):
    """A paginator asked for a page it had already asked for."""


class RequestBuildError(FetchError):
    """A template of a step's request (or its page size) failed at run time; ``field`` is where
    it is in the step (``request.params.since``). It fails the step, as a failed request does."""

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


class SigningError(FetchError):
    """A template of a source's ``sign`` failed for a request (``pipeline/signing.py``); the
    message names it (``sources.api.sign.headers.X-Signature``). It fails the step, as a
    failed request does."""


class RateLimitExhausted(FetchError):
    """The API announced (rate limit headers) that nothing is left of its quota until a reset
    further away than the source's ``rate_limit_headers.max_wait``: the request is not sent."""


class ExportJobError(FetchError):
    """An export job (a step's ``export``) failed, or did not finish within its timeout; the
    message names the job and its last status. It fails the step, as a failed request does."""


class EvaluationError(EtlError):
    """A template or expression evaluated once per run on the config failed (an instance tag, a
    source's base URL, headers or credentials, a step's ``when``); the message names where it is."""


class OutputError(EtlError):
    """The output directory cannot be written or replaced."""


class OutputDirError(EtlError):
    """A directory given to read is not a readable output directory of ``etl run``."""

    exit_code = EXIT_BAD_OUTPUT


class SyncError(EtlError):
    """The synchronization failed; the job (if one was created) was aborted."""


class SyncInputError(UsageError):
    """The directory to upload is not an output directory, or a sync setting is unusable."""


class VisualizeError(EtlError):
    """A graph file cannot be read, or the page cannot be written."""


class DocumentationMarkerError(EtlError):
    """The documentation file has the start marker but no end marker after it; nothing was written."""


class ScaffoldError(UsageError):
    """``etl new NAME`` cannot start a vendor: NAME is not a slug, or its files exist (no ``--force``)."""


class ScaffoldWriteError(EtlError):
    """A file ``etl new`` or ``etl schema -o`` was asked to write cannot be written."""


class RunInterrupted(EtlError):
    """Stopped by Ctrl-C or SIGTERM; the previous output is intact."""

    exit_code = EXIT_INTERRUPTED


# -- signals between the engine's parts (located and reworded before a user sees them) -----


class ExpressionError(ValueError):
    """A JMESPath expression or Jinja template does not compile; ``offset`` is 0-based."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


class ValueProblem(ValueError):
    """A function or filter could not convert a value (an unparsable date, say)."""


class LimitExceeded(ValueProblem):
    """A template or expression would build a value, or do work, beyond one of the limits
    of ``engine/lang/limits.py`` (a string longer than 1,000,000 characters, say)."""


class RecordsError(ValueError):
    """A page body the step's records selector cannot make records of."""


class BodyFormatError(ValueError):
    """A body that cannot be read in its format as a whole (not gzip, not a zip, XML that is not
    well-formed outside any record, XML declaring entities, larger than the limit once
    decompressed); the caller names the URL. A single bad row or record is a warning instead."""


# -- a response the engine will not wait for, or read (``http/transfer.py``) ----------------


class DeadlineExceeded(requests.exceptions.ReadTimeout):
    """The attempt took longer than the source's timeout in all (retried like a timeout)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        super().__init__(f"no complete response within {timeout:g}s")


class ResponseTooLarge(Exception):
    """The body is larger than the limit, once decoded (not retried)."""

    def __init__(self, limit: int, declared: int | None = None):
        self.limit = limit
        self.declared = declared
        size = f"declares {declared} bytes" if declared is not None else "is larger"
        super().__init__(f"the response body {size}, more than the limit of {limit} bytes (decoded)")


class TooManyRedirects(Exception):
    """More than :data:`MAX_REDIRECTS` redirects in one attempt (not retried)."""


class PayloadTooLarge(Exception):
    """The server refused an upload as too large (HTTP 413); the uploader shrinks the batch."""


# -- the graph store (engine/store/) -------------------------------------------------------


class StoreError(EtlError):
    """The graph store cannot be opened, read or written; a load that failed changed nothing."""


class StoreUrlError(UsageError):
    """A ``--store`` URL (or ``ETL_STORE``) that names no store etl can open."""


class StoreVersionError(StoreError):
    """The store was written by a newer etl (its schema version is newer than this code's)."""


# -- the query language (engine/query/) ------------------------------------------------------


class QueryError(UsageError):
    """A J1QL query that cannot be parsed or answered as written: ``query:LINE:COLUMN: message``.
    ``line`` and ``column`` are 1-based, ``offset`` 0-based (where a rules file locates it)."""

    def __init__(
        self, message: str, *, source: str = "query", line: int = 1, column: int = 1, offset: int = 0, text: str = ""
    ):
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.offset = offset
        self.text = text
        super().__init__(f"{source}:{line}:{column}: {message}")
