"""The one retry policy: which failures are worth another attempt, and how long to wait.

Every HTTP caller (a source's requests, its OAuth2 token requests, ``etl sync``) runs
its attempts through :class:`Attempts`::

    attempts = Attempts(policy, f"GET {url}")
    for _ in attempts:
        try:
            response = session.send(...)
        except RETRYABLE_ERRORS as exc:
            failure = attempts.transport_failed(exc)   # waits, or says why it gives up
            if failure:
                raise SomeError(f"GET {url} {failure}")
            continue
        if attempts.retry_status(response):             # waits (Retry-After or backoff)
            continue
        ...                                             # final: use it, or raise with attempts.suffix

Transport failures (refused or reset connections, timeouts, a body cut short) and the
policy's statuses (429 and 5xx by default) are retried with exponential backoff and
"equal jitter"; a ``Retry-After`` header (seconds or an HTTP-date) is honoured, and one
asking for more than :data:`MAX_RETRY_AFTER` ends the request instead of hanging the run.

urllib3's ``Retry`` and tenacity were weighed: urllib3 retries inside its connection
pool, below the request budgets, the OAuth2 refresh and the per-attempt log line, and
cannot see a body cut short (read after it returns); tenacity would wrap this loop
without removing any of its decisions. What is ours is the policy, and it lives here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from ..errors import DeadlineExceeded
from . import clock

log = logging.getLogger("etl.http")

DEFAULT_RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After fails the request instead of hanging the run

# Transport failures worth another attempt: refused/reset connections, timeouts, a body cut short.
RETRYABLE_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets, and the backoff between them (seconds)."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    statuses: tuple[int, ...] = DEFAULT_RETRY_STATUSES

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with 'equal jitter': between half and all of
        min(max_delay, initial_delay * 2^(attempt-1))."""
        ceiling = min(self.max_delay, self.initial_delay * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class Attempts:
    """The attempts of one logical request under a :class:`RetryPolicy`.

    Iterating yields attempt numbers (1, 2, ...); the loop body decides, with
    :meth:`transport_failed` and :meth:`retry_status`, whether to go round again.
    """

    def __init__(self, policy: RetryPolicy, what: str):
        self.policy = policy
        self.what = what  # "GET https://..." (redacted), for log lines
        self.number = 0
        self.gave_up = ""  # why a retryable status was not retried (a Retry-After too long)

    def __iter__(self) -> Iterator[int]:
        while True:
            self.number += 1
            yield self.number

    def repeat_for_free(self) -> None:
        """The next attempt does not count (the request is repeated with a fresh token)."""
        self.number -= 1

    def transport_failed(self, exc: Exception) -> str | None:
        """After a transport failure: wait and return None, or return why it gives up."""
        reason = connection_reason(exc)
        if self.number >= self.policy.max_attempts:
            return f"failed after {self.number} attempts: {reason}"
        self._wait(self.policy.backoff(self.number), f"{self.what}: {reason}")
        return None

    def retry_status(self, response: requests.Response) -> bool:
        """True (after waiting) when the response's status is worth another attempt."""
        status = response.status_code
        if status not in self.policy.statuses or self.number >= self.policy.max_attempts:
            return False
        delay = retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = self.policy.backoff(self.number)
        elif delay > MAX_RETRY_AFTER:
            self.gave_up = f" (Retry-After asks for {delay:.0f}s; giving up)"
            return False
        self._wait(delay, f"{self.what} -> {status}")
        return True

    @property
    def suffix(self) -> str:
        """What a final error message adds: the attempts made, or why retrying stopped."""
        if self.gave_up:
            return self.gave_up
        return f" (after {self.number} attempts)" if self.number > 1 else ""

    def _wait(self, delay: float, context: str) -> None:
        log.info("%s; retry %d/%d in %.1fs", context, self.number, self.policy.max_attempts - 1, delay)
        clock.sleep(delay)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def connection_reason(exc: Exception) -> str:
    """A transport failure in a few words ("timed out", "connection refused")."""
    if isinstance(exc, DeadlineExceeded):
        return f"timed out ({exc})"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection closed in the middle of the response body"
    text = str(exc)
    for marker in (
        "Connection refused",
        "Connection reset",
        "Connection aborted",
        "RemoteDisconnected",
        "IncompleteRead",
        "Name or service not known",
        "Temporary failure in name resolution",
    ):
        if marker in text:
            return marker.lower() if marker[0].isupper() and " " in marker else marker
    return type(exc).__name__ + (f": {text[:200]}" if text else "")
