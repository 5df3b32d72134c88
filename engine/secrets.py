"""The redactor: secret values never reach a terminal, a log, an output file or a cassette.

One :class:`Redactor` per run knows every secret (config fields marked ``secret``, and
credentials learnt during the run, such as an OAuth2 access token) and replaces every
form of each with ``[REDACTED]``: the value itself, its URL-encoded forms (a query string,
a form body, a path), its forms inside a JSON string (escaped quotes and backslashes,
``\\uXXXX`` escapes or not, ``\\/``), and, for HTTP Basic, the base64 of ``user:password``
(:meth:`Redactor.add_basic`). :data:`log_redaction` applies the current run's redactor
to every log record; the CLI applies it to every error message.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# A secret shorter than this is not redacted (it would mangle unrelated text); the
# engine warns about it instead.
MIN_SECRET_LENGTH = 4


def variants(secret: str) -> set[str]:
    """Every form in which ``secret`` may be written out: as is, URL-encoded (``quote``
    with and without ``/`` kept, ``quote_plus``) and escaped inside a JSON string."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
    return forms


def basic_credentials(username: str, password: str) -> list[str]:
    """The base64 of ``username:password`` as an HTTP Basic header carries it (requests
    encodes Latin-1 when it can, other clients UTF-8)."""
    out = []
    for encoding in ("latin-1", "utf-8"):
        try:
            raw = f"{username}:{password}".encode(encoding)
        except UnicodeEncodeError:
            continue
        out.append(base64.b64encode(raw).decode("ascii"))
    return out


class Redactor:
    """Replaces every known secret value (in all its forms, see :func:`variants`) with
    ``[REDACTED]``.

    Secrets learnt during a run (an OAuth2 access token, say) are added with :meth:`add`;
    HTTP Basic credentials with :meth:`add_basic`.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._variants: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        forms = {form for form in variants(secret) if len(form) >= MIN_SECRET_LENGTH}
        if forms <= self._variants:
            return
        self._variants |= forms
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(self._variants, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered)))
        self.secrets = tuple(ordered)

    def add_basic(self, username: str, password: str) -> None:
        """HTTP Basic credentials: the password, and the base64 of ``username:password``."""
        self.add(password)
        for encoded in basic_credentials(username, password):
            self.add(encoded)

    def contains_secret(self, text: str) -> bool:
        """Whether ``text`` holds a known secret (in any of its forms)."""
        return self._pattern is not None and bool(text) and self._pattern.search(text) is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def bytes(self, data: bytes) -> bytes:
        if self._pattern is None or not data:
            return data
        for secret in self.secrets:
            data = data.replace(secret.encode(), REDACTED.encode())
        return data

    def __bool__(self) -> bool:
        return self._pattern is not None


class LogRedaction(logging.Filter):
    """A logging filter that redacts every record with the redactor of the current run."""

    def __init__(self) -> None:
        super().__init__()
        self.redactor = Redactor()

    def use(self, redactor: Redactor) -> None:
        """Redact with ``redactor`` from now on (a run or sync knows its secrets)."""
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = ()
        return True


log_redaction = LogRedaction()
