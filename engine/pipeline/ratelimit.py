"""Client-side request budgets: "at most 100 requests per 5 seconds" per source."""

from __future__ import annotations

import logging
import threading
from collections import deque

from ..http import clock

log = logging.getLogger("etl.http")


class RateLimiter:
    """Sliding-window request budgets ("100 requests per 5 seconds"), shared by every thread
    of a source: :meth:`acquire` waits until one more request fits in every window."""

    def __init__(self, limits: tuple[tuple[int, float], ...]):
        self.windows: list[tuple[int, float, deque[float]]] = [
            (requests_allowed, seconds, deque()) for requests_allowed, seconds in limits
        ]
        self._lock = threading.Lock()

    def acquire(self) -> None:
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
