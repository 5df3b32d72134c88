"""HTTP that runs and ``etl sync`` share: the retry policy, the clock it waits with,
sessions and response helpers, one bounded exchange (``transfer.py``: a deadline per
attempt, a size limit per body, redirects followed by the caller's rules), origins
(``origins.py``: where a source's credentials may go), and recording/replaying with vcrpy
(cassettes)."""
