"""Triple-barrier labels on hand-made candles, plus a brute-force reference on random paths."""

from __future__ import annotations

import numpy as np
import pytest

from models.candles import Candles
from models.config import CostConfig, LabelConfig
from models.labels.triple_barrier import (
    EXIT_GAP_TIMEOUT,
    EXIT_NONE,
    EXIT_SL,
    EXIT_TIMEOUT,
    EXIT_TP,
    barrier_multipliers,
    triple_barrier,
)
from models.timeutil import MINUTE_MS
from models.trading.costs import Costs

T0 = 1_617_321_600_000  # 2021-04-02 00:00 UTC
FREE = Costs(0.0, 0.0)
CFG = LabelConfig(horizon_bars=5)  # mid vol: k_tp = 1.5, k_sl = 1.2


def bars(rows: list[tuple[float, float, float, float]], ts: list[int] | None = None) -> Candles:
    """Candles from (open, high, low, close) rows, one minute apart unless `ts` is given."""
    a = np.asarray(rows, dtype=np.float64)
    t = np.asarray(ts if ts is not None else [T0 + i * MINUTE_MS for i in range(len(rows))], dtype=np.int64)
    return Candles(t, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(len(rows)))


def label(c: Candles, atr: float = 0.01, pct: float = 50.0, cfg: LabelConfig = CFG, costs: Costs = FREE):
    n = len(c)
    return triple_barrier(c, np.full(n, atr), np.full(n, pct), cfg, costs)


FLAT = (100.0, 100.1, 99.9, 100.0)


def test_take_profit_first() -> None:
    # decide at bar 0, enter at bar 1's open = 100; TP = 101.5, SL = 98.8
    c = bars([FLAT, FLAT, (100.0, 101.6, 99.5, 101.0), *[FLAT] * 5])
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_TP
    assert lab.y[0] == 1.0
    assert lab.ret_net[0] == pytest.approx(0.015, abs=1e-6)
    assert lab.hold[0] == 2.0  # bars 1 and 2
    assert lab.exit_offset[0] == 2
    assert lab.mae[0] == pytest.approx(0.005, abs=1e-6)  # low 99.5 on the TP bar counts


def test_stop_loss_first() -> None:
    c = bars([FLAT, FLAT, (100.0, 100.5, 98.0, 98.5), (98.5, 103.0, 98.4, 102.0), *[FLAT] * 5])
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_SL
    assert lab.y[0] == 0.0
    assert lab.ret_net[0] == pytest.approx(-0.012, abs=1e-6)
    assert lab.mae[0] == pytest.approx(0.012, abs=1e-6)  # capped at the stop fill, not the bar low
    assert lab.hold[0] == 2.0


def test_both_barriers_in_one_bar_assumes_stop_first() -> None:
    c = bars([FLAT, FLAT, (100.0, 102.0, 98.0, 101.0), *[FLAT] * 5])
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_SL
    assert lab.ret_net[0] == pytest.approx(-0.012, abs=1e-6)


def test_timeout_exits_at_the_close_of_the_last_bar() -> None:
    c = bars([FLAT, FLAT, FLAT, FLAT, FLAT, (100.0, 100.5, 99.6, 100.3), (100.3, 200.0, 50.0, 100.0)])
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_TIMEOUT
    assert lab.ret_net[0] == pytest.approx(0.003, abs=1e-6)
    assert lab.hold[0] == 5.0
    assert lab.exit_offset[0] == 5  # bar 5 is the 5th bar of the hold; bar 6 is never seen
    assert lab.mae[0] == pytest.approx(0.004, abs=1e-6)


def test_fees_and_slippage_both_sides() -> None:
    costs = Costs.from_config(CostConfig(fee_rate=0.001, slippage_bps=2.0))
    c = bars([FLAT, FLAT, (100.0, 101.6, 99.5, 101.0), *[FLAT] * 5])
    lab = label(c, costs=costs)
    expected = 101.5 * (1 - 0.0002) * (1 - 0.001) / (100.0 * (1 + 0.0002) * (1 + 0.001)) - 1
    assert lab.ret_net[0] == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.015 - 0.0024, abs=1e-4)  # first-order: 2 x (fee + slippage)
    flat = bars([FLAT] * 10)
    assert label(flat, costs=costs).ret_net[0] == pytest.approx(-costs.round_trip, rel=1e-6)
    assert costs.round_trip == pytest.approx(0.0024, abs=2e-5)


def test_gap_through_the_stop_fills_at_the_open() -> None:
    c = bars([FLAT, FLAT, (97.0, 97.5, 96.5, 97.2), *[FLAT] * 5])
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_SL
    assert lab.ret_net[0] == pytest.approx(-0.03, abs=1e-6)  # worse than the -1.2 % stop
    assert lab.hold[0] == 1.0  # sold at bar 2's open: one minute held


def test_dynamic_barriers_follow_the_atr_percentile() -> None:
    k_tp, k_sl = barrier_multipliers(np.array([90.0, 50.0, 10.0, np.nan]), LabelConfig(base_k_tp=1.5))
    np.testing.assert_allclose(k_tp[:3], [2.25, 1.5, 1.2])
    np.testing.assert_allclose(k_sl[:3], [1.5, 1.2, 0.9])
    assert np.isnan(k_tp[3]) and np.isnan(k_sl[3])
    # high vol: TP at +2.25 % is not reached by a 1.6 % move, which would be a TP at mid vol
    c = bars([FLAT, FLAT, (100.0, 101.6, 99.5, 101.0), *[FLAT] * 5])
    assert label(c, pct=90.0).exit_kind[0] == EXIT_TIMEOUT
    assert label(c, pct=50.0).exit_kind[0] == EXIT_TP
    assert label(c, pct=np.nan).exit_kind[0] == EXIT_NONE


def test_no_label_when_the_next_minute_is_missing() -> None:
    ts = [T0, T0 + 3 * MINUTE_MS] + [T0 + (4 + i) * MINUTE_MS for i in range(8)]
    lab = label(bars([FLAT] * 10, ts))
    assert lab.exit_kind[0] == EXIT_NONE and np.isnan(lab.ret_net[0])
    assert lab.exit_kind[1] == EXIT_TIMEOUT


def test_outage_during_the_hold() -> None:
    # decide at 0, enter at 1; bars 2..9 missing; horizon (5 min) ends inside the outage:
    # sell at the open of the first bar after it
    ts = [T0, T0 + MINUTE_MS, T0 + 10 * MINUTE_MS, T0 + 11 * MINUTE_MS]
    c = bars([FLAT, FLAT, (100.7, 101.0, 100.2, 100.9), FLAT], ts)
    lab = label(c)
    assert lab.exit_kind[0] == EXIT_GAP_TIMEOUT
    assert lab.ret_net[0] == pytest.approx(0.007, abs=1e-6)
    assert lab.hold[0] == 9.0
    assert lab.resolved_ts[0] == T0 + 10 * MINUTE_MS
    # the same outage with a gap through the stop: stopped at the reopen price
    c2 = bars([FLAT, FLAT, (95.0, 96.0, 94.0, 95.5), FLAT, FLAT], [T0 + k * MINUTE_MS for k in (0, 1, 3, 4, 5)])
    lab2 = label(c2)
    assert lab2.exit_kind[0] == EXIT_SL and lab2.ret_net[0] == pytest.approx(-0.05, abs=1e-6)


def test_no_label_when_the_horizon_runs_past_the_end() -> None:
    # bar 2 hits TP, but the 5-minute horizon of row 0 needs bars up to row 5: only 5 rows exist
    c = bars([FLAT, FLAT, (100.0, 101.6, 99.5, 101.0), FLAT, FLAT])
    lab = label(c)
    assert not lab.valid.any()
    c6 = bars([FLAT, FLAT, (100.0, 101.6, 99.5, 101.0), FLAT, FLAT, FLAT])
    lab6 = label(c6)
    assert lab6.valid[0] and not lab6.valid[1:].any()


# --- brute force reference ---------------------------------------------------------------


def reference(c: Candles, atr: np.ndarray, pct: np.ndarray, cfg: LabelConfig, costs: Costs) -> list:
    """Row-by-row implementation of the documented rules, independent of the vectorised one."""
    out = []
    n = len(c)
    for i in range(n):
        deadline = c.ts[i] + cfg.horizon_bars * MINUTE_MS
        if i + 1 >= n or c.ts[i + 1] != c.ts[i] + MINUTE_MS or np.isnan(pct[i]) or not c.ts[-1] >= deadline:
            out.append(None)
            continue
        if pct[i] > cfg.high_vol_pct:
            k_tp, k_sl = cfg.base_k_tp * 1.5, cfg.base_k_tp * 1.0
        elif pct[i] < cfg.low_vol_pct:
            k_tp, k_sl = cfg.base_k_tp * 0.8, cfg.base_k_tp * 0.6
        else:
            k_tp, k_sl = cfg.base_k_tp, cfg.base_k_tp * 0.8
        entry = c.open[i + 1]
        tp, sl = entry * (1 + k_tp * atr[i]), entry * (1 - k_sl * atr[i])
        worst = entry
        result = None
        j = i + 1
        while j < n:
            if c.ts[j] > deadline:  # horizon ended in an outage: out at this bar's open
                worst = min(worst, c.open[j])
                result = ("gap_timeout", c.open[j], c.ts[j] - c.ts[i + 1])
                break
            if c.open[j] <= sl:
                worst = min(worst, c.open[j])
                result = ("sl", c.open[j], c.ts[j] - c.ts[i + 1])
                break
            if c.open[j] >= tp:
                worst = min(worst, c.open[j])
                result = ("tp", c.open[j], c.ts[j] - c.ts[i + 1])
                break
            if c.low[j] <= sl:
                worst = min(worst, sl)
                result = ("sl", sl, c.ts[j] - c.ts[i + 1] + MINUTE_MS)
                break
            worst = min(worst, c.low[j])
            if c.high[j] >= tp:
                result = ("tp", tp, c.ts[j] - c.ts[i + 1] + MINUTE_MS)
                break
            if c.ts[j] == deadline:
                result = ("timeout", c.close[j], c.ts[j] - c.ts[i + 1] + MINUTE_MS)
                break
            j += 1
        kind, px, held = result
        out.append((kind, costs.net_return(entry, px), 1.0 - worst / entry, held / MINUTE_MS))
    return out


def random_walk(n: int, seed: int, gaps: bool) -> Candles:
    rng = np.random.default_rng(seed)
    steps = np.ones(n, dtype=np.int64)
    if gaps:
        steps[rng.choice(np.arange(1, n), size=max(1, n // 40), replace=False)] = rng.integers(2, 30, size=max(1, n // 40))
    ts = T0 + np.cumsum(steps) * MINUTE_MS
    ret = rng.standard_t(3, size=n) * 0.003
    close = 100 * np.exp(np.cumsum(ret))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.001, n) * gaps)
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.002, n)))
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.002, n)))
    return Candles(ts, open_, hi, lo, close, np.ones(n))


@pytest.mark.parametrize("seed,gaps,horizon,k,chunk", [
    (1, False, 12, 1.5, 65_536), (2, True, 12, 1.5, 65_536), (3, True, 12, 1.5, 65_536),
    # long horizons with wide barriers (many time-outs), and tiny chunks: the sparse tables of
    # one chunk must reach H rows past it
    (4, True, 240, 6.0, 37), (5, False, 1440, 40.0, 500), (6, True, 97, 8.0, 1),
])  # fmt: skip
def test_vectorised_labels_match_the_row_by_row_reference(seed: int, gaps: bool, horizon: int, k: float, chunk: int) -> None:
    c = random_walk(400 if horizon < 100 else 3000, seed, gaps)
    rng = np.random.default_rng(seed + 100)
    atr = rng.uniform(0.002, 0.006, len(c))
    pct = rng.uniform(0, 100, len(c))
    pct[rng.random(len(c)) < 0.05] = np.nan
    cfg = LabelConfig(horizon_bars=horizon, base_k_tp=k)
    costs = Costs(0.001, 0.0002)
    lab = triple_barrier(c, atr, pct, cfg, costs, chunk=chunk)
    ref = reference(c, atr, pct, cfg, costs)
    kinds = {"tp": EXIT_TP, "sl": EXIT_SL, "timeout": EXIT_TIMEOUT, "gap_timeout": EXIT_GAP_TIMEOUT}
    seen = set()
    for i, r in enumerate(ref):
        if r is None:
            assert lab.exit_kind[i] == EXIT_NONE, i
            continue
        kind, ret, mae, held = r
        seen.add(kind)
        assert lab.exit_kind[i] == kinds[kind], (i, kind, lab.exit_kind[i])
        assert lab.ret_net[i] == pytest.approx(ret, rel=1e-5, abs=1e-7), i
        assert lab.mae[i] == pytest.approx(mae, rel=1e-5, abs=1e-7), i
        assert lab.hold[i] == held, i
        assert lab.y[i] == (kind == "tp")
    assert {"tp", "sl", "timeout"} <= seen
    if gaps:
        assert "gap_timeout" in seen


def test_known_before_equals_labels_on_truncated_data() -> None:
    c = random_walk(600, 7, gaps=True)
    rng = np.random.default_rng(8)
    atr = rng.uniform(0.002, 0.006, len(c))
    pct = rng.uniform(0, 100, len(c))
    cfg = LabelConfig(horizon_bars=15)
    full = triple_barrier(c, atr, pct, cfg, FREE)
    for cut in (200, 377, 599):
        end = int(c.ts[cut])
        part = triple_barrier(c.slice(0, cut), atr[:cut], pct[:cut], cfg, FREE)
        keep = full.known_before(end)[:cut]
        np.testing.assert_array_equal(keep, part.valid)
        np.testing.assert_array_equal(full.ret_net[:cut][keep], part.ret_net[part.valid])
        np.testing.assert_array_equal(full.exit_offset[:cut][keep], part.exit_offset[part.valid])
        assert keep.sum() > cut // 2 and not keep[cut - 5 :].any()  # non-trivial, and the tail is cut
