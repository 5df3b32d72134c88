"""HTTP sessions and what every caller reads off a response.

One ``requests.Session`` per source (connection reuse) or per sync, made by
:func:`new_session` (its connections keep to the deadlines of ``transfer.py``); a short,
one-line :func:`snippet` of a body for error messages (callers redact it).
"""

from __future__ import annotations

import requests

from .transfer import DeadlineAdapter

USER_AGENT = "etl (declarative JupiterOne graph engine)"
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}


def new_session(headers: dict[str, str] | None = None) -> requests.Session:
    """A session that announces etl and asks for JSON, with ``headers`` on every request."""
    session = requests.Session()
    session.mount("https://", DeadlineAdapter())
    session.mount("http://", DeadlineAdapter())
    session.headers.update(DEFAULT_HEADERS)
    session.headers.update(headers or {})
    return session


def snippet(response: requests.Response, limit: int = 200) -> str:
    """The start of a response body on one line, for a message (not yet redacted)."""
    text = response.content[:limit].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(response.content) > limit else "")
