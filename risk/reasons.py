"""Stable reason codes of risk decisions.

The integer values are persisted (numpy arrays in memory) and the lowercase names are written to
the `decisions.reason` column and the logs, so neither may ever be renumbered or renamed: add new
codes at the end.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """Why a candidate was taken or skipped. Checks run in this order; the first failure wins."""

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

    @property
    def label(self) -> str:
        """The stable string form (`kill_switch`) used in logs and the decisions table."""
        return self.name.lower()


#: Internal marker for "no check has failed yet"; never appears in a returned decision.
PENDING = -1

REASON_LABELS: tuple[str, ...] = tuple(r.label for r in Reason)
