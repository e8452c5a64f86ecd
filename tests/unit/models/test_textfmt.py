"""The one number formatter: each figure's text, one missing mark everywhere, and the users
(log lines, bot status, dashboard, report and research tables) formatting through it."""

from __future__ import annotations

import math

import pytest

from models import textfmt
from models.textfmt import MISSING, count, duration, fixed, money, num, pct, pf, price
from models.timeutil import fmt_date, fmt_short, fmt_ts


@pytest.mark.parametrize(("fn", "value", "text"), [
    (num, 98.314, "98.31"), (num, 1.2, "1.20"), (num, 0.5, "0.5000"), (num, 0.00001234, "0.00001234"), (num, 0, "0.00"),
    (num, -12.345, "-12.35"),
    (price, 50_500.0, "50500"), (price, 457.49, "457.49"), (price, 0.36603, "0.36603"), (price, 0.00001234, "0.00001234"),
    (price, 2.2391234, "2.23912"), (price, 0, "0"), (price, 1_234_567.8, "1234568"),
    (fixed, 1234.5, "1,234.50"), (money, -12.5, "-12.50"), (money, 0.948, "+0.95"), (money, 1_234_567.4, "+1,234,567"),
    (pct, 0.0021, "+0.21%"), (pct, -0.0083, "-0.83%"), (pf, 1.234, "1.23"), (pf, math.inf, "∞"),
    (count, 2_801_440, "2,801,440"), (count, 3.0, "3"),
    (duration, 45, "45s"), (duration, 720, "12m"), (duration, 192.4, "3m12s"), (duration, 5400, "1h30m"),
    (duration, 2 * 86_400 + 3 * 3600, "2d03h"), (duration, -5, "0s"),
])  # fmt: skip
def test_each_figure(fn, value, text) -> None:  # noqa: ANN001
    assert fn(value) == text


def test_options() -> None:
    assert fixed(1234.5, 1, grouping=False) == "1234.5" and fixed(1.2, sign=True) == "+1.20"
    assert money(1234.5, sign=False) == "1,234.50" and money(1.0, digits=0) == "+1"
    assert pct(0.021, sign=False, digits=1) == "2.1%" and pct(0.5512, sign=False, digits=1, unit="") == "55.1"
    assert pf(1.23456, 3) == "1.235"


@pytest.mark.parametrize("fn", [num, price, fixed, money, pct, pf, count, duration])
def test_one_mark_for_a_missing_value(fn) -> None:  # noqa: ANN001
    for v in (None, math.nan, -math.inf):
        assert fn(v) == MISSING, (fn, v)
    with pytest.raises((TypeError, ValueError)):
        fn("lots")  # not a number at all: the caller's bug is loud (the log lines fall back to key=value)


def test_times_use_the_same_mark() -> None:
    assert MISSING == "-" and fmt_ts(None) == fmt_short(None) == fmt_date(None) == MISSING
    assert textfmt.pf(math.inf) != MISSING


def test_the_users_format_through_it() -> None:
    """The users' missing values come out as the one mark, not their former '–'."""
    from bot.backtest.report import html
    from bot.logs.event_lines import render_body
    from models.evaluation.tables import per_symbol_table
    from models.research.table import outer_section

    assert html.pct(None) == html.num(None) == html.signed_money(None) == html.hold_text(None) == MISSING
    assert html.pf_text({"trades": 0}) == MISSING and html.pf_text({"trades": 3, "avg_loss": None}) == "∞"
    assert html.hold_text(65) == "1h05m"
    row = per_symbol_table({"per_symbol": {"BTCUSDT": {"trades": 0, "win_rate": None, "profit_factor": None,
                                                       "expectancy": None, "max_drawdown": 0.0123, "exposure": 0.5}}})
    assert row.splitlines()[-1] == "| BTCUSDT | 0 | - | - | - | - | 1.23% | 50.0% |"  # fmt: skip
    assert "No configuration" in outer_section(None)
    assert render_body({"event": "retrain_done", "version": "v", "status": "rejected", "champion_version": "c"}) == \
        f"RETRAIN v  vs champion {MISSING}  -> rejected"
