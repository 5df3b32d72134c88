"""How a source proves who it is: bearer tokens, HTTP Basic, API keys, OAuth2 client credentials.

Static kinds become headers or query parameters once, when the source's client is made.
OAuth2 fetches a token when first needed, keeps it until shortly before it expires, and
can be told a token was refused (a 401) to fetch a new one. Every credential is added
to the run's redactor the moment it is known (HTTP Basic also as the base64 of
``user:password``). Where credentials may be sent is ``fetch.py``'s business; the token
request goes to ``token_url`` only: a redirect to another origin is refused, so the
client secret never follows it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import AuthenticationError, ConfigError, ResponseTooLarge, TooManyRedirects
from ..http import clock
from ..http.cassette import cassette_miss
from ..http.origins import origin_of, url_problem
from ..http.retry import RETRYABLE_ERRORS, Attempts, RetryPolicy
from ..http.session import new_session, snippet
from ..http.transfer import DEFAULT_MAX_RESPONSE_BYTES, exchange
from ..lang.values import Scope
from ..secrets import Redactor
from .plan import AuthSpec

log = logging.getLogger("etl.http")

TOKEN_ATTEMPTS = 3  # a token request is retried on transport failures, 429 and 5xx
EXPIRY_MARGIN = 60.0  # seconds (at most a tenth of its lifetime): a token this close to expiry is replaced
DEFAULT_TOKEN_LIFETIME = 3600.0  # when the token endpoint does not say


@dataclass
class StaticAuth:
    """What a static auth kind adds to every request."""

    headers: dict[str, str]
    params: dict[str, str]
    basic: tuple[str, str] | None = None


def static_auth(spec: AuthSpec | None, scope: Scope, redactor: Redactor) -> StaticAuth:
    if spec is None or spec.kind == "oauth2_client_credentials":
        return StaticAuth({}, {})
    values = {name: str(value.evaluate(scope)) for name, value in spec.fields}
    if spec.kind == "bearer":
        redactor.add(values["token"])
        return StaticAuth({"Authorization": f"Bearer {values['token']}"}, {})
    if spec.kind == "basic":
        redactor.add_basic(values["username"], values["password"])
        return StaticAuth({}, {}, (values["username"], values["password"]))
    redactor.add(values["value"])
    if spec.location == "query":
        return StaticAuth({}, {spec.name: values["value"]})
    return StaticAuth({spec.name: values["value"]}, {})


class OAuth2ClientCredentials:
    """RFC 6749 §4.4: a token from ``token_url``, cached until it nearly expires. Thread-safe."""

    def __init__(
        self,
        spec: AuthSpec,
        scope: Scope,
        redactor: Redactor,
        *,
        token_url: str,
        timeout: float,
        retry: RetryPolicy,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        source: str = "",
    ):
        # The source's backoff, fewer attempts: the credentials may simply be wrong.
        self.retry = dataclasses.replace(retry, max_attempts=min(retry.max_attempts, TOKEN_ATTEMPTS))
        self.values: dict[str, Any] = {name: value.evaluate(scope) for name, value in spec.fields}
        self.client_auth = spec.client_auth
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.redactor = redactor
        self.session = new_session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        redactor.add(str(self.values["client_secret"]))
        if self.client_auth == "basic":
            redactor.add_basic(str(self.values["client_id"]), str(self.values["client_secret"]))
        problem = url_problem(token_url)
        origin = origin_of(token_url)
        if problem or origin is None:
            where = f"sources.{source}.auth.token_url" if source else "the token_url"
            raise ConfigError(
                redactor(
                    f"{where} is {token_url!r}: {problem or 'not an http(s) URL'}; it must be an http:// or "
                    f"https:// URL, or a path on the source's base URL"
                )
            )
        self.token_url = token_url
        self.origin = origin  # the client secret goes here, and nowhere else

    def token(self) -> str:
        with self._lock:
            if self._token is None or clock.monotonic() >= self._expires_at:
                self._token, lifetime = self._fetch()
                self._expires_at = clock.monotonic() + lifetime - min(EXPIRY_MARGIN, lifetime / 10)
            return self._token

    def close(self) -> None:
        self.session.close()

    def refused(self, token: str) -> None:
        """The API answered 401 to ``token``: fetch a new one next time (unless already done)."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        form: dict[str, Any] = {"grant_type": "client_credentials"}
        if self.values.get("scope"):
            form["scope"] = self.values["scope"]
        form.update(self.values.get("params") or {})
        auth = None
        if self.client_auth == "basic":
            auth = (str(self.values["client_id"]), str(self.values["client_secret"]))
        else:
            form.update(client_id=self.values["client_id"], client_secret=self.values["client_secret"])
        where = f"POST {self.redactor(self.token_url)}"
        attempts = Attempts(self.retry, where)

        def prepare(method: str, url: str, with_form: bool) -> requests.PreparedRequest:
            request = requests.Request(method, url, data=form if with_form else None, auth=auth)
            return self.session.prepare_request(request)

        def redirect(method: str, url: str, keep_body: bool, response: requests.Response) -> requests.PreparedRequest:
            if origin_of(url) != self.origin:
                raise AuthenticationError(
                    self.redactor(
                        f"authentication failed: {where} -> HTTP {response.status_code} redirect to {url}, on "
                        f"another origin ({origin_of(url) or 'not http(s)'}) than the token URL ({self.origin}); "
                        f"the client credentials are only sent to the token URL - set token_url to the "
                        f"endpoint itself"
                    ),
                    status=response.status_code,
                )
            log.debug("%s -> %d: redirected to %s", where, response.status_code, self.redactor(url))
            return prepare(method, url, keep_body)

        for _ in attempts:
            try:
                response = exchange(
                    self.session,
                    prepare("POST", self.token_url, True),
                    timeout=self.timeout,
                    max_bytes=self.max_bytes,
                    redirect=redirect,
                )
            except RETRYABLE_ERRORS as exc:
                failure = attempts.transport_failed(exc)
                if failure:
                    raise AuthenticationError(f"authentication failed: {where} {failure}") from None
                continue
            except (ResponseTooLarge, TooManyRedirects) as exc:
                raise AuthenticationError(f"authentication failed: {where}: {exc}") from None
            except requests.RequestException as exc:
                raise AuthenticationError(f"authentication failed: {where}: {type(exc).__name__}") from None
            except AuthenticationError:
                raise
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                # vcrpy's own message shows the request, form body (client secret) included.
                raise AuthenticationError(
                    f"authentication failed: {where}: the cassette holds no response for the token request "
                    f"(replay only); re-record it with --record-mode all, or check --config and --base-url"
                ) from None
            if not attempts.retry_status(response):  # the token endpoint may be having a moment
                break
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400 or not isinstance(body, dict) or not body.get("access_token"):
            detail = None
            if isinstance(body, dict) and (body.get("error") or body.get("error_description")):
                detail = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
            if not detail and response.status_code < 400:
                detail = f"the response has no access_token: {snippet(response)}"
            detail = detail or snippet(response)
            raise AuthenticationError(
                self.redactor(
                    f"authentication failed: {where} -> HTTP {response.status_code}: {detail} - check the "
                    f"client id and secret in the config"
                ),
                status=response.status_code,
            )
        token = str(body["access_token"])
        self.redactor.add(token)
        lifetime = _number(body.get("expires_in"), DEFAULT_TOKEN_LIFETIME)
        log.info("%s -> %d: new access token, valid %.0fs", where, response.status_code, lifetime)
        return token, lifetime


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
