"""What the engine hands to a risk decision: this bar's candidates and the portfolio.

Candidates are parallel arrays (one entry per candidate symbol), so the sizing rules run
vectorised; the portfolio is a handful of open positions, kept as plain frozen dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from risk.errors import RiskInputError

_FIELDS = ("er", "p", "price", "tp_frac", "sl_frac", "atr_frac")


@dataclass(frozen=True, slots=True)
class Candidates:
    """Entry candidates of one bar, as arrays of equal length N.

    - `symbol_idx`: row of each candidate in the risk manager's symbol universe (and in the
      `returns` matrix); each symbol at most once.
    - `er`: expected net return of the trade (fraction, e.g. 0.002); the ranking key.
    - `p`: meta-label probability that the trade wins.
    - `price`: the entry price the order will be sized at.
    - `tp_frac`, `sl_frac`: triple-barrier take-profit / stop-loss distances as fractions of price.
    - `atr_frac`: ATR as a fraction of price (floors the stop distance used for sizing).
    - `payoff`: optional win/loss ratio b from validation statistics; NaN entries (or None) fall
      back to the barrier payoff (tp - costs) / (sl + costs).
    """

    symbol_idx: np.ndarray
    er: np.ndarray
    p: np.ndarray
    price: np.ndarray
    tp_frac: np.ndarray
    sl_frac: np.ndarray
    atr_frac: np.ndarray
    payoff: np.ndarray | None = None

    def __post_init__(self) -> None:
        idx = np.asarray(self.symbol_idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise RiskInputError(f"Candidates.symbol_idx must be a 1-d integer array, got {idx.dtype} {idx.shape}")
        object.__setattr__(self, "symbol_idx", idx.astype(np.int64, copy=False))
        n = idx.shape[0]
        for f in _FIELDS:
            a = np.asarray(getattr(self, f), dtype=np.float64)
            if a.shape != (n,):
                raise RiskInputError(f"Candidates.{f} has shape {a.shape}, expected ({n},) like symbol_idx")
            object.__setattr__(self, f, a)
        if self.payoff is not None:
            a = np.asarray(self.payoff, dtype=np.float64)
            if a.shape != (n,):
                raise RiskInputError(f"Candidates.payoff has shape {a.shape}, expected ({n},)")
            object.__setattr__(self, "payoff", a)

    def __len__(self) -> int:
        return int(self.symbol_idx.shape[0])

    @staticmethod
    def empty() -> Candidates:
        z = np.empty(0)
        return Candidates(np.empty(0, np.int64), z, z, z, z, z, z)


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """A held spot position. `price` is the current mark price."""

    symbol: str
    qty: float
    entry_price: float
    price: float

    @property
    def notional(self) -> float:
        return self.qty * self.price


@dataclass(frozen=True, slots=True)
class Portfolio:
    """Account state at decision time: equity = cash + marked value of the positions."""

    equity: float
    cash: float
    positions: tuple[OpenPosition, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.equity) and self.equity >= 0):
            raise RiskInputError(f"Portfolio.equity must be a finite number >= 0, got {self.equity!r}")
        if not (math.isfinite(self.cash) and self.cash >= 0):
            raise RiskInputError(f"Portfolio.cash must be a finite number >= 0, got {self.cash!r}")
        object.__setattr__(self, "positions", tuple(self.positions))
        seen: set[str] = set()
        for pos in self.positions:
            if pos.symbol in seen:
                raise RiskInputError(f"Portfolio has two open positions in {pos.symbol}; expected one per symbol")
            seen.add(pos.symbol)
            if not (math.isfinite(pos.notional) and pos.qty >= 0 and pos.price > 0):
                raise RiskInputError(f"position {pos.symbol}: qty and price must be finite, qty >= 0, price > 0")

    @property
    def gross_exposure(self) -> float:
        return float(sum(p.notional for p in self.positions))
