"""Position sizing and risk limits: pure functions and small state objects over numpy arrays.

No I/O and no clock of its own: time is passed in. Used identically by the live engine and the
backtest. Never imports `bot`.

Entry point: `RiskManager(cfg, symbols, market_rules, round_trip_cost).decide(candidates,
portfolio, returns, now_ms)` -> `DecisionBatch` (arrays for the engine, `.rows()` for the logs).
"""

from risk.config import RiskConfig
from risk.decision import Decision, DecisionBatch
from risk.errors import RiskError, RiskInputError, RiskStateError
from risk.inputs import Candidates, OpenPosition, Portfolio
from risk.limits import Cooldowns, KillSwitch, OrderRateLimiter
from risk.manager import RiskManager
from risk.market import MarketRules
from risk.protections import (
    DrawdownLookback,
    LowProfitLock,
    Protections,
    StopLossGuard,
    active_protections,
)
from risk.reasons import Reason

__all__ = [
    "Candidates", "Cooldowns", "Decision", "DecisionBatch", "DrawdownLookback", "KillSwitch",
    "LowProfitLock", "MarketRules", "OpenPosition", "OrderRateLimiter", "Portfolio", "Protections",
    "Reason", "RiskConfig", "RiskError", "RiskInputError", "RiskManager", "RiskStateError",
    "StopLossGuard", "active_protections",
]  # fmt: skip
