"""The one clock every HTTP wait goes through: retries, request budgets, token lifetimes.

Callers use ``clock.sleep(...)`` and ``clock.monotonic()`` through this module, so a test
can replace both (retries then take no time, budgets run on a fake clock).
"""

from __future__ import annotations

import time

sleep = time.sleep
monotonic = time.monotonic
