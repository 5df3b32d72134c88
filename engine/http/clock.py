"""The one clock every HTTP wait goes through: retries, request budgets, token lifetimes.

Callers use ``clock.sleep(...)`` and ``clock.monotonic()`` through this module, so a test
can replace both (retries then take no time, budgets run on a fake clock).

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
