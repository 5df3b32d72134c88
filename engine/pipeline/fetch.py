"""HTTP for one source of a mapping.

:class:`HttpClient` wraps one session per source (connection reuse), adds the source's
headers, query parameters and credentials, keeps to the source's request budgets,
retries what the retry policy (``engine/http/retry.py``) says is worth retrying, and
turns every other failure into a :class:`FetchError` that names the URL (with secrets
redacted). The client is thread-safe, which fan-out relies on. Which requests a step
makes, page after page, is ``paginate.py``'s business.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from ..errors import FetchError
from ..http import clock
from ..http.cassette import cassette_miss
from ..http.retry import RETRYABLE_ERRORS, Attempts
from ..http.session import new_session, snippet
from ..jsonio import decode_json
from ..lang.values import Scope
from ..secrets import Redactor
from .auth import OAuth2ClientCredentials, static_auth
from .plan import Source
from .ratelimit import RateLimiter

log = logging.getLogger("etl.http")


@dataclass(frozen=True)
class Page:
    url: str  # redacted, for messages
    request_url: str  # as sent: never print it (it may carry a secret)
    status: int
    headers: Mapping[str, str]
    body: Any
    attempts: int = 1
    elapsed_ms: float = 0.0


class HttpClient:
    """HTTP for one source: base URL, default headers and params, credentials, budgets,
    retries, JSON decoding."""

    def __init__(
        self,
        source: Source,
        *,
        base_url: str,
        headers: dict[str, str],
        params: dict[str, str],
        redactor: Redactor,
        options,
        auth_scope: Scope,
    ):
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.redactor = redactor
        self.options = options  # JMESPath options, for the source's error_message expression
        credentials = static_auth(source.auth, auth_scope, redactor)
        self.session = new_session({**headers, **credentials.headers})
        self.session.auth = credentials.basic
        self.params = {**params, **credentials.params}
        self.oauth = None
        if source.auth is not None and source.auth.kind == "oauth2_client_credentials":
            token_url = next(v for n, v in source.auth.fields if n == "token_url").evaluate(auth_scope)
            self.oauth = OAuth2ClientCredentials(
                source.auth,
                auth_scope,
                redactor,
                token_url=self.url_for(token_url),
                timeout=source.timeout,
                retry=source.retry,
            )
        self.limiter = RateLimiter(source.rate_limits) if source.rate_limits else None
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()
        if self.oauth is not None:
            self.oauth.close()

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path:
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    def prepare(self, method: str, path: str, params, headers, body) -> requests.PreparedRequest:
        url = self.url_for(path)
        present = {name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
        merged = {k: v for k, v in self.params.items() if k not in present}  # a next-page URL has them already
        merged.update(params or {})
        request = requests.Request(method, url, params=merged, headers=dict(headers or {}), json=body)
        return self.session.prepare_request(request)

    def get_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Page:
        """One logical request, retried as the source's policy says. Returns the decoded JSON."""
        prepared = self.prepare(method, path, params, headers, body)
        assert prepared.url is not None  # prepare_request always sets it
        url = self.redactor(prepared.url)
        settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
        attempts = Attempts(self.source.retry, f"{method} {url}")
        refreshed = False
        started = clock.monotonic()
        for attempt in attempts:
            token = self.authorize(prepared)
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                with self._count_lock:
                    self.requests_made += 1
                response = self.session.send(prepared, timeout=self.source.timeout, **settings)
            except RETRYABLE_ERRORS as exc:
                failure = attempts.transport_failed(exc)
                if failure:
                    raise FetchError(f"{method} {url} {failure}", url=url) from None
                continue
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                raise FetchError(
                    f"{method} {url}: the cassette holds no response for this request "
                    f"(replay only); re-record it with --record-mode all, or check --config "
                    f"and --base-url",
                    url=url,
                ) from None
            status = response.status_code
            log.debug("%s %s -> %d (attempt %d)", method, url, status, attempt)
            if status == 401 and token is not None and not refreshed and self.oauth is not None:
                log.info("%s %s -> 401: the access token was refused; getting a new one", method, url)
                self.oauth.refused(token)
                refreshed = True
                attempts.repeat_for_free()  # a refresh is not a retry
                continue
            if attempts.retry_status(response):
                continue
            if status >= 400:
                raise self.error(method, url, response, attempts.suffix)
            return Page(
                url=url,
                request_url=prepared.url or "",
                status=status,
                headers=response.headers,
                body=self.decode(method, url, response),
                attempts=attempt,
                elapsed_ms=(clock.monotonic() - started) * 1000,
            )
        raise AssertionError("unreachable: Attempts never ends by itself")

    def authorize(self, prepared: requests.PreparedRequest) -> str | None:
        """Put the current OAuth2 token on the request; returns it (None without OAuth2)."""
        if self.oauth is None:
            return None
        token = self.oauth.token()
        prepared.headers["Authorization"] = f"Bearer {token}"
        return token

    def decode(self, method: str, url: str, response: requests.Response) -> Any:
        content_type = response.headers.get("Content-Type", "")
        try:
            return decode_json(response.content)
        except RecursionError:
            raise FetchError(
                f"{method} {url} returned JSON nested too deeply to read ({len(response.content)} bytes)",
                status=response.status_code,
                url=url,
            ) from None
        except (ValueError, UnicodeDecodeError):
            shown = self.redactor(snippet(response))
            kind = content_type or "no content type"
            raise FetchError(
                f"{method} {url} returned HTTP {response.status_code} with a body that is not JSON "
                f"({kind}, {len(response.content)} bytes): {shown}",
                status=response.status_code,
                url=url,
                body=shown,
            ) from None

    def error(self, method: str, url: str, response: requests.Response, suffix: str = "") -> FetchError:
        detail = self.vendor_message(response)
        status = response.status_code
        text = f"{method} {url} failed: HTTP {status} {response.reason or ''}".rstrip()
        if detail:
            text += f": {detail}"
        return FetchError(self.redactor(text + suffix), status=status, url=url, body=self.redactor(snippet(response)))

    def vendor_message(self, response: requests.Response) -> str:
        """The API's own error message, found with the source's ``error_message`` expression."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return snippet(response)
        try:
            found = self.source.error_message.evaluate(Scope(body, {}, self.options))
        except Exception:  # a body of an unexpected shape must not hide the HTTP error
            found = None
        if found in (None, "", [], {}):
            return snippet(response)
        return found if isinstance(found, str) else json.dumps(found)
