"""Errors a user can act on, and the exit codes the CLI maps them to.

Every error the engine raises on purpose is an :class:`EtlError`. The CLI prints
``str(error)`` (already redacted) and exits with ``error.exit_code``; anything else
is a bug and gets a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes, documented in README.md and `etl --help`.
EXIT_OK = 0
EXIT_PARTIAL = 1  # the run finished and wrote output, but some data is missing
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_INVALID_MAPPING = 3
EXIT_CONFIG = 4
EXIT_RUN_FAILED = 5  # nothing was written; the previous output is intact
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; the previous output is intact


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
    """One problem found in a mapping file."""

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


class EtlError(Exception):
    """Base class of every error the engine reports to users."""

    exit_code = EXIT_RUN_FAILED


class MappingError(EtlError):
    """The mapping file is invalid. Carries every problem found, sorted by position."""

    exit_code = EXIT_INVALID_MAPPING

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=Problem.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(EtlError):
    """A configuration value is missing or has the wrong type."""

    exit_code = EXIT_CONFIG


class FetchError(EtlError):
    """An HTTP request failed for good (after retries), or its response was unusable."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "", body: str = ""):
        self.status = status
        self.url = url
        self.body = body
        super().__init__(message)


class AuthenticationError(FetchError):
    """The validation call was refused: the credentials are wrong. Fatal."""


class PaginationLoopError(FetchError):
    """A paginator asked for a page it had already asked for."""


class RunInterrupted(EtlError):
    """The run was stopped by a signal; the previous output is intact."""

    exit_code = EXIT_INTERRUPTED
