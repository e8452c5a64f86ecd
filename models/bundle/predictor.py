"""The fitted models of one training run and how they score feature rows.

`Predictor` is what both a walk-forward fold and a saved bundle hold, so evaluation scores with
exactly the objects the daemon will load. Imports are light on purpose (numpy, lightgbm,
catboost): no pandas, optuna or SQLAlchemy on the live path.

Scores per row:
- `er_lgb`, `er_cat`: the two `er` models; `er` = w x er_lgb + (1 - w) x er_cat, w fitted on the
  calibration split;
- `q05`: LightGBM quantile 0.05 of the net return; `e_mae`, `e_hold`: expected max adverse
  excursion and holding minutes;
- `p`: meta-label probability that the trade wins (NaN when no meta model was fitted, in which
  case the meta gate is open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TARGETS = ("er", "q05", "e_mae", "e_hold")
META_EXTRA = ("er_lgb", "er_cat", "er", "q05", "e_mae", "e_hold")


@dataclass
class Predictor:
    """Boosters + the columns they read + ensemble weight + gates."""

    features: list[str]
    lgb: dict[str, Any]  # target -> lightgbm.Booster
    cat: Any | None  # catboost.CatBoostRegressor for er, or None
    w_lgb: float
    meta: Any | None  # lightgbm.Booster (binary) or None
    er_threshold: float
    meta_threshold: float
    threads: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray, *, er_gate: float | None = None) -> dict[str, np.ndarray]:
        """Score rows of `x` (float32, columns = `self.features`).

        `er_gate`: score q05 / e_mae / e_hold / p only for rows whose ensemble er exceeds it (NaN
        elsewhere). Every row's values are the same as without the gate (each row is scored on
        its own); the engine uses it because an entry needs er above the rule's threshold first,
        which saves most of the scoring time.
        """
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected a (rows, {len(self.features)}) matrix, got {x.shape}")
        out: dict[str, np.ndarray] = {}
        if len(x) == 0:
            return {k: np.empty(0, np.float64) for k in (*META_EXTRA, "p")}
        out["er_lgb"] = self.lgb["er"].predict(x, num_threads=self.threads)
        if self.cat is not None:
            out["er_cat"] = np.asarray(self.cat.predict(x, thread_count=self.threads), dtype=np.float64)
            out["er"] = self.w_lgb * out["er_lgb"] + (1.0 - self.w_lgb) * out["er_cat"]
        else:
            out["er_cat"] = np.full(len(x), np.nan)
            out["er"] = out["er_lgb"]
        rows = None
        if er_gate is not None:
            with np.errstate(invalid="ignore"):
                rows = np.flatnonzero(out["er"] > er_gate)
            if len(rows) == len(x):
                rows = None
        xs = x if rows is None else x[rows]
        sub = {k: (v if rows is None else v[rows]) for k, v in out.items()}
        for t in TARGETS[1:]:
            sub[t] = self.lgb[t].predict(xs, num_threads=self.threads) if len(xs) else np.empty(0)
        if self.meta is not None and len(xs):
            sub["p"] = self.meta.predict(meta_matrix(xs, sub), num_threads=self.threads)
        else:
            sub["p"] = np.full(len(xs), np.nan)
        for k in (*TARGETS[1:], "p"):
            if rows is None:
                out[k] = sub[k]
            else:
                full = np.full(len(x), np.nan)
                full[rows] = sub[k]
                out[k] = full
        return out

    def signal(self, scores: dict[str, np.ndarray], *, use_meta: bool = True) -> np.ndarray:
        """Entry wanted: er above its threshold and (with a meta model) p above its threshold."""
        from models.trading.rules import EntryRule

        return EntryRule.from_predictor(self, use_meta=use_meta).mask(scores["er"], scores.get("p"))


def meta_matrix(x: np.ndarray, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Meta model input: the features plus the primary models' predictions."""
    extra = np.column_stack([np.nan_to_num(scores[k], nan=0.0) for k in META_EXTRA]).astype(np.float32)
    return np.hstack([x.astype(np.float32, copy=False), extra])


def meta_feature_names(features: list[str]) -> list[str]:
    return [*features, *(f"pred_{k}" for k in META_EXTRA)]
