"""How fast a source may send: the budgets its mapping declares, and the quota its API announces.

* **Budgets** (``rate_limits``): "at most 100 requests per 5 seconds", sliding windows kept
  on the client side (:class:`RateLimiter`).
* **The announced quota** (``rate_limit_headers``): many APIs say in every response how many
  requests are left and when the count resets (``X-RateLimit-Remaining`` and
  ``X-RateLimit-Reset``, the IETF draft's ``RateLimit-Remaining``/``RateLimit-Reset``/
  ``RateLimit-Limit``, or its structured ``RateLimit: "default";r=5;t=30`` with
  ``RateLimit-Policy: "default";q=100;w=60``). :class:`AnnouncedQuota` reads them from every
  response (:func:`read_announcement`; a value it cannot read is ignored, with a debug log)
  and, once what is left is down to the ``floor``, holds every request of the source until
  the reset - so the API never has to refuse one. ``Retry-After`` (``http/retry.py``) still
  covers a refusal.

One :class:`RateLimiter` per source is shared by all its threads (fan-out). Waits go through
``engine/http/clock.py``. A reset given as an epoch time is converted with ``clock.wall()``
(the real time; tests replace it with their fake clock's).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ..errors import RateLimitExhausted
from ..http import clock

if TYPE_CHECKING:
    from .plan import Source

log = logging.getLogger("etl.http")


RESET_FORMATS = ("auto", "seconds", "epoch", "epoch_ms")
DEFAULT_MAX_WAIT = 600.0  # seconds, as for Retry-After (http/retry.py)
# Two announcements of one window may put its reset a second apart (whole seconds, sent at
# different times); a reset later than that is a new window.
SAME_WINDOW = 1.0

# The usual header names, in the order they are looked for.
STANDARD_HEADERS = {
    "remaining": ("RateLimit-Remaining", "X-RateLimit-Remaining", "X-Rate-Limit-Remaining"),
    "reset": ("RateLimit-Reset", "X-RateLimit-Reset", "X-Rate-Limit-Reset"),
    "limit": ("RateLimit-Limit", "X-RateLimit-Limit", "X-Rate-Limit-Limit"),
}


@dataclass(frozen=True)
class HeaderLimits:
    """A source's ``rate_limit_headers``: which headers announce the quota (None: the usual
    ones), how to read the reset, what to keep in reserve and how long a wait may be."""

    remaining: str | None = None
    reset: str | None = None
    limit: str | None = None
    reset_format: str = "auto"  # auto | seconds | epoch | epoch_ms
    floor: int = 0  # wait for the reset once no more than this is left
    max_wait: float = DEFAULT_MAX_WAIT

    @classmethod
    def from_mapping(cls, raw: Any) -> HeaderLimits | None:
        """``true``, ``false`` or the block, as the schema checked it."""
        if raw is None or raw is False:
            return None
        if raw is True:
            return cls()
        return cls(
            remaining=raw.get("remaining"),
            reset=raw.get("reset"),
            limit=raw.get("limit"),
            reset_format=raw.get("reset_format", "auto"),
            floor=int(raw.get("floor", 0)),
            max_wait=float(raw.get("max_wait", DEFAULT_MAX_WAIT)),
        )


# ----------------------------------------------------------------------------------------
# Reading the headers


@dataclass(frozen=True)
class Announcement:
    """What one response said: requests left, the quota, seconds until the reset."""

    remaining: int | None = None
    limit: int | None = None
    reset: float | None = None
    header: str = ""  # the header that told what is left, for messages


def read_announcement(headers: Mapping[str, str], settings: HeaderLimits, now: float) -> Announcement:
    """The quota ``headers`` announce (``now``: epoch seconds, for an epoch reset). A header
    whose value cannot be read is left out, with a debug log."""
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    if settings.remaining is None and "ratelimit" in lowered:
        combined = _read(lowered, "RateLimit", lambda value: _structured(value, lowered.get("ratelimit-policy")))
        if combined is not None:
            remaining, reset, limit = combined
            return Announcement(remaining, limit, reset, "RateLimit")
    found: dict[str, Any] = {}
    names: dict[str, str] = {}
    readers = {
        "remaining": lambda value: int(min(_numbers(value))),
        "limit": lambda value: int(_numbers(value)[0]),
        "reset": lambda value: reset_seconds(value, settings.reset_format, now),
    }
    for field, reader in readers.items():
        configured = getattr(settings, field)
        for name in (configured,) if configured else STANDARD_HEADERS[field]:
            if name.lower() in lowered:
                found[field] = _read(lowered, name, reader)
                names[field] = name
                break
    return Announcement(found.get("remaining"), found.get("limit"), found.get("reset"), names.get("remaining", ""))


def _read(lowered: dict[str, str], name: str, reader: Any) -> Any:
    """``reader`` of header ``name``'s value, or None (with a debug log) when it cannot be read."""
    value = lowered[name.lower()]
    try:
        return reader(value)
    except Exception:  # whatever a server sends, it never stops a run
        log.debug("ignoring the rate limit header %s: %r is not a value it can have", name, value[:100])
        return None


def _numbers(value: str) -> list[float]:
    """The leading number of each item of a list (``"10, 10;w=1"`` -> ``[10, 10]``); each a
    finite number, not negative."""
    numbers = []
    for item in _split(value, ","):
        head = _split(item, ";")[0].strip()
        if head:
            number = float(head)
            if not math.isfinite(number) or number < 0:
                raise ValueError(value)
            numbers.append(number)
    if not numbers:
        raise ValueError(value)
    return numbers


def reset_seconds(value: str, reset_format: str, now: float) -> float:
    """Seconds from ``now`` until the reset a header gives: seconds from now, an epoch time in
    seconds or milliseconds (``auto`` tells them apart by size), or an HTTP date."""
    try:
        number = max(_numbers(value))
    except ValueError:
        if reset_format != "auto":
            raise
        return parsedate_to_datetime(value.strip()).timestamp() - now
    kind = reset_format
    if kind == "auto":
        kind = "epoch_ms" if number >= 1e12 else "epoch" if number >= 1e9 else "seconds"
    if kind == "seconds":
        return number
    return (number / 1000 if kind == "epoch_ms" else number) - now


def _structured(value: str, policy: str | None) -> tuple[int, float | None, int | None]:
    """``(remaining, reset seconds, limit)`` of the combined ``RateLimit`` header: the draft's
    structured list (``"default";r=50;t=30``; of several policies, the one with the least
    left) or its earlier dictionary (``limit=100, remaining=50, reset=5``)."""
    items = [_item(text) for text in _split(value, ",") if text.strip()]
    if any("=" in name for name, _ in items):  # the dictionary form
        members = dict(name.split("=", 1) for name, _ in items)
        members = {k.strip().lower(): v.strip() for k, v in members.items()}
        limit = members.get("limit")
        reset = members.get("reset")
        return (
            int(_numbers(members["remaining"])[0]),
            None if reset is None else _numbers(reset)[0],
            None if limit is None else int(_numbers(limit)[0]),
        )
    name, params = min(items, key=lambda item: int(_numbers(item[1]["r"])[0]))
    reset = params.get("t")
    return int(_numbers(params["r"])[0]), None if reset is None else _numbers(reset)[0], _policy_quota(policy, name)


def _policy_quota(policy: str | None, name: str) -> int | None:
    """The quota ``RateLimit-Policy`` gives the policy ``name`` (``"default";q=100;w=60``), or
    its first policy's (the earlier ``100;w=60``). None when it says nothing readable."""
    if not policy:
        return None
    items = [_item(text) for text in _split(policy, ",") if text.strip()]
    chosen = next((item for item in items if item[0] == name), items[0] if items else None)
    if chosen is None:
        return None
    try:
        return int(_numbers(chosen[1].get("q") or chosen[0])[0])
    except ValueError:
        log.debug("ignoring RateLimit-Policy: %r has no quota", policy[:100])
        return None


def _item(text: str) -> tuple[str, dict[str, str]]:
    """A structured-field item: its value (unquoted) and its parameters."""
    parts = _split(text, ";")
    params = {}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return parts[0].strip().strip('"'), params


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator``, except inside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


# ----------------------------------------------------------------------------------------
# Keeping to it


class AnnouncedQuota:
    """The quota an API announces, kept by every thread of a source.

    Each response's announcement (:meth:`observe`) updates what is left and when it resets;
    each request (:meth:`acquire`) counts one off, so concurrent requests do not all spend
    the same last request. Down to the ``floor``, requests wait for the reset; then the
    count starts again at the announced limit, less the requests still on their way. With
    no limit announced, or no reset, requests at the floor go one at a time, each waiting for
    the answer to the one before (or the source's timeout) to learn the count.
    """

    def __init__(self, settings: HeaderLimits, source: str, in_flight_for: float):
        self.settings = settings
        self.source = source
        self.in_flight_for = in_flight_for  # how long a request may be on its way (the source's timeout)
        self.remaining: int | None = None  # requests left, as far as we know (None: not told yet)
        self.limit: int | None = None
        self.reset_at: float | None = None  # clock.monotonic() of the reset
        self.header = "rate limit headers"  # the header that told what is left
        # When (clock.deadline(): real time, as the attempts' deadlines) the requests not answered
        # yet were sent; one older than in_flight_for has been answered or has failed.
        self.sent: deque[float] = deque()
        self._changed = threading.Condition()
        self._warned_about: float | None = None  # the reset a warning was given for

    def acquire(self) -> None:
        """Wait, when what is left is down to the floor, until the quota resets; then count
        one request."""
        while True:
            with self._changed:
                now = clock.monotonic()
                self._expire(now)
                if not self._at_floor():
                    self._take()
                    return
                if self.reset_at is None:
                    if self.sent:  # the answers on their way will tell what is left, and until when
                        self._changed.wait(self.in_flight_for)
                        continue
                    log.debug(
                        "source %s: %s at the floor and no reset announced: one request", self.source, self.header
                    )
                    self._take()
                    return
                wait = self.reset_at - now
                if wait > self.settings.max_wait:
                    self._too_far(wait)
                    self._take()
                    return
                log.info(
                    "source %s: %s is down to %d (floor %d); waiting %.1fs for the rate limit to reset",
                    self.source,
                    self.header,
                    self.remaining,
                    self.settings.floor,
                    wait,
                )
            clock.sleep(wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn what a response announces (a response without the headers changes nothing)."""
        news = read_announcement(headers, self.settings, clock.wall())
        with self._changed:
            now = clock.monotonic()
            if self.sent:
                self.sent.popleft()
            self._expire(now)
            self._learn(news, now)
            self._changed.notify_all()

    # -- the state, under the lock --------------------------------------------------------------

    def _at_floor(self) -> bool:
        return self.remaining is not None and self.remaining <= self.settings.floor

    def _take(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1
        self.sent.append(clock.deadline())

    def _expire(self, now: float) -> None:
        """Past the reset, the count starts again: at the limit less what is on its way, or
        (no limit announced) at the floor, where requests go one at a time until an answer
        tells the new count."""
        oldest = clock.deadline() - self.in_flight_for
        while self.sent and self.sent[0] < oldest:
            self.sent.popleft()  # answered long ago, or failed: not on its way anymore
        if self.reset_at is None or now < self.reset_at:
            return
        self.reset_at = None
        if self.limit is not None:
            self.remaining = self.limit - len(self.sent)
        elif self.remaining is not None:
            self.remaining = self.settings.floor
        log.debug("source %s: the rate limit reset; %s requests left", self.source, self.remaining)

    def _learn(self, news: Announcement, now: float) -> None:
        if news.limit is not None:
            self.limit = news.limit
        if news.remaining is None:
            return
        if news.reset is not None and news.reset <= 0:
            log.debug("source %s: ignoring %s: its reset is past (%.0fs ago)", self.source, news.header, -news.reset)
            return
        self.header = news.header
        reset_at = None if news.reset is None else now + news.reset
        new_window = self.reset_at is not None and reset_at is not None and reset_at > self.reset_at + SAME_WINDOW
        if self.reset_at is not None and not new_window:  # the same window: the lower count holds
            self.remaining = news.remaining if self.remaining is None else min(self.remaining, news.remaining)
            self.reset_at = self.reset_at if reset_at is None else max(self.reset_at, reset_at)
            return
        # A window we did not know yet: what is left, less the requests on their way.
        self.remaining = news.remaining - len(self.sent)
        self.reset_at = reset_at

    def _too_far(self, wait: float) -> None:
        """A reset beyond ``max_wait``: with requests left (below the floor), a warning and they
        are used; with none left, the request fails (the API would refuse it)."""
        name, max_wait = self.source, self.settings.max_wait
        if self.remaining is not None and self.remaining > 0:
            if self._warned_about != self.reset_at:
                self._warned_about = self.reset_at
                log.warning(
                    "source %s: %s is down to %d (floor %d), but the rate limit resets only in %.0fs, more than "
                    "rate_limit_headers.max_wait (%gs): not waiting, using the requests kept in reserve",
                    name,
                    self.header,
                    self.remaining,
                    self.settings.floor,
                    wait,
                    max_wait,
                )
            return
        raise RateLimitExhausted(
            f"source '{name}': the API's rate limit is used up ({self.header}) and resets only in {wait:.0f}s, "
            f"more than rate_limit_headers.max_wait ({max_wait:g}s): not waiting that long. Run again later, or "
            f"raise sources.{name}.rate_limit_headers.max_wait"
        )


class RateLimiter:
    """A source's budgets (sliding windows: "100 requests per 5 seconds") and the quota its
    API announces, shared by every thread of the source: :meth:`acquire` waits until one
    more request fits, :meth:`observe` reads each response's rate limit headers."""

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...] = (),
        announced: HeaderLimits | None = None,
        *,
        source: str = "",
        in_flight_for: float = 30.0,
    ):
        self.windows: list[tuple[int, float, deque[float]]] = [
            (requests_allowed, seconds, deque()) for requests_allowed, seconds in limits
        ]
        self._lock = threading.Lock()
        self.announced = None if announced is None else AnnouncedQuota(announced, source, in_flight_for)

    @classmethod
    def for_source(cls, source: Source) -> RateLimiter | None:
        """The limiter of a source with budgets or ``rate_limit_headers``; None without either."""
        if not source.rate_limits and source.rate_limit_headers is None:
            return None
        return cls(source.rate_limits, source.rate_limit_headers, source=source.name, in_flight_for=source.timeout)

    def acquire(self) -> None:
        """Wait for the announced quota, then for the budgets (whose clock starts now)."""
        if self.announced is not None:
            self.announced.acquire()
        if self.windows:
            self._within_budgets()

    def observe(self, headers: Mapping[str, str]) -> None:
        """A response's headers: what the API announces of its rate limit, if it is read."""
        if self.announced is not None:
            self.announced.observe(headers)

    def _within_budgets(self) -> None:
        while True:
            with self._lock:
                now = clock.monotonic()
                wait = 0.0
                for allowed, seconds, stamps in self.windows:
                    while stamps and now - stamps[0] >= seconds:
                        stamps.popleft()
                    if len(stamps) >= allowed:
                        # The request that must leave the window before one more fits.
                        wait = max(wait, seconds - (now - stamps[-allowed]), 1e-6)
                if wait <= 0:
                    for _, _, stamps in self.windows:
                        stamps.append(now)
                    return
            log.debug("request budget reached; waiting %.2fs", wait)
            clock.sleep(wait)
