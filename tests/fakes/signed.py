"""Look-alikes of APIs that authenticate every request with a signature.

Each class here is an auth check for :class:`~tests.fakes.paging.PagingApi` (``api.auth =
check``): it verifies a request's signature as such an API does - recomputing it with the
shared secret from what it received - and refuses a wrong one, a stale timestamp or a nonce
used before with the API's message (a 401). ``accepted`` and ``refused`` record what it saw.

=================================== ====================================================================
:class:`HmacHexSignature`           ``X-Timestamp`` (epoch seconds) and ``X-Signature``: hex
                                    HMAC-SHA256 of method, path, canonical query, timestamp and the
                                    body's SHA-256 (``docs/examples/auth-hmac-signature.yaml``)
:class:`NonceSignature`             ``X-Api-Key`` (a key id), ``X-Nonce``, ``X-Request-Time`` (epoch
                                    ms) and ``Authorization: HMAC-SHA1 <base64>`` of them and the target
:class:`DateSignature`              HTTP Signatures (``draft-cavage``): a ``Date`` header and
                                    ``Authorization: Signature keyId=..., signature=<base64>`` over
                                    ``(request-target)``, ``host`` and ``date``, keyed with a base64 key
:class:`QuerySignature`             ``timestamp`` (epoch ms) and ``signature`` (hex HMAC-SHA256 of the
                                    query before it) as the last query parameters
:class:`SigV4Signature`             AWS Signature Version 4 in headers: ``X-Amz-Date``,
                                    ``X-Amz-Content-Sha256`` and ``Authorization: AWS4-HMAC-SHA256 ...``
=================================== ====================================================================
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from .server import Request

MAX_SKEW = 300  # seconds a timestamp may be off the server's clock


def canonical_query(query: dict[str, str]) -> str:
    """The query as the client must have signed it: sorted, RFC 3986-encoded."""
    pairs = sorted((quote(k, safe=""), quote(v, safe="")) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def hex_hmac_sha256(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class SignatureCheck:
    """What every check shares: the secret, the server's clock, and what it accepted or refused."""

    def __init__(self, secret: str, *, now: Callable[[], float] = time.time, max_skew: float = MAX_SKEW):
        self.secret = secret
        self.now = now
        self.max_skew = max_skew
        self.accepted: list[Request] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str | None:
        problem = self.problem(request)
        with self._lock:
            if problem:
                self.refused.append(problem)
            else:
                self.accepted.append(request)
        return problem

    def problem(self, request: Request) -> str | None:
        raise NotImplementedError

    def stale(self, seconds: float) -> str | None:
        off = abs(self.now() - seconds)
        return f"stale timestamp: {off:.0f}s off the server's clock" if off > self.max_skew else None


class HmacHexSignature(SignatureCheck):
    """``X-Signature: hex(HMAC-SHA256(secret, METHOD\\npath\\nquery\\ntimestamp\\nhex(SHA-256(body))))``."""

    def string_to_sign(self, request: Request) -> str:
        timestamp = request.headers.get("x-timestamp", "")
        body = hashlib.sha256(request.body).hexdigest()
        return "\n".join([request.method, request.path, canonical_query(request.query), timestamp, body])

    def problem(self, request: Request) -> str | None:
        timestamp = request.headers.get("x-timestamp", "")
        if not timestamp.isdigit():
            return "missing or malformed X-Timestamp"
        expected = hex_hmac_sha256(self.secret.encode(), self.string_to_sign(request))
        if not hmac.compare_digest(request.headers.get("x-signature", ""), expected):
            return "invalid signature"
        return self.stale(int(timestamp))


class NonceSignature(SignatureCheck):
    """``Authorization: HMAC-SHA1 base64(HMAC-SHA1(secret, "key:nonce:time_ms:METHOD target"))``;
    a nonce is good once."""

    def __init__(self, key_id: str, secret: str, **kwargs):
        super().__init__(secret, **kwargs)
        self.key_id = key_id
        self.nonces: set[str] = set()

    def problem(self, request: Request) -> str | None:
        nonce = request.headers.get("x-nonce", "")
        stamp = request.headers.get("x-request-time", "")
        if request.headers.get("x-api-key") != self.key_id or not nonce or not stamp.isdigit():
            return "missing X-Api-Key, X-Nonce or X-Request-Time"
        query = canonical_query(request.query)
        target = f"{request.path}?{query}" if query else request.path
        text = f"{self.key_id}:{nonce}:{stamp}:{request.method} {target}"
        mac = base64.b64encode(hmac.new(self.secret.encode(), text.encode(), hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(request.headers.get("authorization", ""), f"HMAC-SHA1 {mac}"):
            return "invalid signature"
        with self._lock:
            if nonce in self.nonces:
                return "nonce used before"
            self.nonces.add(nonce)
        return self.stale(int(stamp) / 1000)


_SIGNATURE_FIELD = re.compile(r'(\w+)="([^"]*)"')


class DateSignature(SignatureCheck):
    """HTTP Signatures: ``Date`` within the skew, and ``Authorization: Signature keyId="...",
    algorithm="hmac-sha256",headers="(request-target) host date",signature="..."``, the HMAC
    keyed with the base64-decoded secret."""

    def __init__(self, key_id: str, secret_base64: str, **kwargs):
        super().__init__(secret_base64, **kwargs)
        self.key_id = key_id

    def problem(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Signature "):
            return "missing Signature authorization"
        fields = dict(_SIGNATURE_FIELD.findall(header))
        if fields.get("keyId") != self.key_id or fields.get("headers") != "(request-target) host date":
            return "unexpected keyId or signed headers"
        try:
            date = parsedate_to_datetime(request.headers.get("date", ""))
        except (TypeError, ValueError):
            return "missing or malformed Date"
        query = canonical_query(request.query)
        target = f"{request.method.lower()} {request.path}" + (f"?{query}" if query else "")
        text = f"(request-target): {target}\nhost: {request.headers.get('host')}\ndate: {request.headers['date']}"
        key = base64.b64decode(self.secret)
        expected = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(fields.get("signature", ""), expected):
            return "invalid signature"
        return self.stale(date.timestamp())


class QuerySignature(SignatureCheck):
    """``...&timestamp=<epoch ms>&signature=<hex HMAC-SHA256 of the query string before it>``,
    the signature last: the query is checked as it was sent, not re-sorted."""

    def problem(self, request: Request) -> str | None:
        names = list(request.query)
        if names[-2:] != ["timestamp", "signature"]:
            return "timestamp and signature must be the last query parameters"
        signed = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in request.query.items())
        signed = signed.rsplit("&signature=", 1)[0]
        expected = hex_hmac_sha256(self.secret.encode(), signed)
        if not hmac.compare_digest(request.query["signature"], expected):
            return "invalid signature"
        return self.stale(int(request.query["timestamp"]) / 1000)


class SigV4Signature(SignatureCheck):
    """AWS Signature Version 4 (headers): ``X-Amz-Date``, ``X-Amz-Content-Sha256`` and
    ``Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
    SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=<hex>``, recomputed as AWS
    documents it: canonical request, string to sign, a signing key derived by chained HMACs."""

    SIGNED = "host;x-amz-content-sha256;x-amz-date"

    def __init__(self, access_key: str, secret: str, region: str, service: str, **kwargs):
        super().__init__(secret, **kwargs)
        self.access_key, self.region, self.service = access_key, region, service

    def problem(self, request: Request) -> str | None:
        amz_date = request.headers.get("x-amz-date", "")
        payload = hashlib.sha256(request.body).hexdigest()
        if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or request.headers.get("x-amz-content-sha256") != payload:
            return "missing or malformed X-Amz-Date or X-Amz-Content-Sha256"
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        canonical = "\n".join(
            [
                request.method,
                request.path,
                canonical_query(request.query),
                f"host:{request.headers.get('host')}",
                f"x-amz-content-sha256:{payload}",
                f"x-amz-date:{amz_date}",
                "",
                self.SIGNED,
                payload,
            ]
        )
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = f"AWS4{self.secret}".encode()
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hex_hmac_sha256(key, string_to_sign)
        expected = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={self.SIGNED}, Signature={signature}"
        )
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            return "invalid signature"
        return self.stale(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
