"""The redactor: secret values never reach a terminal, a log, an output file or a cassette.

One :class:`Redactor` per run knows every secret (config fields marked ``secret``, and
credentials learnt during the run, such as an OAuth2 access token) and replaces each,
and its URL-encoded forms, with ``[REDACTED]``. :data:`log_redaction` applies the
current run's redactor to every log record; the CLI applies it to every error message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# A secret shorter than this is not redacted (it would mangle unrelated text); the
# engine warns about it instead.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces every known secret value (and its URL-encoded forms) with ``[REDACTED]``.

    Secrets learnt during a run (an OAuth2 access token, say) are added with :meth:`add`.
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
        variants = {secret, quote(secret, safe=""), quote_plus(secret)}
        if variants <= self._variants:
            return
        self._variants |= variants
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(self._variants, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered)))
        self.secrets = tuple(ordered)

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
