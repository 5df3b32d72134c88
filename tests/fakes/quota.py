"""A look-alike of an API that announces its rate limit in every response, and refuses (429,
with ``Retry-After``) any request beyond it.

``QuotaApi(kind, total, quota=Q, window=W, style=...)`` is a :class:`~tests.fakes.paging.PagingApi`
allowing ``Q`` requests per fixed window of ``W`` seconds of its :class:`FakeClock` (window
``n`` is ``[n*W, (n+1)*W)``), counted when each request arrives. Every response, refusals
included, says how many requests are left in the window and when it ends, in one of these
styles:

=============== =============================================================================
``x-epoch``     ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (epoch seconds)
``x-seconds``   the same, the reset in seconds from now
``ietf``        ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds from now)
``structured``  ``RateLimit: "default";r=R;t=T`` and ``RateLimit-Policy: "default";q=Q;w=W``
``dictionary``  ``RateLimit: limit=Q, remaining=R, reset=T`` (an earlier draft)
``custom``      ``X-Quota-Left`` and ``X-Quota-Reset-Ms`` (epoch milliseconds), no limit
=============== =============================================================================

Epoch times are ``EPOCH + clock.now``: a test makes the engine's wall clock
(``engine.http.clock.wall``) read the same. ``extra_headers`` are sent with
every response, over the announced ones (garbage, say); ``used`` lets a test spend a
window's quota as another client would.
"""

from __future__ import annotations

import dataclasses
import math

from .paging import FakeClock, PagingApi
from .server import Request, Response

EPOCH = 1_704_164_645  # 2024-01-02T03:04:05Z: the epoch time of the fake clock's 0

STYLES = ("x-epoch", "x-seconds", "ietf", "structured", "dictionary", "custom")


class QuotaApi(PagingApi):
    def __init__(self, kind: str, total: int, *, quota: int, window: float, clock: FakeClock, style: str = "x-epoch"):
        super().__init__(kind, total)
        assert style in STYLES, style
        self.quota = quota
        self.window_seconds = window
        self.style = style
        self.clock = clock
        self.used: dict[int, int] = {}  # window index -> requests counted
        self.refused = 0  # requests answered 429
        self.extra_headers: dict[str, str] = {}

    def _dispatch(self, request: Request) -> Response:
        now = getattr(request, "arrived_at", self.clock.now)
        index = int(now // self.window_seconds)
        with self._lock:
            over = self.used.get(index, 0) >= self.quota
            if over:
                self.refused += 1
            else:
                self.used[index] = self.used.get(index, 0) + 1
            remaining = self.quota - self.used.get(index, 0)
        ends = (index + 1) * self.window_seconds
        if over:
            response = Response(429, {"message": "rate limit exceeded"}, headers={"Retry-After": _ceil(ends - now)})
        else:
            response = super()._dispatch(request)
        headers = {**response.headers, **self.announce(remaining, ends, now), **self.extra_headers}
        return dataclasses.replace(response, headers=headers)

    def announce(self, remaining: int, ends: float, now: float) -> dict[str, str]:
        """The rate limit headers of a response, in the API's style."""
        after = _ceil(ends - now)
        if self.style in ("x-epoch", "x-seconds"):
            reset = str(int(EPOCH + ends)) if self.style == "x-epoch" else after
            return {
                "X-RateLimit-Limit": str(self.quota),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": reset,
            }
        if self.style == "ietf":
            return {"RateLimit-Limit": str(self.quota), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": after}
        if self.style == "structured":
            return {
                "RateLimit": f'"default";r={remaining};t={after}',
                "RateLimit-Policy": f'"default";q={self.quota};w={self.window_seconds:g}',
            }
        if self.style == "dictionary":
            return {"RateLimit": f"limit={self.quota}, remaining={remaining}, reset={after}"}
        return {"X-Quota-Left": str(remaining), "X-Quota-Reset-Ms": str(int((EPOCH + ends) * 1000))}

    def busiest_window(self) -> int:
        """The most requests any window counted (refusals are not counted)."""
        return max(self.used.values(), default=0)


def _ceil(seconds: float) -> str:
    return str(max(0, math.ceil(seconds - 1e-9)))
