"""HTTP to JupiterOne's synchronization API: its headers, one bounded exchange per attempt
(``http/transfer.py``: a deadline and a size limit), redirects within the API's origin only,
the one retry policy, redacted errors."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import requests
import urllib3

from ...errors import PayloadTooLarge, ResponseTooLarge, SyncError, TooManyRedirects
from ...http.cassette import cassette_miss
from ...http.origins import origin_of
from ...http.retry import RETRYABLE_ERRORS, Attempts, connection_reason
from ...http.session import new_session, snippet
from ...http.transfer import DEFAULT_MAX_RESPONSE_BYTES, exchange
from ...secrets import Redactor
from .settings import SyncReport, SyncSettings

log = logging.getLogger("etl.sync")


def _never_sent(exc: Exception) -> bool:
    """A transport failure before the request went out (no connection, TLS handshake), so the
    server cannot have acted on it. Anything else (a reset, a timeout, a body cut short) may
    have come after the server acted."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class PersisterClient:
    """HTTP to the synchronization API: headers, same-origin redirects only, retries with
    backoff, redacted errors."""

    def __init__(self, settings: SyncSettings, redactor: Redactor, report: SyncReport):
        self.settings = settings
        self.redactor = redactor
        self.report = report
        self.base_url = settings.api_base_url.rstrip("/")
        self.origin = origin_of(self.base_url)
        self.session = new_session(
            {
                "Content-Type": "application/json",
                "JupiterOne-Account": settings.account,
                "Authorization": f"Bearer {settings.api_key}",
            }
        )

    def close(self) -> None:
        self.session.close()

    def post(self, path: str, body: bytes, **options: Any) -> Any:
        """POST ``body`` (JSON bytes); see :meth:`request`."""
        return self.request("POST", path, body, **options)

    def get(self, path: str, **options: Any) -> Any:
        return self.request("GET", path, None, **options)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        headers: dict[str, str] | None = None,
        what: str = "",
        attempts: int | None = None,
        allow_too_large: bool = False,
        unknown_outcome: Callable[[str], Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None when empty). With ``allow_too_large``, a refusal as
        too large raises :class:`PayloadTooLarge`. ``unknown_outcome(reason)`` is called after
        each attempt that may have been carried out although no answer says so (a 5xx, a
        connection lost after sending), before the next attempt: what it returns, if not
        None, is the answer."""
        shown = self.redactor(f"{method} {path}")
        policy = self.settings.retry
        if attempts is not None:
            policy = dataclasses.replace(policy, max_attempts=attempts)
        tries = Attempts(policy, f"{shown}{what}")
        for attempt in tries:
            try:
                response = self.send(method, path, body, headers, shown)
            except RETRYABLE_ERRORS as exc:
                failure = tries.transport_failed(exc)
                if unknown_outcome is not None and not _never_sent(exc):
                    found = unknown_outcome(connection_reason(exc))
                    if found is not None:
                        return found
                if failure:
                    raise SyncError(self.redactor(f"{shown} {failure}")) from None
                continue
            except (ResponseTooLarge, TooManyRedirects) as exc:
                raise SyncError(self.redactor(f"{shown}: {exc}")) from None
            except SyncError:
                raise
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                raise SyncError(
                    f"{shown}: the cassette holds no response for this request (replay only); "
                    f"re-record it, or check the directory and options"
                ) from None
            status = response.status_code
            log.debug("%s%s -> %d (attempt %d, %d bytes)", shown, what, status, attempt, len(body or b""))
            if allow_too_large and (status == 413 or (status == 400 and b"RequestEntityTooLarge" in response.content)):
                raise PayloadTooLarge()
            retry = tries.retry_status(response)
            if unknown_outcome is not None and status >= 500:
                found = unknown_outcome(f"HTTP {status}")
                if found is not None:
                    return found
            if retry:
                continue
            if status >= 400:
                raise SyncError(self._failure(shown, response, tries.suffix))
            if not response.content.strip():
                return None
            try:
                return json.loads(response.content)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise SyncError(
                    self.redactor(f"{shown} returned HTTP {status} with a body that is not JSON: {snippet(response)}")
                ) from None
        raise AssertionError("unreachable: Attempts never ends by itself")

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None, shown: str
    ) -> requests.Response:
        """One attempt, bounded in time and size, following redirects only within the API's
        origin, so the account and key are never sent anywhere else (requests would forward
        the account header to any host, and the key to any port of the same host)."""
        request = requests.Request(method, self.base_url + path, data=body, headers=headers)

        def redirect(
            next_method: str, url: str, keep_body: bool, response: requests.Response
        ) -> requests.PreparedRequest:
            status = response.status_code
            target = origin_of(url)
            if target is None or target != self.origin:
                where = str(target) if target is not None else url
                raise SyncError(
                    self.redactor(
                        f"{shown} was redirected (HTTP {status}) to another origin, {where}: refusing to send "
                        f"the JupiterOne account and API key there (only redirects within {self.origin} are "
                        f"followed); check --api-base-url"
                    )
                )
            log.debug("%s: HTTP %d, following the redirect to %s", shown, status, self.redactor(url))
            hop = requests.Request(next_method, url, data=body if keep_body else None, headers=headers)
            return self.session.prepare_request(hop)

        return exchange(
            self.session,
            self.session.prepare_request(request),
            timeout=self.settings.timeout,
            max_bytes=DEFAULT_MAX_RESPONSE_BYTES,
            redirect=redirect,
            sent=self._count,
        )

    def _count(self) -> None:
        self.report.requests += 1

    def _failure(self, shown: str, response: requests.Response, suffix: str) -> str:
        text = f"{shown} failed: HTTP {response.status_code} {response.reason or ''}".rstrip()
        detail = snippet(response)
        if detail:
            text += f": {detail}"
        return self.redactor(text + suffix)
