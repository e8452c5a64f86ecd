"""Per-symbol exchange constraints on order size (lot step, minimum quantity and order value).

`MarketRules` is what the bot fills from a ccxt market once at start (`MarketRules.from_ccxt`);
`MarketRulesTable` lays a universe of them out as numpy arrays so that a decision over 30
candidates reads them without a Python loop. Importing ccxt here is avoided on purpose (it is
slow to import and `risk` does no I/O); the precision-mode constants are copied and a test checks
them against ccxt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from risk.errors import RiskInputError

# ccxt.base.decimal_to_precision constants (checked against ccxt in tests/unit/risk/test_market.py)
DECIMAL_PLACES = 2
SIGNIFICANT_DIGITS = 3
TICK_SIZE = 4


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Order size constraints of one spot market, in base units (qty) and quote units (notional).

    `qty_step` is the lot size: an order quantity must be a whole multiple of it. `max_qty` and
    `max_notional` are None when the exchange sets no upper bound.
    """

    qty_step: float
    min_qty: float = 0.0
    min_notional: float = 0.0
    max_qty: float | None = None
    max_notional: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.qty_step) and self.qty_step > 0):
            raise RiskInputError(f"MarketRules.qty_step must be a positive number, got {self.qty_step!r}")
        for name in ("min_qty", "min_notional"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise RiskInputError(f"MarketRules.{name} must be >= 0, got {v!r}")
        for name in ("max_qty", "max_notional"):
            v = getattr(self, name)
            if v is not None and not (v > 0):
                raise RiskInputError(f"MarketRules.{name} must be > 0 or None, got {v!r}")

    @property
    def qty_decimals(self) -> int:
        """Decimal places of the lot step (0.001 -> 3), for printing quantities without float noise."""
        exp = Decimal(repr(self.qty_step)).normalize().as_tuple().exponent
        return max(0, -int(exp))

    @classmethod
    def from_ccxt(cls, market: Mapping[str, Any], precision_mode: int = TICK_SIZE) -> MarketRules:
        """Build from a ccxt unified market (`exchange.markets[symbol]`) and `exchange.precisionMode`.

        Uses `precision.amount` as the lot step (a step in TICK_SIZE mode, a number of decimals in
        DECIMAL_PLACES mode), `limits.amount` and `limits.cost`, and, where the exchange reports a
        separate limit for market orders (Binance's MARKET_LOT_SIZE as `limits.market`), the
        stricter of the two, since the bot's entries are market orders.
        """
        symbol = market.get("symbol", "?")
        amount = (market.get("precision") or {}).get("amount")
        if amount is None:
            raise RiskInputError(f"market {symbol}: precision.amount is missing; cannot round quantities")
        if precision_mode == TICK_SIZE:
            step = float(amount)
        elif precision_mode == DECIMAL_PLACES:
            step = 10.0 ** (-int(amount))
        else:
            raise RiskInputError(
                f"market {symbol}: precision mode {precision_mode} is not supported "
                f"(only TICK_SIZE={TICK_SIZE} and DECIMAL_PLACES={DECIMAL_PLACES})"
            )
        limits = market.get("limits") or {}
        amt = limits.get("amount") or {}
        cost = limits.get("cost") or {}
        mkt = limits.get("market") or {}
        min_qty = max(_num(amt.get("min")) or 0.0, _num(mkt.get("min")) or 0.0)
        max_qty = _min_positive(_num(amt.get("max")), _num(mkt.get("max")))
        return cls(
            qty_step=step,
            min_qty=min_qty,
            min_notional=_num(cost.get("min")) or 0.0,
            max_qty=max_qty,
            max_notional=_min_positive(_num(cost.get("max"))),
        )


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _min_positive(*vals: float | None) -> float | None:
    """The smallest of the given upper bounds; None/0 mean "no bound" (Binance reports 0 for unset)."""
    good = [v for v in vals if v is not None and v > 0 and math.isfinite(v)]
    return min(good) if good else None


class MarketRulesTable:
    """`MarketRules` of a symbol universe as arrays aligned with it; missing symbols have step NaN."""

    __slots__ = ("symbols", "qty_step", "min_qty", "min_notional", "max_qty", "max_notional",
                 "qty_decimals", "known")  # fmt: skip

    def __init__(self, symbols: Sequence[str], rules: Mapping[str, MarketRules]):
        n = len(symbols)
        self.symbols = tuple(symbols)
        self.qty_step = np.full(n, np.nan)
        self.min_qty = np.zeros(n)
        self.min_notional = np.zeros(n)
        self.max_qty = np.full(n, np.inf)
        self.max_notional = np.full(n, np.inf)
        self.qty_decimals = np.zeros(n, np.int64)
        for i, s in enumerate(self.symbols):
            r = rules.get(s)
            if r is None:
                continue
            self.qty_step[i] = r.qty_step
            self.min_qty[i] = r.min_qty
            self.min_notional[i] = r.min_notional
            self.max_qty[i] = np.inf if r.max_qty is None else r.max_qty
            self.max_notional[i] = np.inf if r.max_notional is None else r.max_notional
            self.qty_decimals[i] = r.qty_decimals
        self.known = np.isfinite(self.qty_step)
