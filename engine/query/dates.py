"""Dates in J1QL: ``date.now``, ``date.now - 30 days``, ``date(2024-01-31)``; all epoch milliseconds.

Units (as JupiterOne documents them): ``hour hr hours hrs``, ``day days``, ``month mo months
mos``, ``year yr years yrs``. Months and years are calendar steps in UTC (the 31st minus one
month is the last day of the month before); hours and days are fixed lengths.

A static date is ISO 8601: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, then optionally ``Thh``,
``Thh:mm``, ``Thh:mm:ss``, ``Thh:mm:ss.s`` and a zone (``Z`` or ``+hh:mm``); without a zone, UTC.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNITS = {
    **dict.fromkeys(("hour", "hr", "hours", "hrs"), "hour"),
    **dict.fromkeys(("day", "days"), "day"),
    **dict.fromkeys(("month", "mo", "months", "mos"), "month"),
    **dict.fromkeys(("year", "yr", "years", "yrs"), "year"),
}

_ISO = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?)?"
    r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?"
)


def unit(word: str) -> str | None:
    """The unit a word names (``hrs`` -> ``hour``), or None."""
    return UNITS.get(word.lower())


def static_ms(text: str) -> int | None:
    """``date(TEXT)``'s instant in epoch ms, or None when TEXT is not one of the ISO forms."""
    match = _ISO.fullmatch(text.strip())
    if not match:
        return None
    parts = match.groupdict()
    try:
        zone = UTC
        if parts["zone"] and parts["zone"] != "Z":
            sign = -1 if parts["zone"][0] == "-" else 1
            digits = parts["zone"][1:].replace(":", "")
            zone = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0)))
        fraction = (parts["fraction"] or "0")[:6].ljust(6, "0")
        moment = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=zone,
        )
    except ValueError:  # month 13, day 32, hour 25
        return None
    return _ms(moment)


def shifted(now_ms: int, steps: tuple[tuple[int | float, str], ...]) -> int:
    """``now_ms`` moved by each (signed amount, unit) in turn."""
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    for amount, step in steps:
        if step == "hour":
            moment += timedelta(hours=amount)
        elif step == "day":
            moment += timedelta(days=amount)
        else:
            months = amount * (12 if step == "year" else 1)
            whole = int(months)
            moment = _add_months(moment, whole)
            if months != whole:  # a fraction of a month: 30-day months
                moment += timedelta(days=(months - whole) * 30)
    return _ms(moment)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)
