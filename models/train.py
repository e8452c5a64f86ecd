"""The batch trainer: features + labels per symbol to disk, then LightGBM/CatBoost/meta per window.

Memory is bounded by one symbol plus the binned datasets, never by all symbols' raw rows:

1. `prepare` walks the symbols one at a time: load candles, compute the float32 feature matrix
   and the labels, write the rows the trainer will use to a raw float32 file in the work
   directory, keep only small label arrays in memory, drop the rest.
   - Training rows are 1 minute in `row_stride` (aligned on the minute of ts, so two runs over
     different ranges pick the same rows). Why: a 60-minute label overlaps 59 of its
     neighbours', so adjacent 1m rows are near-duplicates in both features and target; 1 row in
     5 keeps 12 samples per label horizon and cuts memory and time 5x. If the rows would still
     exceed `max_train_rows` the stride grows (logged), which is what lets 30 symbols x 365
     days fit the 2.5 GB budget.
   - Validation rows (every minute from the first walk-forward validation block on) are kept
     in full: the trading simulation decides on every bar.
2. `fit_window` trains on one window [start, end) using rows with `resolved_ts < end` (purged):
   - the window is split in time into a fit part and a calibration part an embargo later
     (`calibration_split`); everything "fitted on validation" (early stopping, the
     LightGBM/CatBoost ensemble weight, the meta model) uses the calibration part, which is out
     of sample for the primary models. The primary models are *not* refitted on the whole
     window afterwards: the meta model must see the same models it will gate.
   - feature selection: a quick LightGBM on a subsample of the fit part keeps the features
     covering `importance_cum` (99.9 %) of the gain; cached on disk by a hash of the data
     range, the feature list, the label/cost settings and the parameters;
   - optional Optuna on `er` (models.tuning), best params reused for the other targets;
   - LightGBM: one binned Dataset built from `RowSequence`s (max_bin 63, force_col_wise,
     free_raw_data), relabelled for each of er / q05 (quantile 0.05) / e_mae / e_hold;
   - CatBoost `er`: on a time-aligned subsample of at most `catboost.max_rows` rows, quantized
     and saved as a quantized pool, then trained from `quantized://` (measured here: a saved
     quantized pool trains in about half the memory of a numpy-fed pool);
   - meta model: LightGBM classifier of `ret_net > 0` on the calibration part's candidates
     (ensemble er > threshold, widened to the top `1 - meta_candidate_quantile` of er when the
     threshold alone leaves too few rows), from the features plus the primary predictions --
     out-of-sample predictions only.
3. `run_training` = walk-forward folds (fit + simulated trading on each validation block),
   the leakage audit, and the final fit on the whole range, which becomes the bundle.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from models.candles import MINUTE_MS, Candles
from models.config import CostConfig, LabelConfig, TrainConfig
from models.costs import Costs
from models.dataset import RowFile, RowSequence, RowWriter
from models.features.config import FeatureConfig
from models.featureset import FeatureSet
from models.labels import triple_barrier
from models.predictor import TARGETS, Predictor, meta_feature_names, meta_matrix
from models.progress import Progress
from models.rules import EntryRule
from models.simulate import SymbolResult, report, take_trades
from models.splits import (
    DAY_MS,
    Fold,
    SplitError,
    Window,
    calibration_split,
    purged_rows,
    stride_rows,
    walk_forward,
)

log = structlog.get_logger(__name__)

SELECTION_MAX_ROWS = 200_000
SELECTION_ROUNDS = 100


class TrainError(Exception):
    """Training cannot proceed; the message says what is missing or inconsistent."""


class CandleSource(Protocol):
    """Where candles come from (a CSV directory, the store, a synthetic generator)."""

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        """One symbol's candles with start_ms <= ts < end_ms, ascending, float64 prices."""
        ...


@dataclass(frozen=True)
class Settings:
    """The config sections the trainer reads (all stored in the bundle)."""

    features: FeatureConfig
    labels: LabelConfig
    costs: CostConfig
    train: TrainConfig

    @staticmethod
    def default() -> Settings:
        return Settings(FeatureConfig(), LabelConfig(), CostConfig(), TrainConfig())

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).model_dump(mode="json") for k in ("features", "labels", "costs", "train")}


# --- stage 1: features and labels to disk ---------------------------------------------------


@dataclass
class TrainRows:
    """One symbol's strided training rows: the row file plus their labels."""

    rows: RowFile
    ts: np.ndarray
    ret: np.ndarray
    y: np.ndarray
    mae: np.ndarray
    hold: np.ndarray
    resolved: np.ndarray


@dataclass
class ValidRows:
    """One symbol's every row from the first validation minute on (what simulation needs)."""

    rows: RowFile
    ts: np.ndarray
    ret: np.ndarray
    exit_offset: np.ndarray
    hold: np.ndarray
    resolved: np.ndarray
    labelled: np.ndarray  # bool: a label exists
    usable: np.ndarray  # bool: features are warm


@dataclass
class Prepared:
    symbols: list[str]
    names: list[str]
    start: int
    end: int
    stride: int
    regime: Any
    train: dict[str, TrainRows] = field(default_factory=dict)
    valid: dict[str, ValidRows] = field(default_factory=dict)
    lookahead: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def effective_stride(n_symbols: int, start_ms: int, end_ms: int, cfg: TrainConfig) -> int:
    """`row_stride`, grown if needed so the training rows stay under `max_train_rows`."""
    minutes = max(1, (end_ms - start_ms) // MINUTE_MS)
    need = math.ceil(n_symbols * minutes / cfg.max_train_rows)
    return max(cfg.row_stride, need)


def load_refs(source: CandleSource, refs: Sequence[str], start: int | None, end: int) -> dict[str, Candles]:
    out = {}
    for r in refs:
        c = source.load(r, start, end)
        if len(c) == 0:
            raise TrainError(f"no candles for reference symbol {r} in the requested range; import it first")
        out[r] = c
    return out


def prepare(
    source: CandleSource,
    symbols: Sequence[str],
    settings: Settings,
    featureset: FeatureSet,
    work_dir: Path,
    *,
    start_ms: int,
    end_ms: int,
    valid_from_ms: int | None,
    want_train: bool,
    regime: Any = "fit",
    load_from_ms: int | None = None,
    audit_lookahead: bool = False,
    progress: Progress | None = None,
) -> Prepared:
    """Stage 1 (see the module docstring). `regime="fit"` fits it on the first
    `regime_fit_days` of [start_ms, end_ms); otherwise pass a fitted model (or None)."""
    progress = progress or Progress()
    tcfg = settings.train
    work_dir.mkdir(parents=True, exist_ok=True)
    if load_from_ms is None:
        load_from_ms = start_ms - featureset.warmup_bars * MINUTE_MS
    refs = load_refs(source, featureset.references, load_from_ms, end_ms)
    if isinstance(regime, str) and regime == "fit":
        fit_end = start_ms + int(tcfg.regime_fit_days * DAY_MS)
        ref_train = {k: v.between(start_ms, min(fit_end, end_ms)) for k, v in refs.items()}
        regime = featureset.fit_regime(ref_train, seed=tcfg.seed)
    stride = effective_stride(len(symbols), start_ms, end_ms, tcfg)
    if stride != tcfg.row_stride:
        progress.message(f"row stride raised from {tcfg.row_stride} to {stride} to stay under {tcfg.max_train_rows:,} training rows")
    costs = Costs.from_config(settings.costs)
    prep = Prepared(list(symbols), list(featureset.names), start_ms, end_ms, stride, regime)
    n_train = n_valid = 0
    # look-ahead audit on the first reference symbol and the first other one: cross-symbol
    # features of a reference against itself are degenerate, so check a non-reference too
    refs_in = [s for s in symbols if s in featureset.references]
    others = [s for s in symbols if s not in featureset.references]
    audit_syms = set(refs_in[:1] + others[:1]) if audit_lookahead else set()
    progress.begin("prepare", "features + labels", len(symbols))
    for sym in symbols:
        c = refs[sym] if sym in refs else source.load(sym, load_from_ms, end_ms)
        if len(c) == 0:
            raise TrainError(f"no candles for {sym} in the requested range; import it first")
        x = featureset.compute(c, refs, regime)
        if x.shape != (len(c), len(prep.names)):
            raise TrainError(f"feature matrix for {sym} has shape {x.shape}, expected ({len(c)}, {len(prep.names)})")
        atr, pct = x[:, featureset.atr_frac_col], x[:, featureset.atr_pct_col]
        lab = triple_barrier(c, atr, pct, settings.labels, costs)
        usable = np.isfinite(atr) & np.isfinite(pct)
        safe = sym.replace("/", "_")
        if want_train:
            m = usable & lab.valid & stride_rows(c.ts, stride) & (c.ts >= start_ms) & (lab.resolved_ts < end_ms)
            idx = np.flatnonzero(m)
            with RowWriter(work_dir / f"{safe}.train.f32", x.shape[1]) as w:
                w.append(x[idx])
                rf = w.close()
            prep.train[sym] = TrainRows(rf, c.ts[idx], lab.ret_net[idx], lab.y[idx], lab.mae[idx], lab.hold[idx],
                                        lab.resolved_ts[idx])  # fmt: skip
            n_train += len(idx)
        if valid_from_ms is not None:
            lo = int(np.searchsorted(c.ts, valid_from_ms, "left"))
            hi = int(np.searchsorted(c.ts, end_ms, "left"))
            with RowWriter(work_dir / f"{safe}.valid.f32", x.shape[1]) as w:
                w.append(x[lo:hi])
                rf = w.close()
            sl = slice(lo, hi)
            prep.valid[sym] = ValidRows(rf, c.ts[sl].copy(), lab.ret_net[sl].copy(), lab.exit_offset[sl].copy(),
                                        lab.hold[sl].copy(), lab.resolved_ts[sl].copy(), lab.valid[sl].copy(),
                                        usable[sl].copy())  # fmt: skip
            n_valid += hi - lo
        if sym in audit_syms:
            prep.lookahead[sym] = lookahead_check(featureset, c, refs, regime, usable, settings.labels.horizon_bars)
        del c, x, lab, atr, pct, usable
        progress.advance("prepare")
    progress.end("prepare")
    del refs
    gc.collect()
    prep.stats = {"train_rows": n_train, "valid_rows": n_valid, "stride": stride}
    if want_train and settings.labels.target == "cross_sectional":
        from models.xs_target import relative_to_cross_section

        prep.stats["cross_sectional"] = relative_to_cross_section(prep.train)
    log.info("train_prepared", symbols=len(symbols), train_rows=n_train, valid_rows=n_valid, stride=stride)
    return prep


def lookahead_check(
    featureset: FeatureSet,
    c: Candles,
    refs: dict[str, Candles],
    regime: Any,
    usable: np.ndarray,
    horizon: int,
    cuts: int = 3,
    ahead: int = 30,
) -> dict[str, Any]:
    """Does any feature at row t change when the bars after t are removed?

    For a few cut rows t, features are computed twice on the same start: on the bars up to and
    including t, and on the bars up to t + `ahead`. Row t must be identical in both (a causal
    feature cannot tell the difference); columns that differ peek into the future.
    """
    ok = np.flatnonzero(usable)
    ok = ok[ok < len(c) - ahead - 1]
    lead = featureset.warmup_bars + 10
    ok = ok[ok >= lead]
    if len(ok) == 0:
        return {"checked_rows": 0, "columns": []}
    picks = np.unique(ok[np.linspace(len(ok) // 2, len(ok) - 1, cuts).astype(int)])
    bad: set[str] = set()
    for t in picks:
        s = int(t - lead)
        t_ts = int(c.ts[t])
        a_ts = int(c.ts[t + ahead])
        start = int(c.ts[s])
        short = featureset.compute(c.slice(s, t + 1), {k: v.between(start, t_ts + MINUTE_MS) for k, v in refs.items()}, regime)[-1]
        long_ = featureset.compute(c.slice(s, t + ahead + 1), {k: v.between(start, a_ts + MINUTE_MS) for k, v in refs.items()}, regime)[t - s]
        both_nan = np.isnan(short) & np.isnan(long_)
        with np.errstate(invalid="ignore"):
            differ = ~both_nan & ~(np.abs(short - long_) <= 1e-6 * (1.0 + np.abs(long_)))
        bad.update(featureset.names[i] for i in np.flatnonzero(differ))
    return {"checked_rows": int(len(picks)), "columns": sorted(bad)}


# --- stage 2: fitting one window ---------------------------------------------------------------


def _lgb_base_params(tcfg: TrainConfig) -> dict[str, Any]:
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


def _dataset_params(tcfg: TrainConfig) -> dict[str, Any]:
    return {"max_bin": tcfg.lightgbm.max_bin, "feature_pre_filter": False, "verbose": -1,
            "data_random_seed": tcfg.seed, "num_threads": tcfg.n_threads}  # fmt: skip


TARGET_OBJECTIVES: dict[str, dict[str, Any]] = {
    "er": {"objective": "regression", "metric": "l2"},
    "q05": {"objective": "quantile", "alpha": 0.05, "metric": "quantile"},
    "e_mae": {"objective": "regression", "metric": "l2"},
    "e_hold": {"objective": "regression", "metric": "l2"},
}


@dataclass
class Selection:
    """Row indices (into each symbol's training row file) of a window's fit and calibration parts."""

    fit: dict[str, np.ndarray]
    calib: dict[str, np.ndarray]
    fit_window: Window
    calib_window: Window

    def n_fit(self) -> int:
        return int(sum(len(v) for v in self.fit.values()))

    def n_calib(self) -> int:
        return int(sum(len(v) for v in self.calib.values()))


def select_rows(prep: Prepared, window: Window, tcfg: TrainConfig, embargo_ms: int) -> Selection:
    """Fit/calibration rows of a window. The calibration part is the last `calib_fraction` of
    the window's *usable* span (from its first warm training row), not of the raw window: the
    feature warm-up would otherwise eat the fit part of a short window."""
    firsts = [int(t.ts[np.searchsorted(t.ts, window.start)]) for t in prep.train.values()
              if np.searchsorted(t.ts, window.start) < len(t.ts)]  # fmt: skip
    usable = Window(max(window.start, min(firsts)), window.end) if firsts and min(firsts) < window.end else window
    fit_w, cal_w = calibration_split(usable, tcfg.calib_fraction, embargo_ms)
    fit: dict[str, np.ndarray] = {}
    cal: dict[str, np.ndarray] = {}
    for sym in prep.symbols:
        t = prep.train[sym]
        fit[sym] = np.flatnonzero(purged_rows(t.ts, t.resolved, fit_w))
        cal[sym] = np.flatnonzero(purged_rows(t.ts, t.resolved, cal_w))
    sel = Selection(fit, cal, fit_w, cal_w)
    if sel.n_fit() < 1000 or sel.n_calib() < 200:
        raise TrainError(
            f"too few training rows in [{_iso(window.start)}, {_iso(window.end)}): {sel.n_fit()} fit, "
            f"{sel.n_calib()} calibration (features need {prep.stats.get('warmup_days', '?')} days of warm-up); "
            "use a longer range, fewer folds or a smaller row_stride"
        )
    return sel


def _labels(prep: Prepared, rows: dict[str, np.ndarray], attr: str) -> np.ndarray:
    return np.concatenate([getattr(prep.train[s], attr)[rows[s]] for s in prep.symbols]).astype(np.float32)


def _target_labels(prep: Prepared, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ret = _labels(prep, rows, "ret")
    return {"er": ret, "q05": ret, "e_mae": _labels(prep, rows, "mae"), "e_hold": _labels(prep, rows, "hold")}


def _subsample(rows: dict[str, np.ndarray], max_rows: int) -> dict[str, np.ndarray]:
    total = sum(len(v) for v in rows.values())
    k = max(1, math.ceil(total / max_rows))
    return {s: v[::k] for s, v in rows.items()}


def _read(prep: Prepared, rows: dict[str, np.ndarray], cols: np.ndarray | None) -> np.ndarray:
    total = sum(len(v) for v in rows.values())
    width = len(prep.names) if cols is None else len(cols)
    out = np.empty((total, width), dtype=np.float32)
    pos = 0
    for s in prep.symbols:
        idx = rows[s]
        if len(idx):
            out[pos : pos + len(idx)] = prep.train[s].rows.read_rows(idx, cols)
            pos += len(idx)
    return out


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def select_features(
    prep: Prepared,
    sel: Selection,
    settings: Settings,
    *,
    cache_dir: Path | None,
) -> tuple[list[str], dict[str, Any]]:
    """Keep the features covering `importance_cum` of the total gain of a quick `er` model."""
    import lightgbm as lgb

    tcfg = settings.train
    params = {**_lgb_base_params(tcfg), "learning_rate": 0.1, "num_leaves": 31}
    key = {
        "symbols": prep.symbols, "fit_window": [sel.fit_window.start, sel.fit_window.end], "names": prep.names,
        "stride": prep.stride, "labels": settings.labels.model_dump(), "costs": settings.costs.model_dump(),
        "params": params, "rounds": SELECTION_ROUNDS, "max_rows": SELECTION_MAX_ROWS, "cum": tcfg.importance_cum,
        "features": settings.features.model_dump(mode="json"),
    }  # fmt: skip
    digest = _hash(key)
    path = None if cache_dir is None else Path(cache_dir) / "feature_selection" / f"{digest}.json"
    if path is not None and path.exists():
        cached = json.loads(path.read_text())
        if cached.get("names") == prep.names:
            return list(cached["selected"]), {"cache": "hit", "key": digest, "kept": len(cached["selected"])}
    rows = _subsample(sel.fit, SELECTION_MAX_ROWS)
    x = _read(prep, rows, None)
    y = _labels(prep, rows, "ret")
    ds = lgb.Dataset(x, y, params=_dataset_params(tcfg), feature_name=prep.names, free_raw_data=True)
    booster = lgb.train(params, ds, num_boost_round=SELECTION_ROUNDS)
    gain = booster.feature_importance("gain").astype(np.float64)
    del ds, x, booster
    total = gain.sum()
    if total <= 0:
        keep = np.arange(len(prep.names))
    else:
        order = np.argsort(-gain, kind="stable")
        cum = np.cumsum(gain[order]) / total
        n = int(np.searchsorted(cum, tcfg.importance_cum, side="left")) + 1
        keep = np.sort(order[: max(1, min(n, int((gain > 0).sum())))])
    selected = [prep.names[i] for i in keep]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"names": prep.names, "selected": selected, "key": key}, default=str))
        tmp.replace(path)
    return selected, {"cache": "miss", "key": digest, "kept": len(selected), "of": len(prep.names)}


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
    labels_fit = labels_fit or _target_labels(prep, sel.fit)
    labels_cal = labels_cal or _target_labels(prep, sel.calib)
    dparams = _dataset_params(tcfg)
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
    rows = _subsample(sel.fit, cp.max_rows)
    n = sum(len(v) for v in rows.values())
    t0 = time.monotonic()
    x = _read(prep, rows, cols)
    y = _labels(prep, rows, "ret")
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


def _scores_on(prep: Prepared, rows: dict[str, np.ndarray], cols: np.ndarray, predictor: Predictor) -> dict[str, np.ndarray]:
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


def fit_window(
    prep: Prepared,
    window: Window,
    settings: Settings,
    work_dir: Path,
    *,
    progress: Progress | None = None,
    optuna_storage: str | None = None,
    cache_dir: Path | None = None,
    key: str = "fit",
) -> tuple[Predictor, dict[str, Any]]:
    """Train every model on [window.start, window.end) (purged); see the module docstring."""
    import lightgbm as lgb

    progress = progress or Progress()
    tcfg = settings.train
    embargo_ms = tcfg.embargo_bars * MINUTE_MS
    t_start = time.monotonic()
    sel = select_rows(prep, window, tcfg, embargo_ms)
    total = 4 * tcfg.lightgbm.num_boost_round + tcfg.catboost.iterations + 2
    if tcfg.optuna_trials:
        total += tcfg.optuna_trials
    progress.begin(key, f"fit {_iso(window.start)[:10]}..{_iso(window.end)[:10]}", total)

    selected, sel_info = select_features(prep, sel, settings, cache_dir=cache_dir)
    progress.advance(key, 1)
    cols = np.array([prep.names.index(f) for f in selected], dtype=np.int64)
    params = _lgb_base_params(tcfg)

    tuner = None
    if tcfg.optuna_trials > 0:
        from models.tuning import study_name, tune_er

        name = study_name({"symbols": prep.symbols, "window": [window.start, window.end], "features": selected,
                           "labels": settings.labels.model_dump(), "costs": settings.costs.model_dump(),
                           "stride": prep.stride})  # fmt: skip

        def tuner(ds_fit: Any, ds_cal: Any, base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            return tune_er(
                ds_fit, ds_cal, base, n_trials=tcfg.optuna_trials, storage=optuna_storage, name=name, seed=tcfg.seed,
                num_boost_round=tcfg.lightgbm.num_boost_round, early_stopping_rounds=tcfg.lightgbm.early_stopping_rounds,
                on_trial=lambda: progress.advance(key, 1),
            )  # fmt: skip

    boosters, lgb_info, params = train_lgb_targets(prep, sel, cols, selected, params, settings, progress=progress,
                                                   key=key, tuner=tuner)  # fmt: skip
    cat, cat_info = train_catboost(prep, sel, cols, selected, settings, work_dir, progress=progress, key=key)

    pred = Predictor(selected, boosters, cat, 1.0, None, tcfg.er_threshold, tcfg.meta_threshold, tcfg.n_threads)
    sc = _scores_on(prep, sel.calib, cols, pred)
    y_cal = _labels(prep, sel.calib, "ret")
    pred.w_lgb = ensemble_weight(sc["er_lgb"], sc["er_cat"], y_cal)
    er = pred.w_lgb * sc["er_lgb"] + (1 - pred.w_lgb) * sc["er_cat"]
    sc["er"] = er

    # meta candidates: the primary's entries (er > threshold), widened to its top
    # (1 - meta_candidate_quantile) share when the threshold alone leaves too few to learn from
    cut = float(np.quantile(er, tcfg.meta_candidate_quantile)) if len(er) else tcfg.er_threshold
    meta_cut = min(tcfg.er_threshold, cut)
    cand = er > meta_cut
    meta_info: dict[str, Any] = {"candidates": int(cand.sum()), "above_er_threshold": int((er > tcfg.er_threshold).sum()),
                                 "candidate_er_cut": meta_cut, "calib_rows": len(er)}  # fmt: skip
    if cand.sum() >= tcfg.meta_min_samples:
        # the candidates' rows, read again (only they are needed as meta inputs)
        offs = np.cumsum([0] + [len(sel.calib[s]) for s in prep.symbols])
        cand_rows = {s: sel.calib[s][cand[offs[i] : offs[i + 1]]] for i, s in enumerate(prep.symbols)}
        x_c = _read(prep, cand_rows, cols)
        sc_c = {k: v[cand] for k, v in sc.items()}
        y_c = (y_cal[cand] > 0).astype(np.float32)
        xm = meta_matrix(x_c, sc_c)
        n = len(xm)
        mparams = {"objective": "binary", "metric": "binary_logloss", "num_leaves": 15, "learning_rate": 0.05,
                   "min_data_in_leaf": max(20, n // 50), "feature_fraction": 0.8, "bagging_fraction": 0.8,
                   "bagging_freq": 1, "lambda_l2": 1.0, "max_bin": tcfg.lightgbm.max_bin, "force_col_wise": True,
                   "deterministic": True, "num_threads": tcfg.n_threads, "seed": tcfg.seed, "verbose": -1}  # fmt: skip
        ds = lgb.Dataset(xm, y_c, params=_dataset_params(tcfg), feature_name=meta_feature_names(selected))
        pred.meta = lgb.train(mparams, ds, num_boost_round=150)
        pred.meta.free_dataset()
        # in-sample for the meta model, so only a diagnostic: how much the gate thins candidates
        p_c = pred.meta.predict(xm, num_threads=tcfg.n_threads)
        del ds, xm, x_c
        meta_info.update({"trained": True, "base_rate": float(y_c.mean()),
                          "passing_gate_in_sample": int((p_c > tcfg.meta_threshold).sum())})  # fmt: skip
    else:
        meta_info.update({"trained": False, "reason": f"{int(cand.sum())} candidates < meta_min_samples {tcfg.meta_min_samples}"})
    progress.advance(key, 1)
    cands = y_cal[cand]
    meta_info["calib_candidates_mean_ret"] = float(cands.mean()) if len(cands) else None
    # win/loss ratio of the meta candidates on the calibration part (risk's Kelly payoff b)
    w, lo = cands[cands > 0], cands[cands <= 0]
    payoff = float(w.mean() / -lo.mean()) if len(w) and len(lo) and lo.mean() < 0 else None
    progress.end(key)
    info = {
        "window": {"start": window.start, "end": window.end},
        "fit_window": {"start": sel.fit_window.start, "end": sel.fit_window.end},
        "calib_window": {"start": sel.calib_window.start, "end": sel.calib_window.end},
        "selection": sel_info,
        "lightgbm": lgb_info,
        "catboost": cat_info,
        "ensemble": {"w_lgb": pred.w_lgb},
        "meta": meta_info,
        "payoff_calib": payoff,
        "params": {k: v for k, v in params.items() if k not in ("num_threads", "verbose")},
        "seconds": round(time.monotonic() - t_start, 1),
    }
    pred.info = info
    return pred, info


# --- stage 3: evaluation of a window -------------------------------------------------------------


@dataclass
class WindowResult:
    report: dict[str, Any]
    results: list[SymbolResult]
    primary: list[SymbolResult]
    signal_rate: float


def evaluate_window(
    prep: Prepared,
    predictor: Predictor,
    window: Window,
    settings: Settings,
    *,
    progress: Progress | None = None,
    key: str = "evaluate",
) -> WindowResult:
    """Simulated trading of `predictor` on [window.start, window.end) (models.simulate).

    This is the single evaluation path: walk-forward folds and `bot evaluate` both call it.
    """
    progress = progress or Progress()
    tcfg = settings.train
    cols = np.array([prep.names.index(f) for f in predictor.features], dtype=np.int64)
    results: list[SymbolResult] = []
    primary: list[SymbolResult] = []
    n_sig = n_rows = 0
    progress.begin(key, f"simulate {_iso(window.start)[:10]}..{_iso(window.end)[:10]}", len(prep.symbols))
    for s in prep.symbols:
        v = prep.valid.get(s)
        if v is None:
            raise TrainError(f"no validation rows prepared for {s}")
        lo = int(np.searchsorted(v.ts, window.start, "left"))
        hi = int(np.searchsorted(v.ts, window.end, "left"))
        sl = slice(lo, hi)
        use = v.usable[sl]
        label_ok = v.labelled[sl] & (v.resolved[sl] < window.end) & use
        er = np.full(hi - lo, np.nan)
        p = np.full(hi - lo, np.nan)
        idx = np.flatnonzero(use) + lo
        if len(idx):
            parts = [predictor.predict(chunk) for chunk in v.rows.iter_rows(idx, cols)]
            er[use] = np.concatenate([q["er"] for q in parts])
            p[use] = np.concatenate([q["p"] for q in parts])
        # the one entry rule (models.rules), with and without the meta gate
        sig = EntryRule.from_predictor(predictor).mask(er, p) & label_ok
        prim = EntryRule.from_predictor(predictor, use_meta=False).mask(er) & label_ok
        with np.errstate(invalid="ignore"):
            seed_mask = (er > tcfg.seed_metric_threshold) & label_ok
        ts, ret, off, hold = v.ts[sl], v.ret[sl], v.exit_offset[sl], v.hold[sl]
        results.append(SymbolResult(s, take_trades(sig, ts, ret, off, hold), ret[seed_mask].astype(np.float64)))
        primary.append(SymbolResult(s, take_trades(prim, ts, ret, off, hold)))
        n_sig += int(sig.sum())
        n_rows += int(label_ok.sum())
        progress.advance(key)
    progress.end(key)
    rep = report(results, window)
    rep["primary_only"] = report(primary, window)["overall"]
    rep["signal_rate"] = n_sig / n_rows if n_rows else 0.0
    return WindowResult(rep, results, primary, rep["signal_rate"])


def combine(results: list[list[SymbolResult]], primary: list[list[SymbolResult]], window: Window) -> dict[str, Any]:
    """One report over several (non-overlapping) validation blocks: trades pooled per symbol."""
    by_sym: dict[str, list[SymbolResult]] = {}
    for rs in results:
        for r in rs:
            by_sym.setdefault(r.symbol, []).append(r)
    merged = [_merge(s, rs) for s, rs in by_sym.items()]
    by_sym_p: dict[str, list[SymbolResult]] = {}
    for rs in primary:
        for r in rs:
            by_sym_p.setdefault(r.symbol, []).append(r)
    rep = report(merged, window)
    rep["primary_only"] = report([_merge(s, rs) for s, rs in by_sym_p.items()], window)["overall"]
    return rep


def _merge(symbol: str, parts: list[SymbolResult]) -> SymbolResult:
    from models.simulate import Trades

    cat = lambda f: np.concatenate([getattr(p.trades, f) for p in parts])  # noqa: E731
    t = Trades(cat("rows"), cat("exit_rows"), cat("entry_ts"), cat("exit_ts"), cat("ret"), cat("hold"))
    return SymbolResult(symbol, t, np.concatenate([p.seed_ret for p in parts]))


# --- the whole run -------------------------------------------------------------------------------


@dataclass
class TrainRun:
    """Everything a bundle is made of."""

    predictor: Predictor
    fit_info: dict[str, Any]
    regime: Any
    walk_forward: dict[str, Any]
    audit: dict[str, Any]
    symbols: list[str]
    start: int
    end: int
    settings: Settings
    feature_names: list[str]
    stats: dict[str, Any]


def check_settings(settings: Settings) -> None:
    if settings.train.embargo_bars < settings.labels.horizon_bars:
        raise TrainError(
            f"train.embargo_bars ({settings.train.embargo_bars}) must be >= labels.horizon_bars "
            f"({settings.labels.horizon_bars}): the embargo has to cover a whole label horizon"
        )


def run_training(
    source: CandleSource,
    symbols: Sequence[str],
    settings: Settings,
    *,
    start_ms: int,
    end_ms: int,
    work_dir: Path,
    featureset: FeatureSet | None = None,
    progress: Progress | None = None,
    optuna_storage: str | None = None,
    cache_dir: Path | None = None,
    keep_work: bool = False,
) -> TrainRun:
    """Walk-forward report + leakage audit + the final fit on [start_ms, end_ms)."""
    progress = progress or Progress()
    check_settings(settings)
    symbols = list(dict.fromkeys(symbols))
    if not symbols:
        raise TrainError("no symbols to train on")
    featureset = featureset or FeatureSet(settings.features)
    tcfg = settings.train
    embargo_ms = tcfg.embargo_bars * MINUTE_MS
    data = Window(start_ms, end_ms)
    try:
        folds = walk_forward(data, folds=tcfg.folds, fold_days=tcfg.fold_days, embargo_ms=embargo_ms,
                             min_train_days=tcfg.regime_fit_days)  # fmt: skip
    except SplitError as e:
        raise TrainError(str(e)) from None
    work_dir = Path(work_dir)
    if work_dir.exists() and any(work_dir.iterdir()):
        raise TrainError(f"work dir {work_dir} is not empty; use a fresh one")
    t0 = time.monotonic()
    try:
        prep = prepare(
            source, symbols, settings, featureset, work_dir, start_ms=start_ms, end_ms=end_ms,
            valid_from_ms=folds[0].valid.start if folds else None, want_train=True,
            audit_lookahead=tcfg.audit, progress=progress,
        )  # fmt: skip
        prep.stats["warmup_days"] = round(featureset.warmup_bars / 1440, 2)
        fold_reports: list[dict[str, Any]] = []
        all_res, all_prim = [], []
        last: tuple[Fold, Predictor, WindowResult] | None = None
        for f in folds:
            pred, info = fit_window(prep, f.train, settings, work_dir, progress=progress, optuna_storage=optuna_storage,
                                    cache_dir=cache_dir, key=f"fold{f.index}")  # fmt: skip
            res = evaluate_window(prep, pred, f.valid, settings, progress=progress, key=f"eval{f.index}")
            fold_reports.append({"fold": f.to_dict(), "fit": info, **res.report})
            all_res.append(res.results)
            all_prim.append(res.primary)
            last = (f, pred, res)
            progress.message(_fold_line(f, res.report))
        wf: dict[str, Any] = {"folds": fold_reports}
        if folds:
            wf["all"] = combine(all_res, all_prim, Window(folds[0].valid.start, folds[-1].valid.end))

        audit: dict[str, Any] = {"enabled": tcfg.audit}
        if tcfg.audit:
            from models.audit import permuted_label_check

            la = {s: v for s, v in prep.lookahead.items()}
            cols = sorted({c for v in la.values() for c in v["columns"]})
            audit["lookahead"] = {"symbols": la, "columns": cols}
            reasons = [f"features change when later bars are removed (look-ahead): {cols}"] if cols else []
            if last is not None:
                f, pred, res = last
                perm = permuted_label_check(prep, f, pred, res.signal_rate, settings, work_dir, progress=progress)
                audit["permuted"] = perm
                if perm.get("flagged"):
                    reasons.append(perm["reason"])
            audit["passed"] = not reasons
            audit["reasons"] = reasons

        pred, info = fit_window(prep, data, settings, work_dir, progress=progress, optuna_storage=optuna_storage,
                                cache_dir=cache_dir, key="final")  # fmt: skip
        stats = {**prep.stats, "seconds": round(time.monotonic() - t0, 1)}
        return TrainRun(pred, info, prep.regime, wf, audit, symbols, start_ms, end_ms, settings, prep.names, stats)
    finally:
        if not keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)


def _fold_line(f: Fold, rep: dict[str, Any]) -> str:
    o = rep["overall"]
    pf = "-" if o["profit_factor"] is None else f"{o['profit_factor']:.2f}"
    ex = "-" if o["expectancy"] is None else f"{o['expectancy'] * 100:+.3f}%"
    return f"fold {f.index}: {o['trades']} trades, PF {pf}, expectancy {ex}"


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
