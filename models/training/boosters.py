"""The primary models of one window and their ensemble weight.

- LightGBM: one binned Dataset built from `RowSequence`s (max_bin 63, force_col_wise,
  free_raw_data), relabelled for each of er / q05 (quantile 0.05) / e_mae / e_hold, early
  stopping on the calibration part;
- CatBoost `er`: on a time-aligned subsample of at most `catboost.max_rows` rows, quantized
  and saved as a quantized pool, then trained from `quantized://` (measured here: a saved
  quantized pool trains in about half the memory of a numpy-fed pool);
- the LightGBM/CatBoost `er` weight: least squares on the calibration part.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle.predictor import TARGETS, Predictor
from models.config import Settings, TrainConfig
from models.progress import Progress
from models.training.dataset import RowSequence
from models.training.prepare import Prepared
from models.training.window_rows import Selection, read_rows, row_labels, subsample, target_labels


def lgb_base_params(tcfg: TrainConfig) -> dict[str, Any]:
    p = tcfg.lightgbm
    return {
        "objective": "regression",
        "metric": "l2",
        "num_leaves": p.num_leaves,
        "learning_rate": p.learning_rate,
        "min_data_in_leaf": p.min_data_in_leaf,
        "feature_fraction": p.feature_fraction,
        "bagging_fraction": p.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": p.lambda_l2,
        "max_bin": p.max_bin,
        "force_col_wise": True,
        "deterministic": True,
        "num_threads": tcfg.n_threads,
        "seed": tcfg.seed,
        "verbose": -1,
    }


def dataset_params(tcfg: TrainConfig) -> dict[str, Any]:
    return {"max_bin": tcfg.lightgbm.max_bin, "feature_pre_filter": False, "verbose": -1,
            "data_random_seed": tcfg.seed, "num_threads": tcfg.n_threads}  # fmt: skip


TARGET_OBJECTIVES: dict[str, dict[str, Any]] = {
    "er": {"objective": "regression", "metric": "l2"},
    "q05": {"objective": "quantile", "alpha": 0.05, "metric": "quantile"},
    "e_mae": {"objective": "regression", "metric": "l2"},
    "e_hold": {"objective": "regression", "metric": "l2"},
}


class _Advance:
    """LightGBM callback: advance a progress stage by one unit per boosting round."""

    order = 50

    def __init__(self, progress: Progress, key: str):
        self.progress, self.key = progress, key

    def __call__(self, env: Any) -> None:
        self.progress.advance(self.key, 1)


class _CatAdvance:
    def __init__(self, progress: Progress, key: str):
        self.progress, self.key = progress, key

    def after_iteration(self, info: Any) -> bool:
        self.progress.advance(self.key, 1)
        return True


def _lgb_sequences(prep: Prepared, rows: dict[str, np.ndarray], cols: np.ndarray) -> list[RowSequence]:
    return [RowSequence(prep.train[s].rows, rows[s], cols) for s in prep.symbols if len(rows[s])]


def train_lgb_targets(
    prep: Prepared,
    sel: Selection,
    cols: np.ndarray,
    names: list[str],
    params: dict[str, Any],
    settings: Settings,
    *,
    targets: Sequence[str] = TARGETS,
    labels_fit: dict[str, np.ndarray] | None = None,
    labels_cal: dict[str, np.ndarray] | None = None,
    progress: Progress,
    key: str,
    tuner: Any = None,
    fixed_rounds: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Bin the fit rows once (streamed), then train each target with early stopping on the
    calibration rows (or exactly `fixed_rounds` rounds). Returns (boosters, info, params used)."""
    import lightgbm as lgb

    tcfg = settings.train
    lp = tcfg.lightgbm
    labels_fit = labels_fit or target_labels(prep, sel.fit)
    labels_cal = labels_cal or target_labels(prep, sel.calib)
    dparams = dataset_params(tcfg)
    first = targets[0]
    ds_fit = lgb.Dataset(_lgb_sequences(prep, sel.fit, cols), label=labels_fit[first], params=dparams,
                         feature_name=names, free_raw_data=True)  # fmt: skip
    ds_cal = lgb.Dataset(_lgb_sequences(prep, sel.calib, cols), label=labels_cal[first], params=dparams,
                         feature_name=names, reference=ds_fit, free_raw_data=True)  # fmt: skip
    t0 = time.monotonic()
    ds_fit.construct()
    ds_cal.construct()
    info: dict[str, Any] = {"dataset_s": round(time.monotonic() - t0, 2), "rows_fit": sel.n_fit(), "rows_calib": sel.n_calib()}
    if tuner is not None:
        params, info["optuna"] = tuner(ds_fit, ds_cal, params)
    boosters: dict[str, Any] = {}
    for t in targets:
        ds_fit.set_label(labels_fit[t])
        ds_cal.set_label(labels_cal[t])
        p = {**params, **TARGET_OBJECTIVES[t]}
        t1 = time.monotonic()
        rounds = fixed_rounds or lp.num_boost_round
        stop = [] if fixed_rounds else [lgb.early_stopping(lp.early_stopping_rounds, verbose=False)]
        b = lgb.train(
            p, ds_fit, num_boost_round=rounds, valid_sets=[ds_cal], valid_names=["calib"],
            callbacks=[*stop, _Advance(progress, key)],
        )  # fmt: skip
        progress.advance(key, max(0, rounds - b.current_iteration()))
        if b.best_iteration and b.best_iteration < b.current_iteration():
            b = b.model_from_string(b.model_to_string(num_iteration=b.best_iteration))
        b.free_dataset()
        boosters[t] = b
        info[t] = {"rounds": int(b.current_iteration()), "seconds": round(time.monotonic() - t1, 2),
                   "best_calib": {k: float(v) for k, v in (b.best_score.get("calib") or {}).items()}}  # fmt: skip
    del ds_fit, ds_cal
    gc.collect()
    return boosters, info, params


def train_catboost(
    prep: Prepared, sel: Selection, cols: np.ndarray, names: list[str], settings: Settings, work_dir: Path,
    *, progress: Progress, key: str,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """CatBoost `er` on a subsample of the fit rows, via a quantized pool saved to disk."""
    from catboost import CatBoostRegressor, Pool

    tcfg = settings.train
    cp = tcfg.catboost
    rows = subsample(sel.fit, cp.max_rows)
    n = sum(len(v) for v in rows.values())
    t0 = time.monotonic()
    x = read_rows(prep, rows, cols)
    y = row_labels(prep, rows, "ret")
    pool = Pool(x, label=y, feature_names=names, thread_count=tcfg.n_threads)
    del x
    pool.quantize(border_count=cp.border_count)
    qpath = work_dir / "catboost.qpool"
    pool.save(str(qpath))
    del pool
    gc.collect()
    pool = Pool("quantized://" + str(qpath))
    model = CatBoostRegressor(
        iterations=cp.iterations, depth=cp.depth, learning_rate=cp.learning_rate, loss_function="RMSE",
        thread_count=tcfg.n_threads, random_seed=tcfg.seed, verbose=False, allow_writing_files=False,
    )  # fmt: skip
    model.fit(pool, callbacks=[_CatAdvance(progress, key)])
    del pool
    qpath.unlink(missing_ok=True)
    gc.collect()
    return model, {"rows": n, "seconds": round(time.monotonic() - t0, 2), "iterations": int(model.tree_count_)}


def scores_on(prep: Prepared, rows: dict[str, np.ndarray], cols: np.ndarray, predictor: Predictor) -> dict[str, np.ndarray]:
    parts: list[dict[str, np.ndarray]] = []
    for s in prep.symbols:
        for chunk in prep.train[s].rows.iter_rows(rows[s], cols):
            parts.append(predictor.predict(chunk))
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ensemble_weight(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """w in [0, 1] minimising mean((w a + (1 - w) b - y)^2): least squares, clipped."""
    d = a - b
    den = float(np.dot(d, d))
    if den <= 0 or not np.isfinite(den):
        return 1.0
    return float(np.clip(np.dot(d, y - b) / den, 0.0, 1.0))
