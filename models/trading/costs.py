"""Trading costs: the one place where fees and slippage are applied.

Labels, the validation trading simulator and the paper broker all price a trade through this
module, so a cost assumption cannot differ between what the model was trained on, how it was
judged and how it trades.

Model of a spot round trip (long only):
- buy fill  = price x (1 + slippage); fee = fee_rate x fill notional, paid on top;
- sell fill = price x (1 - slippage); fee = fee_rate x fill notional, taken from the proceeds.
The net return of a trade is relative to the cash it committed (qty x buy fill + buy fee):

    ret_net = sell_fill x (1 - fee) / (buy_fill x (1 + fee)) - 1

which is `exit/entry - 1 - 2 x fee - 2 x slippage` to first order (-0.24 % for a flat trade at
the defaults: 0.1 % fee and 2 bps slippage per side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.config import CostConfig


@dataclass(frozen=True, slots=True)
class Costs:
    """Fee rate and slippage, both as fractions per side."""

    fee_rate: float = 0.001
    slippage: float = 0.0002
    # the entry side's own fee / slippage when it differs (a maker entry: a limit buy at the
    # next bar's open pays the maker fee and no slippage); None = the same as the exit side
    entry_fee_rate: float | None = None
    entry_slippage: float | None = None

    def maker_entry(self, maker_fee_rate: float | None = None) -> Costs:
        """This cost model with a maker entry: limit buy at the next open, assumed always filled
        there (optimistic: ignores missed fills), maker fee (default: the same rate; Binance
        spot's base tier charges 0.1 % to makers and takers alike) and no entry slippage."""
        return Costs(self.fee_rate, self.slippage, self.fee_rate if maker_fee_rate is None else maker_fee_rate, 0.0)

    def _factor(self) -> float:
        fe = self.fee_rate if self.entry_fee_rate is None else self.entry_fee_rate
        se = self.slippage if self.entry_slippage is None else self.entry_slippage
        return (1.0 - self.slippage) * (1.0 - self.fee_rate) / ((1.0 + se) * (1.0 + fe))

    def __post_init__(self) -> None:
        if not (0 <= self.fee_rate < 0.1 and 0 <= self.slippage < 0.1):
            raise ValueError(f"implausible costs: fee_rate={self.fee_rate}, slippage={self.slippage} (fractions per side)")
        for v in (self.entry_fee_rate, self.entry_slippage):
            if v is not None and not 0 <= v < 0.1:
                raise ValueError(f"implausible entry costs: fee_rate={self.entry_fee_rate}, slippage={self.entry_slippage}")

    @classmethod
    def from_config(cls, cfg: CostConfig) -> Costs:
        return cls(fee_rate=float(cfg.fee_rate), slippage=float(cfg.slippage_bps) / 10_000.0)

    def buy_fill(self, price: float | np.ndarray) -> float | np.ndarray:
        """Price actually paid for a market buy at `price` (adverse slippage)."""
        return price * (1.0 + (self.slippage if self.entry_slippage is None else self.entry_slippage))

    def reprice(self, net: float | np.ndarray, other: Costs) -> float | np.ndarray:
        """A net return priced with these costs, priced again with `other` (same price move)."""
        return other.net_return(1.0, 1.0 + np.asarray(self.gross_return(net)))

    def sell_fill(self, price: float | np.ndarray) -> float | np.ndarray:
        """Price actually received for a market sell at `price`."""
        return price * (1.0 - self.slippage)

    def fee(self, notional: float | np.ndarray) -> float | np.ndarray:
        """Fee charged on a fill of this quote notional."""
        return notional * self.fee_rate

    def net_return(self, entry_price: float | np.ndarray, exit_price: float | np.ndarray) -> float | np.ndarray:
        """Net return of a long round trip between two reference prices (see module docstring)."""
        gross = np.asarray(exit_price, dtype=np.float64) / np.asarray(entry_price, dtype=np.float64)
        out = gross * self._factor() - 1.0
        return float(out) if np.ndim(out) == 0 else out

    def gross_return(self, net: float | np.ndarray) -> float | np.ndarray:
        """The price return (exit/entry - 1) behind a net return priced by `net_return`."""
        out = (1.0 + np.asarray(net, dtype=np.float64)) / self._factor() - 1.0
        return float(out) if np.ndim(out) == 0 else out

    def pnl(self, qty: float, entry_price: float, exit_price: float) -> float:
        """Quote-currency profit of buying `qty` at `entry_price` and selling at `exit_price`, all costs in."""
        cost = qty * self.buy_fill(entry_price)
        cost += cost * (self.fee_rate if self.entry_fee_rate is None else self.entry_fee_rate)
        proceeds = qty * self.sell_fill(exit_price)
        proceeds -= self.fee(proceeds)
        return float(proceeds - cost)

    @property
    def round_trip(self) -> float:
        """Cost of a trade that exits at its entry price, as a positive fraction."""
        return -float(self.net_return(1.0, 1.0))
