"""The deflated Sharpe ratio (Bailey & Lopez de Prado, 2014), for a figure chosen among many.

Choosing the best of N configurations inflates its Sharpe ratio even when none has an edge.
The DSR is the probability that the true Sharpe ratio exceeds SR0, the best Sharpe one would
expect from N unskilled trials with the observed spread of Sharpe ratios:

    SR0 = sqrt(V) x ((1 - g) x Z^-1(1 - 1/N) + g x Z^-1(1 - 1/(N e))),   g = Euler-Mascheroni
    DSR = Z((SR - SR0) x sqrt(T - 1) / sqrt(1 - skew x SR + (kurt - 1) / 4 x SR^2))

SR, skew and kurt (non-excess) are of the chosen strategy's returns over T observations; V is
the variance of the Sharpe ratios across the trials (here: of the configurations with enough
trades to be chosen; N counts every configuration tried). Here the observations are trades (per-trade
Sharpe: mean / sd of net trade returns), which are what the research compares.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import norm

from models.evaluation.trade_stats import sharpe_stats

EULER_GAMMA = 0.5772156649015329


def expected_max_sharpe(n_trials: int, var_sharpe: float) -> float:
    """SR0: the expected maximum Sharpe ratio of n_trials unskilled trials."""
    if n_trials <= 1 or var_sharpe <= 0:
        return 0.0
    a = norm.ppf(1.0 - 1.0 / n_trials)
    b = norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_sharpe) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b))


def deflated_sharpe(ret: np.ndarray, *, n_trials: int, trial_sharpes: np.ndarray) -> dict[str, Any]:
    """DSR of the returns `ret` of the chosen strategy (see the module docstring)."""
    st = sharpe_stats(ret)
    ts = np.asarray([s for s in trial_sharpes if s is not None and math.isfinite(s)], dtype=np.float64)
    var = float(ts.var(ddof=1)) if len(ts) > 1 else 0.0
    sr0 = expected_max_sharpe(n_trials, var)
    out: dict[str, Any] = {**st, "n_trials": n_trials, "var_trial_sharpe": var, "sr0": sr0, "dsr": None, "psr0": None}
    sr = st["sharpe"]
    if sr is None:
        return out
    t = st["n"]
    den = 1.0 - st["skew"] * sr + (st["kurt"] - 1.0) / 4.0 * sr * sr
    if den <= 0:
        return out
    out["dsr"] = float(norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(den)))
    out["psr0"] = float(norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(den)))  # P(true SR > 0), no deflation
    return out
