"""The correlation computation (against numpy's corrcoef on real 1m returns) and the correlation
filter's ranking, signed threshold, open positions and unknown history."""

from __future__ import annotations

import numpy as np
import pytest

from models.candles import read_candles_csv
from risk import Candidates, MarketRules, OpenPosition, Portfolio, Reason, RiskConfig, RiskManager
from risk.correlation import corr_matrix
from tests.support.shared_data import DATA_DIR, shared_data_or_skip, symbols30

NOW = 1_620_000_000_000
WINDOW = 240


@pytest.fixture(scope="module")
def real_returns() -> tuple[list[str], np.ndarray]:
    """1m log returns of the 30 test symbols over 240 minutes of real data (float32, as the
    feature ring buffer holds them)."""
    shared_data_or_skip()
    syms = symbols30()
    rows = []
    for s in syms:
        c = read_candles_csv(DATA_DIR / f"{s}.csv.gz")
        close = c.close[20_000 : 20_000 + WINDOW + 1]
        rows.append(np.diff(np.log(close)))
    return syms, np.asarray(rows, dtype=np.float32)


def test_matches_numpy_corrcoef_on_real_returns(real_returns):
    _, r = real_returns
    idx = np.arange(r.shape[0])
    got = corr_matrix(r, idx, 120)
    ref = np.corrcoef(r.astype(np.float64))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert 0.5 < got[0, 1] < 1.0  # BTC/ETH move together at 1m: the data is doing real work


def test_pairwise_complete_with_gaps_matches_corrcoef_on_the_overlap(real_returns):
    _, r = real_returns
    x = r[:6].astype(np.float64).copy()
    rng = np.random.default_rng(0)
    x[rng.random(x.shape) < 0.15] = np.nan  # ~15 % missing, different minutes per symbol
    got = corr_matrix(x, np.arange(6), 100)
    for i in range(6):
        for j in range(6):
            both = np.isfinite(x[i]) & np.isfinite(x[j])
            ref = np.corrcoef(x[i, both], x[j, both])[0, 1]
            assert got[i, j] == pytest.approx(ref, abs=1e-10)


def test_unknown_when_too_short_flat_or_absent():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1e-3, (4, 240))
    x[1, :200] = np.nan  # 40 minutes left < min_overlap 120
    x[2] = 0.0005  # a constant series has no correlation
    got = corr_matrix(x, np.array([0, 1, 2, 3, -1]), 120)
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 0])
    assert np.isnan(got[0, 2]) and np.isnan(got[2, 3])
    assert np.isnan(got[0, 4]).all()  # -1: a symbol outside the universe
    assert np.isfinite(got[0, 3]) and got[0, 0] == pytest.approx(1.0)
    # the complete path: a flat row among finite rows
    y = rng.normal(0, 1e-3, (3, 240)).astype(np.float32)
    y[1] = np.float32(0.001)
    got = corr_matrix(y, np.arange(3), 120)
    assert np.isnan(got[1]).all() and np.isfinite(got[0, 2])


# --- the filter -----------------------------------------------------------------------------

SYMS = ("AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT")


def factor_returns(seed: int = 7) -> np.ndarray:
    """A and B share a factor (corr ~0.99), D is its mirror (-0.99), C and E are independent,
    F follows E (corr ~0.99)."""
    rng = np.random.default_rng(seed)
    f, g = rng.normal(0, 1e-3, (2, WINDOW))
    noise = rng.normal(0, 1e-4, (6, WINDOW))
    c = rng.normal(0, 1e-3, WINDOW)
    return np.stack([f, f, c, -f, g, g]) + noise


def manager(**cfg: object) -> RiskManager:
    cfg = {"max_positions": 10, "max_fraction_per_trade": 0.05, "max_correlation": 0.8, **cfg}
    return RiskManager(RiskConfig(**cfg), SYMS, {s: MarketRules(qty_step=0.001) for s in SYMS}, 0.002)


def cands(idx, er) -> Candidates:
    n = len(idx)
    f = np.full
    return Candidates(np.array(idx), np.array(er, dtype=float), f(n, 0.65), f(n, 10.0), f(n, 0.02),
                      f(n, 0.01), f(n, 0.004))  # fmt: skip


def test_best_of_a_correlated_pair_wins_and_anticorrelation_is_allowed():
    r = factor_returns()
    ref = np.corrcoef(r)
    assert ref[0, 1] > 0.95 and ref[0, 3] < -0.95
    d = manager().decide(cands([0, 1, 2, 3], [0.003, 0.004, 0.002, 0.001]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert [Reason(x) for x in d.reason] == [Reason.CORRELATION, Reason.TAKEN, Reason.TAKEN, Reason.TAKEN]
    row = d.rows()[0]
    assert row.details["corr_with"] == "BUSDT" and row.details["corr"] == pytest.approx(ref[0, 1])
    # D is -0.99 with B: a long hedge, not concentration, so the signed filter admits it
    assert d.rows()[3].details["corr"] < 0.8


def test_open_position_blocks_a_correlated_candidate():
    r = factor_returns()
    pf = Portfolio(10_000.0, 9_000.0, (OpenPosition("EUSDT", 100.0, 10.0, 10.0),))
    d = manager().decide(cands([5, 2], [0.004, 0.003]), pf, r, NOW)
    assert [Reason(x) for x in d.reason] == [Reason.CORRELATION, Reason.TAKEN]
    assert d.rows()[0].details["corr_with"] == "EUSDT"


def test_threshold_is_strict_and_configurable():
    r = factor_returns()
    c01 = float(np.corrcoef(r[0], r[1])[0, 1])
    above = manager(max_correlation=min(1.0, c01 + 1e-6)).decide(
        cands([0, 1], [0.003, 0.004]), Portfolio(10_000.0, 10_000.0), r, NOW)
    below = manager(max_correlation=c01 - 1e-6).decide(
        cands([0, 1], [0.003, 0.004]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert above.taken.all()
    assert below.reason[0] == Reason.CORRELATION


def test_unknown_history_is_not_traded_against_a_reference():
    r = factor_returns()
    r[2, :] = np.nan  # C has no history yet
    d = manager().decide(cands([1, 2], [0.004, 0.003]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert [Reason(x) for x in d.reason] == [Reason.TAKEN, Reason.CORRELATION_UNKNOWN]
    assert d.rows()[1].details["corr_with"] == "BUSDT"
    # alone, with nothing to be correlated with, it can be taken
    d = manager().decide(cands([2], [0.003]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert d.taken.all()
    # a position outside the universe has no returns row: nothing can be checked against it
    pf = Portfolio(10_000.0, 9_000.0, (OpenPosition("ZZZUSDT", 1.0, 1000.0, 1000.0),))
    d = manager().decide(cands([0], [0.003]), pf, factor_returns(), NOW)
    assert d.reason[0] == Reason.CORRELATION_UNKNOWN and d.rows()[0].details["corr_with"] == "ZZZUSDT"


def test_filter_on_real_returns_keeps_every_admitted_pair_below_the_threshold(real_returns):
    syms, r = real_returns
    n = len(syms)
    thr = 0.5
    m = RiskManager(RiskConfig(max_positions=30, max_fraction_per_trade=0.02, max_correlation=thr),
                    syms, {s: MarketRules(qty_step=1e-8) for s in syms}, 0.002)  # fmt: skip
    er = np.linspace(0.005, 0.001, n)  # BTC ranked first, then the file order
    c = Candidates(np.arange(n), er, np.full(n, 0.65), np.full(n, 100.0), np.full(n, 0.02),
                   np.full(n, 0.01), np.full(n, 0.004))  # fmt: skip
    d = m.decide(c, Portfolio(100_000.0, 100_000.0), r, NOW)
    taken = np.flatnonzero(d.taken)
    ref = np.corrcoef(r.astype(np.float64))
    assert d.reason[0] == Reason.TAKEN
    assert (d.reason == Reason.CORRELATION).sum() > 0  # real 1m crypto returns are correlated
    for a in taken:
        for b in taken:
            if a != b:
                assert ref[a, b] <= thr
    # every correlation skip has a better-ranked taken symbol above the threshold
    for i in np.flatnonzero(d.reason == Reason.CORRELATION):
        assert any(ref[i, t] > thr for t in taken if t < i)


def test_a_correlation_exactly_at_the_threshold_is_admitted():
    # "exceeds max_correlation" is strict: set the threshold to the very value the filter computes
    r = factor_returns()
    m = manager()
    exact = float(corr_matrix(r[:, -m.cfg.correlation_window:], np.array([1, 0]), m.min_overlap)[1, 0])
    assert 0.95 < exact < 1.0
    at = manager(max_correlation=exact).decide(cands([0, 1], [0.003, 0.004]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert [Reason(x) for x in at.reason] == [Reason.TAKEN, Reason.TAKEN]
    assert at.rows()[0].details["corr"] == exact
    below = manager(max_correlation=np.nextafter(exact, 0.0)).decide(
        cands([0, 1], [0.003, 0.004]), Portfolio(10_000.0, 10_000.0), r, NOW)
    assert below.reason[0] == Reason.CORRELATION


@pytest.mark.parametrize("complete", [True, False])
def test_min_overlap_is_the_smallest_number_of_shared_minutes_that_counts(complete: bool):
    rng = np.random.default_rng(3)
    f = rng.normal(0, 1e-3, 200)
    x = np.stack([f, f + rng.normal(0, 1e-4, 200), rng.normal(0, 1e-3, 200)])
    for n_known, known in ((50, True), (49, False)):
        if complete:  # every value finite, the window itself is the overlap
            y = x[:, -n_known:]
        else:  # the window is longer; the pair shares only its last n_known minutes
            y = x.copy()
            y[1, :-n_known] = np.nan
        got = corr_matrix(y, np.arange(3), 50)
        assert np.isfinite(got[0, 1]) == known, (n_known, got[0, 1])
        assert np.isfinite(got[1, 0]) == known


def test_the_filter_needs_half_its_window_of_shared_history():
    # correlation_window 240 -> min_overlap 120: a symbol known for the last 120 minutes is
    # judged on them (and refused: it follows B), one known for 119 minutes is unknown
    assert manager().min_overlap == 120
    for n_known, want in ((120, Reason.CORRELATION), (119, Reason.CORRELATION_UNKNOWN)):
        r = factor_returns()
        r[0, :-n_known] = np.nan
        d = manager().decide(cands([0, 1], [0.003, 0.004]), Portfolio(10_000.0, 10_000.0), r, NOW)
        assert [Reason(x) for x in d.reason] == [want, Reason.TAKEN], n_known
        assert d.rows()[0].details["corr_with"] == "BUSDT"
