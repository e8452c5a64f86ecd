"""The one time helper: UTC epoch milliseconds in, and text for people out.

Every timestamp in the project is an int of UTC epoch milliseconds of a candle's open (wire,
store, numpy). People read and type dates, so this module is the only place that converts:
`parse_time` for what a user types on a command line, `fmt_ts` for reports and errors
(`2021-04-30 12:00`), `fmt_short` for the short human log lines (`04-30 12:00`, UTC said once
by the reader of the log).
"""

from __future__ import annotations

import datetime as dt

from models.textfmt import MISSING

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class TimeParseError(ValueError):
    """A date/time a user typed that we cannot read; the message says what is accepted."""


def parse_time(text: str) -> int:
    """'2021-04-30', '2021-04-30T12:00', '2021-04-30 12:00', '...Z' / '+00:00' or epoch ms -> epoch ms.

    A time without a zone is UTC. Raises `TimeParseError` naming the accepted forms.
    """
    s = str(text).strip()
    if s.lstrip("-").isdigit():
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise TimeParseError(
            f"cannot read time {text!r}: use an ISO date or date/time (YYYY-MM-DD, YYYY-MM-DDTHH:MM; UTC) "
            "or epoch milliseconds"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def parse_optional_time(text: str | None) -> int | None:
    """`parse_time` for an optional command-line value: None stays None."""
    return None if text is None else parse_time(text)


def to_datetime(ms: int) -> dt.datetime:
    """Epoch ms -> an aware UTC datetime."""
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC)


def fmt_ts(ms: int | None, *, seconds: bool = False) -> str:
    """Epoch ms -> '2021-04-30 12:00' (UTC; with seconds if asked); `models.textfmt.MISSING` for None."""
    if ms is None:
        return MISSING
    return to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def fmt_date(ms: int | None) -> str:
    """Epoch ms -> '2021-04-30' (UTC); `models.textfmt.MISSING` for None."""
    return MISSING if ms is None else to_datetime(ms).strftime("%Y-%m-%d")


def fmt_short(ms: int | None) -> str:
    """Epoch ms -> '04-30 12:00' (UTC) for short human log lines; `models.textfmt.MISSING` for None."""
    return MISSING if ms is None else to_datetime(ms).strftime("%m-%d %H:%M")


def fmt_span(start_ms: int, end_ms: int) -> str:
    """A half-open range [start, end) as '2021-04-02 00:00 .. 2021-04-30 00:00'."""
    return f"{fmt_ts(start_ms)} .. {fmt_ts(end_ms)}"
