"""Position sizing formulas, vectorised over the candidates of one bar.

All sizes are notionals in quote currency (USDT) unless the name says `qty`. These functions hold
the formulas only; `risk.manager` applies them in order with the limits.
"""

from __future__ import annotations

import math

import numpy as np


def payoff_ratio(tp_frac: np.ndarray, sl_frac: np.ndarray, round_trip_cost: float) -> np.ndarray:
    """b = net win / net loss of a trade that exits at a barrier: (tp - cost) / (sl + cost).

    Costs (fees + slippage, both sides) shrink the win and deepen the loss; b <= 0 means even a
    take-profit loses money after costs.
    """
    return (tp_frac - round_trip_cost) / (sl_frac + round_trip_cost)


def kelly_fraction(p: np.ndarray, b: np.ndarray, multiplier: float) -> np.ndarray:
    """multiplier * (p - (1 - p) / b), the Kelly bet for win probability p and payoff ratio b.

    Returns NaN where b <= 0 (no edge is possible); callers treat NaN and values <= 0 as no trade.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        f = multiplier * (p - (1.0 - p) / b)
    return np.where(b > 0, f, np.nan)


def stop_distance(sl_frac: np.ndarray, atr_frac: np.ndarray, atr_floor: float,
                  round_trip_cost: float) -> np.ndarray:
    """Loss per unit notional if the stop is hit: max(SL, atr_floor x ATR) + round-trip costs."""
    return np.maximum(sl_frac, atr_floor * atr_frac) + round_trip_cost


def risk_notional(equity: float, risk_per_trade: float, stop_dist: np.ndarray) -> np.ndarray:
    """Notional whose loss at the stop is exactly risk_per_trade x equity."""
    return risk_per_trade * equity / stop_dist


def round_qty_down(notional: float, price: float, step: float, decimals: int) -> float:
    """The largest whole multiple of `step` whose value at `price` does not exceed `notional`.

    Rounded to the step's decimals so it prints cleanly (0.3, not 0.30000000000000004), and then
    checked again so that float rounding can never push the value above `notional`.
    """
    if not notional > 0:
        return 0.0
    # The ratio can land a hair under a whole number (0.3 / 0.1 = 2.9999999999999996); nudge it
    # up by far more than float error and let the check below take back a step that is too many.
    k = math.floor(notional / price / step * (1 + 1e-12))
    while k > 0:
        qty = round(k * step, decimals)
        if qty * price <= notional:
            return qty
        k -= 1
    return 0.0
