"""Config values for a run: from ``--config``, the environment, a ``.env`` file, or defaults.

The values of fields marked ``secret`` go to the run's :class:`~engine.secrets.Redactor`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dotenv.parser import parse_stream

from ..errors import ConfigError, did_you_mean
from ..secrets import MIN_SECRET_LENGTH, Redactor
from .plan import ConfigField, Plan, fits_type

log = logging.getLogger("etl.config")


@dataclass(frozen=True)
class ResolvedConfig:
    values: Mapping[str, Any]
    redactor: Redactor
    placeholders: tuple[str, ...] = ()  # secret fields filled with a placeholder for replay


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--config expects NAME=VALUE, got {pair!r}")
        out[name.strip()] = value
    return out


def read_dotenv(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` pairs of a ``.env`` file, parsed by python-dotenv: an ``export`` prefix,
    single or double quotes (a quoted value ends at its closing quote, so ``KEY="v"  # note`` is
    ``v``), ``\\n``-style escapes in double quotes, multiline quoted values, ``#`` comments.

    Values are taken literally: ``${VAR}`` is **not** expanded (a secret holding a ``$`` stays
    intact, and a value never silently depends on another variable). A key without ``=`` has
    no value and is left out; a line that cannot be parsed is warned about, with its line
    number, and ignored. No file: no values.
    """
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM some editors write is not part of the first key
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    values = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            log.warning("%s:%d: not a KEY=VALUE line (an unclosed quote?); ignored", path, binding.original.line)
        elif binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


def resolve_config(
    plan: Plan,
    overrides: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
    defaults: Mapping[str, Any] | None = None,
    secret_placeholders: bool = False,
) -> ResolvedConfig:
    """Resolve every config field. Order: ``--config``, environment, ``.env``, ``defaults``
    (e.g. a mapping's offline config), the field's own default.

    With ``secret_placeholders`` (replaying a cassette), a missing secret becomes a
    placeholder instead of an error: replay never sends it anywhere.
    """
    environ = os.environ if environ is None else environ
    dotenv_values = read_dotenv(dotenv) if dotenv else {}
    fields = {f.name: f for f in plan.config_fields}
    for name in overrides:
        if name not in fields:
            hint = did_you_mean(name, fields) or f"; known fields: {', '.join(sorted(fields)) or 'none'}"
            raise ConfigError(f"--config {name}=...: {plan.path} has no config field '{name}'{hint}")

    values: dict[str, Any] = {}
    placeholders = []
    for field in plan.config_fields:
        raw, origin = _raw_value(field, overrides, environ, dotenv_values, defaults or {})
        if raw is None:
            if field.required and field.secret and secret_placeholders:
                values[field.name] = f"placeholder-{field.name}"
                placeholders.append(field.name)
                continue
            if field.required:
                raise ConfigError(_missing_message(plan, field))
            values[field.name] = field.default
            continue
        values[field.name] = _convert(field, raw, origin)
        if field.choices and values[field.name] not in field.choices:
            shown = "the value" if field.secret else repr(values[field.name])
            raise ConfigError(
                f"config field '{field.name}' must be one of {', '.join(map(str, field.choices))}; "
                f"{origin} gives {shown}"
            )

    secrets = [str(values[f.name]) for f in plan.config_fields if f.secret and values.get(f.name) is not None]
    for field in plan.config_fields:
        if field.secret and values.get(field.name) is not None and len(str(values[field.name])) < MIN_SECRET_LENGTH:
            log.warning(
                "config field '%s' is shorter than %d characters: too short to redact safely, it may "
                "appear in logs and output",
                field.name,
                MIN_SECRET_LENGTH,
            )
    return ResolvedConfig(MappingProxyType(values), Redactor(secrets), tuple(placeholders))


def _raw_value(field: ConfigField, overrides, environ, dotenv_values, defaults) -> tuple[Any, str]:
    if field.name in overrides:
        return overrides[field.name], f"--config {field.name}"
    if field.env and environ.get(field.env, "") != "":
        return environ[field.env], f"environment variable {field.env}"
    if field.env and dotenv_values.get(field.env, "") != "":
        return dotenv_values[field.env], f"{field.env} in .env"
    if field.name in defaults:
        return defaults[field.name], "the mapping's offline config"
    return None, ""


def _missing_message(plan: Plan, field: ConfigField) -> str:
    what = f" ({field.description})" if field.description else ""
    ways = []
    if field.env:
        ways.append(f"set the environment variable {field.env} (or put it in .env)")
    ways.append(f"pass --config {field.name}=...")
    return f"missing required config field '{field.name}'{what}: " + " or ".join(ways)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(field: ConfigField, raw: Any, origin: str) -> Any:
    if not isinstance(raw, str):  # already typed (a mapping's offline config)
        if not fits_type(field.type, raw):
            raise ConfigError(f"config field '{field.name}' expects {field.type}, but {origin} gives {raw!r}")
        return raw
    text = raw if field.secret else raw.strip()
    shown = "the value" if field.secret else repr(text)
    try:
        if field.type == "integer":
            return int(text)
        if field.type == "number":
            return float(text)
        if field.type == "boolean":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
    except ValueError:
        raise ConfigError(f"config field '{field.name}' expects {field.type}, but {origin} gives {shown}") from None
    return text
