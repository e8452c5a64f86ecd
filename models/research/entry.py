"""Entry-rule levers judged on cached scores: when a trained model's score becomes a trade.

`EntryRule` here is the *grid spec* of the levers (what a grid YAML names); `to_rule` turns it
into the one entry rule, `models.trading.rules.EntryRule`, which the trainer's simulation and the
engine share -- there is no second rule. Its defaults are today's rule (every minute, er >
train.er_threshold, meta gate at train.meta_threshold, no rank, any regime), and with them
`simulate` reproduces `models.training.run.evaluate_window` trade for trade (tested). The levers:
- `cadence_minutes`: decide only at the close of bars that end a 15m / 1h period (fewer,
  non-overlapping decisions instead of 60 near-duplicates an hour);
- `cost_multiple`: er (a net return) must exceed k x the round-trip cost, a threshold that
  travels between periods better than a fixed number;
- `top_k`: at each decision minute only the k symbols with the highest er may enter (ranking
  across the cross-section: a threshold that does not depend on the score's level at all);
- `use_meta` / `meta_threshold`: the meta-label gate on or off;
- `regime_states`: trade only while the market regime's most likely state is one of these
  (0 = calmest).
Trades are then taken by the one simulation (`models.evaluation.trade_sim.take_trades` / `report`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.candles import MINUTE_MS
from models.evaluation.trade_sim import SymbolResult, report, take_trades
from models.research.scores import FoldScores
from models.trading.rules import EntryRule as Rule
from models.trading.rules import top_k_mask as _top_k_by_minute


class EntryRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cadence_minutes: int = Field(1, ge=1, le=1440, description="decide only on bars closing a period of this many minutes")
    er_threshold: float | None = Field(None, description="er gate (net return); None = train.er_threshold")
    cost_multiple: float | None = Field(None, description="if set, er must also exceed this multiple of the round-trip cost")
    top_k: int | None = Field(None, ge=1, description="only the k highest er of the cross-section at a decision minute may enter")
    use_meta: bool = True
    meta_threshold: float | None = Field(None, ge=0, le=1, description="None = train.meta_threshold")
    regime_states: list[int] | None = Field(None, description="allowed argmax regime states (0 = calmest); None = any")

    def label(self) -> str:
        d = self.model_dump(exclude_defaults=True)
        return " ".join(f"{k}={v}" for k, v in d.items()) or "default rule"


    def to_rule(self, *, er_threshold: float, meta_threshold: float, round_trip: float, has_meta: bool) -> Rule:
        """The one entry rule (`models.trading.rules.EntryRule`) these levers stand for."""
        thr = er_threshold if self.er_threshold is None else self.er_threshold
        p_thr = (meta_threshold if self.meta_threshold is None else self.meta_threshold) if (self.use_meta and has_meta) else None
        rule = Rule(float(thr), p_thr).with_levers(cadence_minutes=self.cadence_minutes, top_k=self.top_k,
                                                   regime_states=None if self.regime_states is None else tuple(self.regime_states))  # fmt: skip
        if self.cost_multiple is not None:
            k_rule = rule.with_cost_multiple(self.cost_multiple, round_trip)
            rule = k_rule if self.er_threshold is None else rule.with_cost_multiple(max(thr / round_trip, self.cost_multiple), round_trip)
        return rule


def signal_mask(fs: FoldScores, levers: EntryRule, *, er_threshold: float, meta_threshold: float, round_trip: float) -> np.ndarray:
    """Rows where the rule wants to enter (before the one-position-per-symbol slot)."""
    rule = levers.to_rule(er_threshold=er_threshold, meta_threshold=meta_threshold, round_trip=round_trip, has_meta=fs.has_meta)
    sig = fs.ok & rule.mask(fs.er, fs.p, ts=fs.ts, regime=fs.regime)
    if rule.top_k is not None:
        sig &= top_k_mask(fs, rule.top_k)
    return sig


def top_k_mask(fs: FoldScores, k: int) -> np.ndarray:
    """Rows whose er is among the k highest of the symbols scored (and labelled) at that minute."""
    return _top_k_by_minute(fs.ts // MINUTE_MS, fs.er, fs.ok, k)


def simulate(fs: FoldScores, rule: EntryRule, *, er_threshold: float, meta_threshold: float, round_trip: float) -> dict[str, Any]:
    """The one simulation on `fs` with `rule`: report (models.evaluation.trade_sim.report) + signal rate + trade returns."""
    sig = signal_mask(fs, rule, er_threshold=er_threshold, meta_threshold=meta_threshold, round_trip=round_trip)
    results = []
    for i, (lo, hi) in enumerate(fs.bounds()):
        sl = slice(lo, hi)
        results.append(SymbolResult(fs.symbols[i], take_trades(sig[sl], fs.ts[sl], fs.ret[sl], fs.off[sl], fs.hold[sl])))
    rep = report(results, fs.window)
    n_ok = int(fs.ok.sum())
    rep["signal_rate"] = float(sig.sum() / n_ok) if n_ok else 0.0
    rep["trade_returns"] = np.concatenate([r.trades.ret for r in results]) if results else np.empty(0)
    rep["trade_exit_ts"] = np.concatenate([r.trades.exit_ts for r in results]) if results else np.empty(0, np.int64)
    return rep
