"""The trainer's view of the feature engine: names, warm-up, the ATR columns, regime fitting.

The trainer, the evaluator and the leakage audit reach the feature engine (`models.features`)
only through a `FeatureSet`, so one object decides which columns a bundle is trained on and a
test can wrap it (e.g. inject a leaky column) without touching the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.candles import Candles
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig
from models.features.regime import RegimeModel
from models.features.spec import ATR_FRAC, ATR_PERCENTILE, feature_names, warmup_bars


class FeatureSet:
    """The default: the engine's batch path with the engine's full column list."""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.names: list[str] = feature_names(cfg)
        self.warmup_bars: int = warmup_bars(cfg)
        self.atr_frac_col = self.names.index(ATR_FRAC)
        self.atr_pct_col = self.names.index(ATR_PERCENTILE)

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(self.cfg.reference_symbols)

    def fit_regime(self, refs: Mapping[str, Candles], *, seed: int) -> RegimeModel | None:
        """Fit the volatility regime on the (training-window) candles of the regime symbol."""
        return fit_regime(refs[self.cfg.reference_symbols[0]], self.cfg, seed=seed)

    def compute(self, sym: Candles, refs: Mapping[str, Candles], regime: RegimeModel | None) -> np.ndarray:
        """float32 (len(sym), len(names)); row i = what is known at the close of bar i."""
        return compute_batch(sym, refs, self.cfg, regime=regime)

    def regime_to_dict(self, regime: RegimeModel | None) -> dict[str, Any] | None:
        return None if regime is None else regime.to_dict()

    def regime_from_dict(self, d: dict[str, Any] | None) -> RegimeModel | None:
        return None if not d else RegimeModel.from_dict(d)
