"""The one number formatter: figures in, text for people out (beside `models.timeutil`, which does
the same for times).

Every place that shows a figure to a person formats it here: the short log lines
(`bot.logs.event_lines`), `bot status`, Telegram, the dashboard, the backtest report and the
walk-forward / research tables. It lives in `models/` so that `models` (which never imports
`bot`) can use it too. A missing (None) or non-finite value is always `MISSING`, one mark
everywhere.

    num(98.314)        '98.31'       a price or quantity in a log line (4 significant digits below 1)
    price(0.36603)     '0.36603'     a price or quantity in a table: 6 significant digits, no exponent
    fixed(1234.5)      '1,234.50'    a plain figure, thousands grouped (digits=, grouping=)
    money(-12.5)       '-12.50'      quote currency, signed by default ('+0.95'); sign=False unsigned
    pct(0.0021)        '+0.21%'      a fraction as percent (sign=, digits=, unit='' for a 'win %' column)
    pf(1.234)          '1.23'        a profit factor or ratio; '∞' for +inf (trades without a loss)
    count(2801440)     '2,801,440'
    duration(11520)    '3h12m'       seconds as a duration or an age ('42m', '1h30m', '2d03h')
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"  # the mark for a value that is absent (None) or not a number (NaN, inf where no meaning)


def _finite(v: Any) -> float | None:
    """`v` as a finite float, or None for None, NaN and +-inf. Something that is not a number
    at all raises (TypeError / ValueError): a caller's bug, not a missing value (the log lines
    fall back to `key=value` on it)."""
    if v is None:
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def num(v: Any) -> str:
    """A price or quantity: 2 decimals from 1 up (98.31, 1.20), 4 significant digits below."""
    x = _finite(v)
    if x is None:
        return MISSING
    a = abs(x)
    if a >= 1 or a == 0:
        return f"{x:.2f}"
    return f"{x:.{min(12, 3 - math.floor(math.log10(a)))}f}"


def price(v: Any, digits: int = 6) -> str:
    """A price or quantity to `digits` significant digits, trailing zeros dropped: 50500,
    457.49, 0.36603, 0.00001234 (never an exponent)."""
    x = _finite(v)
    if x is None:
        return MISSING
    if x == 0:
        return "0"
    places = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fixed(v: Any, digits: int = 2, *, grouping: bool = True, sign: bool = False) -> str:
    """A plain figure with `digits` decimals: '1,234.50' (grouping=False: '1234.50'; sign: '+1.20')."""
    x = _finite(v)
    if x is None:
        return MISSING
    return f"{x:{'+' if sign else ''}{',' if grouping else ''}.{digits}f}"


def money(v: Any, *, sign: bool = True, digits: int = 2) -> str:
    """An amount of the quote currency: '+1,234.56' / '-12.50' (sign=False: '1,234.56'); whole
    units from a million up ('+1,234,567')."""
    x = _finite(v)
    if x is None:
        return MISSING
    return fixed(x, digits if abs(x) < 1e6 else 0, sign=sign)


def pct(v: Any, *, sign: bool = True, digits: int = 2, unit: str = "%") -> str:
    """A fraction as percent: 0.0021 -> '+0.21%' (sign=False: '0.21%'; unit='' for a column
    headed '%': '0.21')."""
    x = _finite(v)
    if x is None:
        return MISSING
    return f"{x * 100:{'+' if sign else ''}.{digits}f}{unit}"


def pf(v: Any, digits: int = 2) -> str:
    """A profit factor (or another ratio): '1.23'; '∞' for +inf (winners and no loser)."""
    if isinstance(v, int | float) and not isinstance(v, bool) and v == math.inf:
        return "∞"
    return fixed(v, digits, grouping=False)


def count(v: Any) -> str:
    """A whole number of things: '2,801,440'."""
    x = _finite(v)
    return MISSING if x is None else f"{int(round(x)):,}"


def things(n: int, noun: str, plural: str | None = None) -> str:
    """A count with its noun: '1 symbol', '30 symbols', '1,204 candles'."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def duration(seconds: Any) -> str:
    """Seconds as a duration or an age: '45s', '12m', '3m12s', '1h30m', '2d03h' (negative counts
    as 0: an age is never negative)."""
    x = _finite(seconds)
    if x is None:
        return MISSING
    s = max(0, int(round(x)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24:02d}h"
