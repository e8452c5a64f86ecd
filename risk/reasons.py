"""Stable reason codes of risk decisions.

The integer values are persisted (numpy arrays in memory) and the lowercase names are written to
the `decisions.reason` column, the logs and the backtest report's skip counts, so neither may
ever be renumbered or renamed: add new codes at the end. The order in which the checks run (the
first failure wins) is `PRECEDENCE`, not the numbering.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """Why a candidate was taken or skipped (checks run in the order of `PRECEDENCE`)."""

    TAKEN = 0
    INVALID_INPUT = 1  # NaN/inf or non-positive price, TP, SL; p outside [0, 1]
    NO_MARKET_RULES = 2  # no lot size / min notional known for the symbol
    KILL_SWITCH = 3  # daily loss or drawdown kill switch is active
    POSITION_OPEN = 4  # one position per symbol at a time
    COOLDOWN = 5  # recent stop-loss in this symbol
    NON_POSITIVE_ER = 6  # expected net return <= 0
    LOW_PROBABILITY = 7  # meta probability below risk.min_probability
    KELLY_NON_POSITIVE = 8  # no edge at this payoff ratio: Kelly fraction <= 0
    MAX_POSITIONS = 9
    ORDER_RATE = 10  # risk.max_orders_per_minute reached
    CORRELATION = 11  # too correlated with an open position or a better candidate taken
    CORRELATION_UNKNOWN = 12  # not enough return history to check the correlation
    EXPOSURE_LIMIT = 13  # gross exposure budget left is below the exchange minimum
    INSUFFICIENT_CASH = 14  # free cash left is below the exchange minimum
    BELOW_MIN_QTY = 15  # size rounded down to the lot step is below the minimum quantity
    BELOW_MIN_NOTIONAL = 16  # size is below the exchange's minimum order value
    # protections (risk/protections.py): gates that react to the bot's own recent losses
    STOP_LOSS_GUARD = 17  # risk.stop_loss_guard: N stop-loss exits within its window paused entries (all symbols or this one)
    LOW_PROFIT_LOCK = 18  # risk.low_profit_lock: this symbol's recent closed trades lost more than max_loss; locked
    DRAWDOWN_LOOKBACK = 19  # risk.drawdown_lookback: equity fell max_drawdown below its peak of the last hours; paused

    @property
    def label(self) -> str:
        """The stable string form (`kill_switch`) used in logs and the decisions table."""
        return self.name.lower()


#: The order the checks run in; a candidate gets the first one it fails. The per-candidate checks
#: come first (vectorised), then the shared limits of the greedy pass, then the size. Protections
#: sit right after the kill switch: global blocks before a symbol's own, both before the reasons
#: that only say this symbol cannot be entered now.
PRECEDENCE: tuple[Reason, ...] = (
    Reason.INVALID_INPUT, Reason.NO_MARKET_RULES, Reason.KILL_SWITCH, Reason.DRAWDOWN_LOOKBACK,
    Reason.STOP_LOSS_GUARD, Reason.LOW_PROFIT_LOCK, Reason.POSITION_OPEN, Reason.COOLDOWN,
    Reason.NON_POSITIVE_ER, Reason.LOW_PROBABILITY, Reason.KELLY_NON_POSITIVE, Reason.MAX_POSITIONS,
    Reason.ORDER_RATE, Reason.CORRELATION, Reason.CORRELATION_UNKNOWN, Reason.EXPOSURE_LIMIT,
    Reason.INSUFFICIENT_CASH, Reason.BELOW_MIN_QTY, Reason.BELOW_MIN_NOTIONAL,
)  # fmt: skip

#: The protections' reasons (risk/protections.py): their decision rows carry `blocked_until_ms`.
PROTECTION_REASONS = frozenset({Reason.STOP_LOSS_GUARD, Reason.LOW_PROFIT_LOCK, Reason.DRAWDOWN_LOOKBACK})
#: ... and their labels, in the order of `PRECEDENCE` (for the report and the status view)
PROTECTION_LABELS: tuple[str, ...] = tuple(r.label for r in PRECEDENCE if r in PROTECTION_REASONS)

#: Internal marker for "no check has failed yet"; never appears in a returned decision.
PENDING = -1

REASON_LABELS: tuple[str, ...] = tuple(r.label for r in Reason)
