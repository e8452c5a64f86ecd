"""The result of a risk decision: arrays for the engine, one row per candidate for the logs.

`DecisionBatch` keeps every number as an array aligned with the candidates, so deciding costs no
per-candidate objects; `DecisionBatch.rows()` builds the per-candidate `Decision` records (with a
JSON-safe `details` dict) only when the daemon logs or persists them (`decisions` table: action,
reason, er, probability, size_fraction, details).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from risk.reasons import PROTECTION_REASONS, Reason

#: Which cap set the size (index into BINDING_LABELS).
BINDING_LABELS: tuple[str, ...] = ("kelly", "risk", "symbol_cap", "market_max", "exposure", "cash")
B_KELLY, B_RISK, B_SYMBOL, B_MARKET, B_EXPOSURE, B_CASH = range(6)


@dataclass(frozen=True, slots=True)
class Decision:
    """One candidate's decision, ready to log and to insert into the `decisions` table."""

    symbol: str
    action: Literal["enter", "skip"]
    reason: Reason
    er: float
    probability: float
    size_fraction: float  # notional / equity; 0 when skipped
    qty: float
    notional: float
    price: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def taken(self) -> bool:
        return self.action == "enter"

    def log_fields(self) -> dict[str, Any]:
        """Key-values for `log.info("risk_decision", **d.log_fields())`."""
        return {
            "symbol": self.symbol, "action": self.action, "reason": self.reason.label, "er": self.er,
            "p": self.probability, "size_fraction": self.size_fraction, "qty": self.qty,
            "price": self.price, **self.details,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecisionBatch:
    """All candidates of one bar. Arrays have one entry per candidate, in the candidates' order.

    Monetary arrays are in quote currency. Caps that were not reached (a candidate skipped before
    sizing) are NaN. `kill_switch` names the active trip ("daily_loss" / "max_drawdown") or is
    None; `flatten` tells the caller to close every open position now; `kill_switch_event` is set
    on the bar where the switch tripped or reset.
    """

    now_ms: int
    equity: float
    symbols: tuple[str, ...]
    reason: np.ndarray  # int8 Reason codes
    er: np.ndarray
    p: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    notional: np.ndarray
    payoff: np.ndarray
    kelly_raw: np.ndarray  # multiplier x (p - (1-p)/b), before the max_fraction cap
    cap_kelly: np.ndarray
    cap_risk: np.ndarray
    cap_symbol: np.ndarray
    cap_market: np.ndarray
    cap_exposure: np.ndarray  # gross exposure budget left when this candidate was sized
    cap_cash: np.ndarray  # cash left (net of entry costs) when this candidate was sized
    binding: np.ndarray  # int8 index into BINDING_LABELS, -1 if not sized
    corr: np.ndarray  # correlation that decided a CORRELATION skip, else the highest one checked
    corr_with: Sequence[str | None]
    cooldown_until_ms: np.ndarray
    blocked_until_ms: np.ndarray | None = None  # end of the protection block behind a protection skip, else 0
    kill_switch: str | None = None
    kill_switch_event: str | None = None
    flatten: bool = False

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def taken(self) -> np.ndarray:
        """Boolean mask of the candidates to enter."""
        return self.reason == Reason.TAKEN

    @property
    def size_fraction(self) -> np.ndarray:
        return self.notional / self.equity if self.equity > 0 else np.zeros_like(self.notional)

    def rows(self) -> list[Decision]:
        """One `Decision` per candidate, in the candidates' order."""
        return [self.row(i) for i in range(len(self))]

    def row(self, i: int) -> Decision:
        r = Reason(int(self.reason[i]))
        b = int(self.binding[i])
        details: dict[str, Any] = {
            "payoff": _f(self.payoff[i]),
            "kelly_raw": _f(self.kelly_raw[i]),
            "caps": {
                "kelly": _f(self.cap_kelly[i]), "risk": _f(self.cap_risk[i]),
                "symbol": _f(self.cap_symbol[i]), "market": _f(self.cap_market[i]),
                "exposure": _f(self.cap_exposure[i]), "cash": _f(self.cap_cash[i]),
            },
            "binding": BINDING_LABELS[b] if b >= 0 else None,
            "corr": _f(self.corr[i]),
            "corr_with": self.corr_with[i],
        }  # fmt: skip
        if r == Reason.KILL_SWITCH:
            details["kill_switch"] = self.kill_switch
        if self.cooldown_until_ms[i] > 0:
            details["cooldown_until_ms"] = int(self.cooldown_until_ms[i])
        if r in PROTECTION_REASONS and self.blocked_until_ms is not None:
            details["blocked_until_ms"] = int(self.blocked_until_ms[i])
        notional = float(self.notional[i])
        return Decision(
            symbol=self.symbols[i],
            action="enter" if r == Reason.TAKEN else "skip",
            reason=r,
            er=float(self.er[i]),
            probability=float(self.p[i]),
            size_fraction=notional / self.equity if self.equity > 0 else 0.0,
            qty=float(self.qty[i]),
            notional=notional,
            price=float(self.price[i]),
            details=details,
        )


def _f(v: Any) -> float | None:
    """JSON-safe float: NaN and infinities (a cap that does not apply) become None."""
    v = float(v)
    return v if math.isfinite(v) else None
