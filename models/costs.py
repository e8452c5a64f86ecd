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

    def __post_init__(self) -> None:
        if not (0 <= self.fee_rate < 0.1 and 0 <= self.slippage < 0.1):
            raise ValueError(f"implausible costs: fee_rate={self.fee_rate}, slippage={self.slippage} (fractions per side)")

    @classmethod
    def from_config(cls, cfg: CostConfig) -> Costs:
        return cls(fee_rate=float(cfg.fee_rate), slippage=float(cfg.slippage_bps) / 10_000.0)

    def buy_fill(self, price: float | np.ndarray) -> float | np.ndarray:
        """Price actually paid for a market buy at `price` (adverse slippage)."""
        return price * (1.0 + self.slippage)

    def sell_fill(self, price: float | np.ndarray) -> float | np.ndarray:
        """Price actually received for a market sell at `price`."""
        return price * (1.0 - self.slippage)

    def fee(self, notional: float | np.ndarray) -> float | np.ndarray:
        """Fee charged on a fill of this quote notional."""
        return notional * self.fee_rate

    def net_return(self, entry_price: float | np.ndarray, exit_price: float | np.ndarray) -> float | np.ndarray:
        """Net return of a long round trip between two reference prices (see module docstring)."""
        gross = np.asarray(exit_price, dtype=np.float64) / np.asarray(entry_price, dtype=np.float64)
        out = gross * ((1.0 - self.slippage) * (1.0 - self.fee_rate) / ((1.0 + self.slippage) * (1.0 + self.fee_rate))) - 1.0
        return float(out) if np.ndim(out) == 0 else out

    def gross_return(self, net: float | np.ndarray) -> float | np.ndarray:
        """The price return (exit/entry - 1) behind a net return priced by `net_return`."""
        factor = (1.0 - self.slippage) * (1.0 - self.fee_rate) / ((1.0 + self.slippage) * (1.0 + self.fee_rate))
        out = (1.0 + np.asarray(net, dtype=np.float64)) / factor - 1.0
        return float(out) if np.ndim(out) == 0 else out

    def pnl(self, qty: float, entry_price: float, exit_price: float) -> float:
        """Quote-currency profit of buying `qty` at `entry_price` and selling at `exit_price`, all costs in."""
        cost = qty * self.buy_fill(entry_price)
        cost += self.fee(cost)
        proceeds = qty * self.sell_fill(exit_price)
        proceeds -= self.fee(proceeds)
        return float(proceeds - cost)

    @property
    def round_trip(self) -> float:
        """Cost of a trade that exits at its entry price, as a positive fraction."""
        return -float(self.net_return(1.0, 1.0))
