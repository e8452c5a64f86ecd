"""The values the engine exchanges with its adapters (brokers, store, reports, logs).

Plain frozen dataclasses, JSON-able through `dataclasses.asdict`: the engine returns them from
each step, the store persists them (orders, fills, positions, decisions, equity_snapshots), the
backtest report reads them, the human log lines are made from them. Times are UTC epoch ms
(`models.timeutil`), money is in the quote currency (USDT), returns are fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["buy", "sell"]
Leg = Literal["entry", "exit"]

#: Exit reasons, as written to `positions.exit_reason`, trades.csv and the log lines. The first
#: four are the label's barriers (`models.labels.triple_barrier`); the others are the engine's own
#: ("reconciled": live mode, the exchange held less than the position, `Engine.cut_position`;
#: "flatten" / "force_exit": the kill switch or the operator, `Engine.close_out`).
EXIT_REASONS = ("tp", "sl", "timeout", "gap_timeout", "flatten", "end_of_data", "reconciled", "force_exit")


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order the engine wants sent. `client_order_id` is deterministic (bundle version,
    symbol, decision minute, leg), so the same decision can never become two orders."""

    client_order_id: str
    symbol: str
    side: Side
    leg: Leg
    qty: float
    decision_ts: int  # open time of the closed minute whose close triggered the decision
    ref_price: float  # the price it was sized at (entry) or the barrier / close that triggered it (exit)
    reason: str  # "signal" for entries, one of EXIT_REASONS for exits
    order_type: Literal["market", "limit"] = "market"
    limit_price: float | None = None
    model_version: str | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution the broker reports back (paper: simulated through `models.trading.costs`)."""

    client_order_id: str
    trade_id: str
    symbol: str
    side: Side
    qty: float
    price: float  # the fill price, slippage included
    fee: float  # quote currency
    ts: int
    ref_price: float = float("nan")  # the price before slippage (paper: the open / the barrier)


@dataclass(frozen=True, slots=True)
class Position:
    """An open long spot position with the barriers it was opened with (they never change)."""

    symbol: str
    qty: float
    entry_price: float  # fill price
    entry_ts: int
    entry_fee: float
    tp_price: float
    sl_price: float
    expires_ts: int  # open time of the last bar of the hold; the trade times out at its close
    decision_ts: int
    client_order_id: str
    model_version: str | None = None
    er: float = float("nan")
    p: float = float("nan")
    entry_ref_price: float = float("nan")  # entry price before slippage (the barriers are set from it)


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A round trip. `ret` is net of all costs relative to the cash committed (as
    `models.trading.costs.Costs.net_return`); `pnl` is in quote currency."""

    symbol: str
    decision_ts: int
    entry_ts: int
    exit_ts: int
    qty: float
    entry_price: float
    exit_price: float
    fees: float
    pnl: float
    ret: float
    exit_reason: str
    er: float = float("nan")
    p: float = float("nan")
    model_version: str | None = None
    entry_ref_price: float = float("nan")  # prices before slippage: ret == Costs.net_return(entry_ref, exit_ref)
    exit_ref_price: float = float("nan")


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One row of the `decisions` table: an entry candidate admitted or skipped, or an exit."""

    ts: int
    symbol: str
    action: str  # "enter" | "skip" | "exit"
    reason: str  # risk.Reason label, an engine skip code, or an exit reason
    er: float | None = None
    probability: float | None = None
    size_fraction: float | None = None
    model_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account state after a step (the `equity_snapshots` table)."""

    ts: int
    equity: float
    cash: float
    gross_exposure: float
    open_positions: int
