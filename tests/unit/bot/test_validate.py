"""Candle validation: each kind of bad candle is caught with its reason; the vectorised page
check agrees with the per-candle one; real data passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.marketdata import validate as v
from models.candles import Candles, read_candles_csv
from models.timeutil import MINUTE_MS
from tests.support.shared_data import DATA_DIR, shared_data_or_skip

GOOD = (1_617_321_600_000, 100.0, 101.0, 99.0, 100.5, 12.0)


@pytest.mark.parametrize(
    "candle, reason",
    [
        (GOOD, None),
        ((GOOD[0], 100.0, 100.0, 100.0, 100.0, 0.0), None),  # a minute with no trade
        ((GOOD[0], math.nan, 101.0, 99.0, 100.5, 12.0), v.NAN),
        ((GOOD[0], 100.0, 101.0, 99.0, 100.5, math.inf), v.NAN),
        ((GOOD[0] + 1_234, *GOOD[1:]), v.UNALIGNED),
        ((GOOD[0], 100.0, 101.0, 0.0, 100.5, 12.0), v.NON_POSITIVE),
        ((GOOD[0], -1.0, 101.0, 99.0, 100.5, 12.0), v.NON_POSITIVE),
        ((GOOD[0], 100.0, 99.0, 101.0, 100.5, 12.0), v.HIGH_LT_LOW),
        ((GOOD[0], 102.0, 101.0, 99.0, 100.5, 12.0), v.OUTSIDE_RANGE),
        ((GOOD[0], 100.0, 101.0, 99.0, 98.0, 12.0), v.OUTSIDE_RANGE),
        ((GOOD[0], 100.0, 101.0, 99.0, 100.5, -0.5), v.NEGATIVE_VOLUME),
    ],
)
def test_check_values(candle, reason):
    assert v.check_values(*candle) == reason


finite = st.floats(min_value=-5, max_value=200, allow_nan=False) | st.sampled_from([math.nan, math.inf, 0.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3) , finite, finite, finite, finite, finite), min_size=1, max_size=40))
def test_page_check_agrees_with_candle_check(rows):
    ts = np.array([GOOD[0] + i * MINUTE_MS + (17 if off == 3 else 0) for i, (off, *_x) in enumerate(rows)], dtype=np.int64)
    cols = [np.array([r[k] for r in rows], dtype=np.float64) for k in range(1, 6)]
    c = Candles(ts, *cols)
    page = dict(v.invalid_reasons(c))
    for i in range(len(c)):
        assert page.get(i) == v.check_values(int(ts[i]), *(float(col[i]) for col in cols))


def test_real_data_has_no_invalid_candle():
    shared_data_or_skip()
    c = read_candles_csv(DATA_DIR / "MKRUSDT.csv.gz")  # illiquid, many flat zero-volume minutes
    assert v.invalid_reasons(c) == []


def test_issue_log_counts_and_keeps_recent():
    log = v.IssueLog(keep=3)
    for i in range(5):
        log.report("BTCUSDT", i * MINUTE_MS, v.NAN, v.REFETCH, "ws", level=None)
    log.report("ETHUSDT", 0, v.DUPLICATE, v.DROPPED, "ws", level=None)
    assert log.count(v.NAN) == 5 and log.count(v.DUPLICATE) == 1
    assert log.by_action[(v.NAN, v.REFETCH)] == 5
    assert [i.reason for i in log.recent] == [v.NAN, v.NAN, v.DUPLICATE]
