"""The engine's JMESPath functions, and the value helpers Jinja filters share with them.

``to_epoch_ms``, ``now_ms``, ``days_ago_ms``, ``split``, ``trim``... are added to JMESPath's
standard functions by :class:`EngineFunctions`; one instance per run carries the config
values and the run's clock (``--as-of``).

The helpers of signed requests live here too (templates call them as filters, JMESPath as
functions): digests (:func:`digest`), HMAC (:func:`hmac_digest`), base64, percent-encoding
and the time formats APIs ask for (:func:`format_time`). Their errors never show the value
or the key they were given: a key is a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import jmespath
from jmespath import functions

from ..errors import LimitExceeded, ValueProblem
from .jmespath_compiler import CompiledExpref
from .limits import MAX_ITEMS, MAX_STRING_LENGTH, MAX_VALUE_SIZE, check_join, check_replace, text_size


def to_epoch_ms(value: Any) -> int | None:
    """ISO-8601 / RFC 2822 / ``YYYY-MM-DD`` text -> milliseconds since the epoch (UTC).

    A date or time without an offset is taken as UTC. Numbers are assumed to be epoch
    milliseconds already and are returned unchanged; null stays null.
    """
    if value.__class__ is str and value:
        return _text_to_epoch_ms(value)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueProblem(f"cannot read a date from the boolean {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    raise ValueProblem(f"cannot read a date from {type(value).__name__} {value!r}")


@lru_cache(maxsize=4096)  # the same dates come back often (day-granular validity dates, say)
def _text_to_epoch_ms(value: str) -> int:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ValueProblem(f"cannot read a date from {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


DAY_MS = 86_400_000


def split_text(value: str | None, separator: str) -> list[str] | None:
    """Split and trim, dropping empty parts. null stays null."""
    if value is None:
        return None
    if separator and value.count(separator) >= MAX_ITEMS:
        raise LimitExceeded(f"split() would give more than {MAX_ITEMS:,} parts")
    return [part.strip() for part in value.split(separator) if part.strip()]


def _strings(function: str, values: list) -> list:
    for value in values:
        if value.__class__ is not str:
            raise ValueProblem(f"{function}(): an array must hold only strings, not {value!r}")
    return values


def unique(values: list) -> list:
    """The first occurrence of each item (equal as Python compares them), in linear time."""
    seen: set = set()
    out = []
    for v in values:
        key = _hashable(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


_LIST, _OBJECT = object(), object()  # tags keeping a frozen list apart from a frozen object


def _hashable(value: Any) -> Any:
    """``value`` with its lists and objects frozen: two values are equal exactly when their
    frozen forms are (1 == 1.0 == true, as Python has it), and the frozen form hashes."""
    if isinstance(value, list):
        return (_LIST, tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return (_OBJECT, frozenset((k, _hashable(v)) for k, v in value.items()))
    return value


# ----------------------------------------------------------------------------------------
# Signing helpers: digests, HMAC, base64, percent-encoding, time formats

DIGEST_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
DIGEST_ENCODINGS = ("hex", "base64", "base64url", "bytes")
KEY_ENCODINGS = ("text", "base64", "hex")


def _as_bytes(value: Any, function: str) -> bytes:
    """What a digest is computed over: text as UTF-8, bytes as they are, a number as its text."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise ValueProblem(f"{function}(): the value must be text or bytes, not {type(value).__name__}")


def _encoded(raw: bytes, encoding: str, function: str) -> str | bytes:
    """A digest as ``hex``, ``base64``, ``base64url`` (URL-safe alphabet, no padding) or
    ``bytes`` (raw, to key another HMAC)."""
    if encoding == "hex":
        return raw.hex()
    if encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    if encoding == "base64url":
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if encoding == "bytes":
        return raw
    raise ValueProblem(f"{function}(): unknown encoding {encoding!r}; use one of {', '.join(DIGEST_ENCODINGS)}")


def digest(value: Any, algorithm: str, encoding: str = "hex") -> str | bytes | None:
    """The ``algorithm`` digest (md5, sha1, sha256, sha512) of ``value``; null stays null."""
    if value is None:
        return None
    data = _as_bytes(value, algorithm)
    return _encoded(hashlib.new(algorithm, data, usedforsecurity=False).digest(), encoding, algorithm)


def _key_bytes(key: Any, key_encoding: str, function: str) -> bytes:
    """An HMAC key: text (as UTF-8, or decoded from base64 or hex) or bytes (an HMAC's
    ``bytes`` output). Never shown in an error."""
    if isinstance(key, bytes):
        raw = key
    elif key is None:
        raise ValueProblem(f"{function}(): the key is null (is its config field set?)")
    elif not isinstance(key, str):
        raise ValueProblem(f"{function}(): the key must be text or bytes, not {type(key).__name__}")
    elif key_encoding == "text":
        raw = key.encode("utf-8")
    elif key_encoding == "base64":
        try:
            raw = decode_base64(key)
        except ValueProblem:
            raise ValueProblem(f"{function}(): the key is not valid base64 (key_encoding='base64')") from None
    elif key_encoding == "hex":
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise ValueProblem(f"{function}(): the key is not valid hex (key_encoding='hex')") from None
    else:
        raise ValueProblem(
            f"{function}(): unknown key_encoding {key_encoding!r}; use one of {', '.join(KEY_ENCODINGS)}"
        )
    if not raw:
        raise ValueProblem(f"{function}(): the key is empty")
    return raw


def hmac_digest(
    value: Any, key: Any, algorithm: str, encoding: str = "hex", key_encoding: str = "text"
) -> str | bytes | None:
    """The HMAC of ``value`` with ``key`` (see :func:`_key_bytes`), ``algorithm`` sha1, sha256
    or sha512, as ``encoding`` says; a null value stays null."""
    function = f"hmac_{algorithm}"
    secret = _key_bytes(key, key_encoding, function)
    if value is None:
        return None
    return _encoded(hmac.new(secret, _as_bytes(value, function), algorithm).digest(), encoding, function)


def encode_base64(value: Any, urlsafe: bool = False, pad: bool = True) -> str | None:
    """Text (as UTF-8) or bytes in base64, or its URL-safe alphabet; null stays null."""
    if value is None:
        return None
    data = _as_bytes(value, "base64_encode")
    text = (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode("ascii")
    if len(text) > MAX_STRING_LENGTH:
        raise LimitExceeded(f"the result of base64_encode() longer than {MAX_STRING_LENGTH:,} characters")
    return text if pad else text.rstrip("=")


def decode_base64(text: str) -> bytes:
    """Base64 in either alphabet, padded or not, surrounding whitespace ignored."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueProblem("base64_decode(): the value is not valid base64") from None


def base64_to_text(value: Any, output: str = "text") -> str | bytes | None:
    """Base64 decoded to UTF-8 text (``output='text'``) or to ``bytes``; null stays null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueProblem(f"base64_decode(): the value must be text, not {type(value).__name__}")
    raw = decode_base64(value)
    if output == "bytes":
        return raw
    if output != "text":
        raise ValueProblem(f"base64_decode(): unknown output {output!r}; use 'text' or 'bytes'")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueProblem(
            "base64_decode(): the decoded bytes are not UTF-8 text; use base64_decode('bytes')"
        ) from None


def percent_encode(value: Any, safe: str = "") -> str | None:
    """RFC 3986 percent-encoding: every byte of the UTF-8 text but ``A-Z a-z 0-9 - _ . ~``
    (and the characters of ``safe``) as ``%XX``, a space as ``%20``; null stays null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueProblem(f"percent_encode(): the value must be text or a number, not {type(value).__name__}")
    text = quote(str(value), safe=safe)
    if len(text) > MAX_STRING_LENGTH:
        raise LimitExceeded(f"the result of percent_encode() longer than {MAX_STRING_LENGTH:,} characters")
    return text


TIME_FORMATS = {
    "iso8601": "%Y-%m-%dT%H:%M:%SZ",  # 2024-01-02T03:04:05Z
    "compact": "%Y%m%dT%H%M%SZ",  # 20240102T030405Z (a basic ISO 8601 time, as some signature schemes want)
    "date": "%Y-%m-%d",  # 2024-01-02
    "compact_date": "%Y%m%d",  # 20240102
}
TIME_FORMAT_NAMES = ("epoch", "epoch_ms", "iso8601", "iso8601_ms", "http_date", "compact", "date", "compact_date")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(value: Any, fmt: str = "iso8601") -> str | int | None:
    """A time (epoch milliseconds, or a date :func:`to_epoch_ms` reads) in UTC as ``fmt``
    says: ``epoch`` (seconds), ``epoch_ms``, ``iso8601``, ``iso8601_ms``, ``http_date``
    (RFC 1123, ``Tue, 02 Jan 2024 03:04:05 GMT``), ``compact``, ``date``, ``compact_date``, or a
    ``strftime`` pattern (any text with ``%``). null stays null."""
    ms = to_epoch_ms(value)
    if ms is None:
        return None
    if fmt == "epoch":
        return ms // 1000
    if fmt == "epoch_ms":
        return ms
    try:
        moment = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise ValueProblem(f"format_time(): {ms} ms since the epoch is out of range") from None
    if fmt == "iso8601_ms":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if fmt == "http_date":
        return format_datetime(moment, usegmt=True)
    if fmt in TIME_FORMATS:
        return moment.strftime(TIME_FORMATS[fmt])
    if "%" in fmt:
        text = moment.strftime(fmt)
        if len(text) > MAX_STRING_LENGTH:
            raise LimitExceeded(f"the result of format_time() longer than {MAX_STRING_LENGTH:,} characters")
        return text
    raise ValueProblem(
        f"format_time(): unknown format {fmt!r}; use one of {', '.join(TIME_FORMAT_NAMES)}, or a strftime pattern"
    )


# ----------------------------------------------------------------------------------------
# JMESPath


class EngineFunctions(functions.Functions):
    """JMESPath functions the engine adds to the standard ones. Null-safe where it helps."""

    def __init__(self, config: dict[str, Any] | None = None, now: int | None = None):
        super().__init__()
        self._config = config or {}
        self._now = int(time.time() * 1000) if now is None else now

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_to_epoch_ms(self, value):
        return to_epoch_ms(value)

    @functions.signature({"types": ["expref"]}, {"types": ["array"]})
    def _func_map(self, expref, values):
        """jmespath's map, calling a compiled expression directly."""
        if not isinstance(expref, CompiledExpref):  # jmespath.py's own interpreter
            return super()._func_map(expref, values)
        search, functions = expref.fn, expref.functions
        if not expref.amplifies:
            return [search(value, functions) for value in values]
        out, total = [], 0
        for value in values:
            result = search(value, functions)
            total += len(result) if result.__class__ is str else text_size(result, MAX_VALUE_SIZE - total)
            if total > MAX_VALUE_SIZE:
                raise LimitExceeded(f"map() would build more than {MAX_VALUE_SIZE:,} characters")
            out.append(result)
        return out

    @functions.signature({"types": []})
    def _func_to_string(self, value):
        """jmespath's to_string, without a JSON encoder for the usual text and integers, and
        refusing a list or object whose text would be too long before encoding it."""
        cls = value.__class__
        if cls is str:
            return value
        if cls is int:
            return str(value)
        if text_size(value, MAX_STRING_LENGTH) > MAX_STRING_LENGTH:
            raise LimitExceeded(f"to_string() would give more than {MAX_STRING_LENGTH:,} characters")
        return super()._func_to_string(value)

    @functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator, values):
        """jmespath's join, refusing a result beyond the string limit before building it."""
        check_join(separator, values, "the result of join()")
        return separator.join(values)

    @functions.signature()
    def _func_now_ms(self):
        """The run's clock in epoch milliseconds (``etl run --as-of`` sets it)."""
        return self._now

    @functions.signature({"types": ["number"]})
    def _func_days_ago_ms(self, days):
        return int(self._now - days * DAY_MS)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, value, separator):
        return split_text(value, separator)

    @functions.signature({"types": ["string", "null"]})
    def _func_trim(self, value):
        return None if value is None else value.strip()

    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value):
        return None if value is None else value.lower()

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value):
        return None if value is None else value.upper()

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, value, old, new):
        if value is None:
            return None
        check_replace(value, old, new)
        return value.replace(old, new)

    @functions.signature({"types": ["string", "array", "null"]}, {"types": ["string"]})
    def _func_trim_prefix(self, value, prefix):
        """The text without ``prefix``; of an array of strings, each item's."""
        if value is None:
            return None
        if isinstance(value, list):
            return [item.removeprefix(prefix) for item in _strings("trim_prefix", value)]
        return value.removeprefix(prefix)

    @functions.signature({"types": ["string", "array", "null"]}, {"types": ["string"]})
    def _func_trim_suffix(self, value, suffix):
        """The text without ``suffix``; of an array of strings, each item's."""
        if value is None:
            return None
        if isinstance(value, list):
            return [item.removesuffix(suffix) for item in _strings("trim_suffix", value)]
        return value.removesuffix(suffix)

    @functions.signature({"types": ["array", "null"]})
    def _func_unique(self, values):
        return None if values is None else unique(values)

    @functions.signature({"types": ["array", "null"]}, {"types": ["array", "null"]})
    def _func_difference(self, values, removed):
        """The items of the first array that are not in the second, in order."""
        if values is None:
            return None
        gone = {_hashable(v) for v in removed or ()}
        return [v for v in values if _hashable(v) not in gone]

    @functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values):
        """The first argument that is not null (unlike ``||``, keeps false, 0 and '')."""
        return next((v for v in values if v is not None), None)

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_from_entries(self, items, key_field, value_field):
        """[{label: a, value: 1}] with 'label', 'value' -> {a: 1}. Skips items without a key."""
        if items is None:
            return None
        out = {}
        for item in items:
            if isinstance(item, dict) and item.get(key_field) is not None:
                out[str(item[key_field])] = item.get(value_field)
        return out

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_sha256(self, value):
        """The SHA-256 digest of the text, in hex."""
        return digest(value, "sha256")

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_sha1(self, value):
        """The SHA-1 digest of the text, in hex."""
        return digest(value, "sha1")

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_md5(self, value):
        """The MD5 digest of the text, in hex."""
        return digest(value, "md5")

    @functions.signature({"types": ["string", "null"]})
    def _func_base64_encode(self, value):
        """The text's UTF-8 bytes in base64."""
        return encode_base64(value)

    @functions.signature({"types": ["string", "null"]})
    def _func_base64_decode(self, value):
        """Base64 (either alphabet, padded or not) decoded to UTF-8 text."""
        return base64_to_text(value)

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_percent_encode(self, value):
        """RFC 3986 percent-encoding (everything but letters, digits and ``-_.~``)."""
        return percent_encode(value)

    @functions.signature({"types": ["string", "number", "null"]}, {"types": ["string"]})
    def _func_format_time(self, value, fmt):
        """A date or epoch milliseconds in UTC, in one of the formats of :func:`format_time`."""
        return format_time(value, fmt)

    @functions.signature({"types": ["string"]})
    def _func_config(self, name):
        """The value of the mapping's config field ``name``."""
        if name not in self._config:
            raise ValueProblem(f"config('{name}'): no such config field")
        return self._config[name]


def jmespath_options(config: dict[str, Any] | None = None, now: int | None = None) -> jmespath.Options:
    return jmespath.Options(custom_functions=EngineFunctions(config, now))


FUNCTION_NAMES = frozenset(name.removeprefix("_func_") for name in dir(EngineFunctions) if name.startswith("_func_"))

BUILTIN_FUNCTION_NAMES = frozenset(
    name.removeprefix("_func_") for name in dir(functions.Functions) if name.startswith("_func_")
)
