"""Entry-rule levers judged on cached scores: when a trained model's score becomes a trade.

A grid's `rule:` values are `models.trading.rules.EntryLevers` (here also under its grid name,
`EntryRule`); `EntryLevers.to_rule` turns them into the one entry rule,
`models.trading.rules.EntryRule`, which the trainer's simulation and the engine share -- there is
no second rule. Their defaults are today's rule (every minute, er > train.er_threshold, meta gate
at train.meta_threshold, no rank, any regime), and with them `simulate` reproduces
`models.evaluation.window.evaluate_window` trade for trade (tested). The levers:
- `cadence_minutes`: decide only at the close of bars that end a 15m / 1h period (fewer,
  non-overlapping decisions instead of 60 near-duplicates an hour);
- `cost_multiple`: er (a net return) must exceed k x the round-trip cost;
- `floor`: er > 0 instead of the fixed threshold (the predicted move pays the round trip), the
  floor of the level-free rules below;
- `top_k`: at each decision minute only the k symbols with the highest er may enter (ranking
  across the cross-section: a threshold that does not depend on the score's level at all);
- `quantile` / `quantile_days`: er must exceed that quantile of the model's own scores over the
  trailing days (before the decision minute): level-free too;
- `use_meta` / `meta_threshold`: the meta-label gate on or off;
- `regime_states`: trade only while the market regime's most likely state is one of these
  (0 = calmest).
Trades are then taken by the one simulation (`models.evaluation.trade_sim.simulate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.candles import MINUTE_MS
from models.evaluation.scores import FoldScores
from models.evaluation.trade_sim import signal_mask as _signal_mask
from models.evaluation.trade_sim import simulate as _simulate
from models.trading.rules import EntryLevers
from models.trading.rules import top_k_mask as _top_k_by_minute

EntryRule = EntryLevers  # the grid's name for the levers

__all__ = ["EntryLevers", "EntryRule", "signal_mask", "simulate", "top_k_mask"]


def _rule(fs: FoldScores, levers: EntryLevers, er_threshold: float, meta_threshold: float, round_trip: float) -> Any:
    return levers.to_rule(er_threshold=er_threshold, meta_threshold=meta_threshold, round_trip=round_trip, has_meta=fs.has_meta)


def signal_mask(fs: FoldScores, levers: EntryLevers, *, er_threshold: float, meta_threshold: float, round_trip: float) -> np.ndarray:
    """Rows where the rule wants to enter (before the one-position-per-symbol slot)."""
    return _signal_mask(fs, _rule(fs, levers, er_threshold, meta_threshold, round_trip))


def top_k_mask(fs: FoldScores, k: int) -> np.ndarray:
    """Rows whose er is among the k highest of the symbols scored at that minute."""
    return _top_k_by_minute(fs.ts // MINUTE_MS, fs.er, fs.scored, k)


def simulate(fs: FoldScores, levers: EntryLevers, *, er_threshold: float, meta_threshold: float, round_trip: float) -> dict[str, Any]:
    """The one simulation on `fs` with the rule of `levers` (`models.evaluation.trade_sim.simulate`)."""
    return _simulate(fs, _rule(fs, levers, er_threshold, meta_threshold, round_trip))
