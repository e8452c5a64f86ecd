"""The one entry rule and the one exit rule: the trainer's simulation and the engine both use them.

Entry (`EntryRule`): a symbol is a candidate after the close of bar t when its scores pass
- `er > er_threshold` (ensemble expected net return),
- `q05 > q05_threshold` when one is set (the 5 % quantile of the net return; off by default),
- `p > p_threshold` when the bundle has a meta model (meta-label probability; NaN = no meta
  model = gate open).

Optional levers (defaults = off, today's rule), found by the research runner (`models.research`):
- `cadence_minutes`: decide only after bars that close a period of this many minutes (15 = at
  :14, :29, :44, :59), not on every minute;
- `regime_states`: only while the regime's most likely state is one of these (0 = calmest);
- `top_k`: only the k highest er of the cross-section at the decision minute (`top_k_mask`),
  a threshold that does not depend on the score's level.
A threshold as a multiple of the round-trip cost is an `er_threshold` (`with_cost_multiple`).

The probability gate is ONE gate: `p_threshold = max(bundle meta_threshold, risk.min_probability)`
(`EntryRule.for_trading`). The engine then hands the risk manager `min_probability = 0` so the
same probability is not gated twice with two numbers; the risk manager still uses p for Kelly
sizing. The trainer's simulation (`EntryRule.from_predictor`) uses the bundle's threshold alone,
which is the same rule with `risk.min_probability` at or below it (the default: both 0.55).

Exit (`barrier_prices`, `check_exits`): exactly the triple barrier of `models.labels.triple_barrier`:
- TP = entry x (1 + tp_frac), SL = entry x (1 - sl_frac), the fractions from the decision bar's
  ATR% and ATR percentile via `labels.barrier_fractions` (which uses `barrier_multipliers`);
  `entry` is the reference price (the open of the bar after the decision, before slippage);
- on each later bar of the symbol, in this order: the open gapping through a barrier (exit at
  the open), SL if the low reaches it (at SL), TP if the high reaches it (at TP) -- so SL first
  when one bar touches both; without a hit, time out at the close of the bar opening at
  decision_ts + H minutes;
- outages: a minute the symbol has no candle is not checked (nobody traded it); when the first
  bar after an outage opens after the deadline, the trade exits at that bar's open
  (`EXIT_GAP_TIMEOUT`), as the label does.
`tests/unit/models/test_rules.py` checks that walking every label row of real symbols through
`check_exits` bar by bar gives the label's exit row, kind and net return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.config import LabelConfig
from models.labels.triple_barrier import (
    EXIT_GAP_TIMEOUT,
    EXIT_NONE,
    EXIT_SL,
    EXIT_TIMEOUT,
    EXIT_TP,
    barrier_fractions,
)

__all__ = [
    "EXIT_GAP_TIMEOUT", "EXIT_NONE", "EXIT_SL", "EXIT_TIMEOUT", "EXIT_TP", "EXIT_NAMES",
    "EntryRule", "barrier_prices", "check_exits", "entry_fractions", "on_cadence", "top_k_mask",
]  # fmt: skip

#: exit kind -> the reason string of `bot.engine.records.EXIT_REASONS`
EXIT_NAMES = {EXIT_TP: "tp", EXIT_SL: "sl", EXIT_TIMEOUT: "timeout", EXIT_GAP_TIMEOUT: "gap_timeout"}


@dataclass(frozen=True, slots=True)
class EntryRule:
    """Thresholds of the entry rule (see the module docstring). `p_threshold=None`: no meta gate."""

    er_threshold: float
    p_threshold: float | None = None
    q05_threshold: float | None = None
    cadence_minutes: int = 1
    top_k: int | None = None
    regime_states: tuple[int, ...] | None = None

    def with_levers(self, *, cadence_minutes: int = 1, top_k: int | None = None,
                    regime_states: tuple[int, ...] | None = None) -> EntryRule:  # fmt: skip
        """The same thresholds with the optional levers set."""
        return EntryRule(self.er_threshold, self.p_threshold, self.q05_threshold, int(cadence_minutes), top_k,
                         None if regime_states is None else tuple(int(x) for x in regime_states))  # fmt: skip

    def with_cost_multiple(self, k: float, round_trip: float) -> EntryRule:
        """er must exceed k x the round-trip cost (instead of the fixed er_threshold)."""
        return EntryRule(float(k) * float(round_trip), self.p_threshold, self.q05_threshold, self.cadence_minutes,
                         self.top_k, self.regime_states)  # fmt: skip

    @classmethod
    def from_predictor(cls, predictor: Any, *, use_meta: bool = True, q05_threshold: float | None = None) -> EntryRule:
        """The trainer's rule for a `models.bundle.predictor.Predictor`: its er and meta thresholds."""
        has_meta = use_meta and getattr(predictor, "meta", None) is not None
        return cls(float(predictor.er_threshold), float(predictor.meta_threshold) if has_meta else None, q05_threshold)

    @classmethod
    def for_trading(cls, predictor: Any, *, min_probability: float, q05_threshold: float | None = None) -> EntryRule:
        """The engine's rule: the one probability gate is max(meta_threshold, min_probability)."""
        rule = cls.from_predictor(predictor, q05_threshold=q05_threshold)
        if rule.p_threshold is None:
            return rule
        return cls(rule.er_threshold, max(rule.p_threshold, float(min_probability)), q05_threshold)

    def mask(
        self,
        er: np.ndarray,
        p: np.ndarray | None = None,
        q05: np.ndarray | None = None,
        *,
        ts: np.ndarray | None = None,
        regime: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boolean mask of rows passing the rule; NaN er (or q05 / p where gated) never passes.
        `ts` (decision bar open, ms) is needed with a cadence, `regime` (argmax state) with
        regime_states; `top_k` is applied by `top_k_mask` over the cross-section."""
        with np.errstate(invalid="ignore"):
            sig = np.asarray(er, dtype=np.float64) > self.er_threshold
            if self.q05_threshold is not None:
                if q05 is None:
                    raise ValueError("the entry rule has a q05 threshold but no q05 scores were given")
                sig &= np.asarray(q05, dtype=np.float64) > self.q05_threshold
            if self.p_threshold is not None:
                if p is None:
                    raise ValueError("the entry rule has a probability gate but no p scores were given")
                sig &= np.asarray(p, dtype=np.float64) > self.p_threshold
        if self.cadence_minutes > 1:
            if ts is None:
                raise ValueError("the entry rule has a decision cadence but no bar times were given")
            sig &= on_cadence(np.asarray(ts, dtype=np.int64), self.cadence_minutes)
        if self.regime_states is not None:
            if regime is None:
                raise ValueError("the entry rule is conditioned on the regime but no regime states were given")
            sig &= np.isin(np.asarray(regime), np.asarray(self.regime_states))
        return sig

    def describe(self) -> str:
        parts = [f"er > {self.er_threshold:g}"]
        if self.q05_threshold is not None:
            parts.append(f"q05 > {self.q05_threshold:g}")
        if self.p_threshold is not None:
            parts.append(f"p > {self.p_threshold:g}")
        if self.cadence_minutes > 1:
            parts.append(f"on {self.cadence_minutes}m closes")
        if self.regime_states is not None:
            parts.append(f"regime in {list(self.regime_states)}")
        if self.top_k is not None:
            parts.append(f"top {self.top_k} of the cross-section")
        return " and ".join(parts)


def on_cadence(ts: np.ndarray, minutes: int) -> np.ndarray:
    """Decision bars (1m, open time `ts` in ms) that close a period of `minutes` (UTC-aligned)."""
    return ((np.asarray(ts, dtype=np.int64) // 60_000) + 1) % int(minutes) == 0


def top_k_mask(minute: np.ndarray, er: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Rows whose er is among the k highest of the eligible rows sharing their `minute` (ties:
    the earlier row). The cross-section is every symbol scored at that minute."""
    out = np.zeros(len(er), dtype=bool)
    cand = np.flatnonzero(eligible & np.isfinite(er))
    if len(cand) == 0:
        return out
    m = np.asarray(minute)[cand]
    order = np.lexsort((-np.asarray(er, dtype=np.float64)[cand], m))
    m_sorted = m[order]
    starts = np.flatnonzero(np.r_[True, m_sorted[1:] != m_sorted[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.arange(len(order)) - run_start
    out[cand[order[rank < k]]] = True
    return out


def entry_fractions(atr_frac: np.ndarray, atr_pct: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp_frac, sl_frac, ok): barrier distances known at the decision bar's close, and whether
    they allow a trade (finite, TP > 0, 0 < SL < 1: the label's own validity conditions)."""
    tp, sl = barrier_fractions(np.asarray(atr_frac, np.float64), np.asarray(atr_pct, np.float64), cfg)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(tp) & np.isfinite(sl) & (tp > 0) & (sl > 0) & (sl < 1)
    return tp, sl, ok


def barrier_prices(entry: float | np.ndarray, tp_frac: float | np.ndarray, sl_frac: float | np.ndarray) -> tuple[Any, Any]:
    """(TP, SL) prices from the entry reference price (the label's arithmetic, float64)."""
    e = np.asarray(entry, dtype=np.float64)
    tp = e * (1.0 + np.asarray(tp_frac, dtype=np.float64))
    sl = e * (1.0 - np.asarray(sl_frac, dtype=np.float64))
    if tp.ndim == 0:
        return float(tp), float(sl)
    return tp, sl


def check_exits(
    ts: int,
    bars: np.ndarray,
    tp: np.ndarray,
    sl: np.ndarray,
    deadline: np.ndarray,
    out_kind: np.ndarray | None = None,
    out_price: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check N open positions against their symbol's bar opening at `ts`.

    `bars` (N, 4+) float64 open/high/low/close of each position's symbol at `ts` (a row with a
    NaN close = no candle: not checked). `deadline` (N,) int64 = decision_ts + H minutes (the
    open time of the hold's last bar). Returns (kind int8 EXIT_*, price float64 NaN where none).
    """
    n = len(tp)
    kind = np.zeros(n, np.int8) if out_kind is None else out_kind
    price = np.full(n, np.nan) if out_price is None else out_price
    kind[:] = EXIT_NONE
    price[:] = np.nan
    if n == 0:
        return kind, price
    o, h, lo, c = bars[:, 0], bars[:, 1], bars[:, 2], bars[:, 3]
    with np.errstate(invalid="ignore"):
        present = np.isfinite(c) & np.isfinite(o)
        late = present & (ts > deadline)
        inwin = present & ~late
        gap_sl = inwin & (o <= sl)
        gap_tp = inwin & ~gap_sl & (o >= tp)
        rest = inwin & ~gap_sl & ~gap_tp
        bar_sl = rest & (lo <= sl)
        bar_tp = rest & ~bar_sl & (h >= tp)
        tout = rest & ~bar_sl & ~bar_tp & (ts == deadline)
    # later assignments never overlap earlier ones (the masks are disjoint)
    kind[late] = EXIT_GAP_TIMEOUT
    price[late] = o[late]
    kind[gap_sl] = EXIT_SL
    price[gap_sl] = o[gap_sl]
    kind[gap_tp] = EXIT_TP
    price[gap_tp] = o[gap_tp]
    kind[bar_sl] = EXIT_SL
    price[bar_sl] = sl[bar_sl]
    kind[bar_tp] = EXIT_TP
    price[bar_tp] = tp[bar_tp]
    kind[tout] = EXIT_TIMEOUT
    price[tout] = c[tout]
    return kind, price


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
