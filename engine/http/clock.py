"""The one clock every HTTP wait and timestamp goes through: retries, request budgets, token
lifetimes, announced rate-limit resets, request signatures.

Callers use ``clock.sleep(...)``, ``clock.monotonic()`` and ``clock.wall()`` through this module,
so a test can replace them (retries then take no time, budgets run on a fake clock, a signature
is made at a chosen moment). ``clock.wall()`` is epoch seconds: what a signature's timestamp
and an epoch reset (``X-RateLimit-Reset: 1732975200``) are measured against.

``clock.deadline()`` is the clock of request deadlines (a whole response within the
source's ``timeout``, see ``transfer.py``). It is real time, like the socket timeouts it
goes with, even while a test fakes ``monotonic`` to model an API whose every call takes
minutes of the token's lifetime; a test of deadlines may fake it on its own.
"""

from __future__ import annotations

import time

sleep = time.sleep
monotonic = time.monotonic
deadline = time.monotonic
wall = time.time
