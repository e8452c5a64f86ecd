"""The batch trainer's orchestration: one window's fit, and the whole run.

A run is: prepare the data (`models.training.prepare`: features + labels per symbol to disk, memory
bounded by one symbol), then walk-forward folds (fit + simulated trading on each validation
block, `models.evaluation.window`), the leakage audit (`models.evaluation.leakage_audit`), and the final fit on the
whole range, which becomes the bundle.

`fit_window` trains on one window [start, end) using rows with `resolved_ts < end` (purged):
- the window is split in time into a fit part and a calibration part an embargo later
  (`models.training.window_rows`); everything "fitted on validation" (early stopping, the
  LightGBM/CatBoost ensemble weight, the meta model) uses the calibration part, which is out
  of sample for the primary models. The primary models are *not* refitted on the whole
  window afterwards: the meta model must see the same models it will gate.
- feature selection (`models.training.feature_selection`), cached on disk;
- optional Optuna on `er` (`models.training.tuning`), best params reused for the other targets;
- LightGBM er / q05 / e_mae / e_hold and CatBoost er, and their ensemble weight
  (`models.training.boosters`);
- the meta model (`models.training.meta`).

`Settings`, `CandleSource`, `TrainError`, `prepare` and `evaluate_window` are importable from
here too (their homes are `models.config`, `models.candles`, `models.training.prepare` and
`models.evaluation.window`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle.predictor import Predictor
from models.candles import CandleSource
from models.config import Settings
from models.evaluation.leakage_audit import permuted_label_check
from models.evaluation.window import WindowResult, combine, evaluate_window
from models.progress import Progress
from models.timeutil import DAY_MS, MINUTE_MS, fmt_date
from models.training.boosters import (
    ensemble_weight,
    lgb_base_params,
    scores_on,
    train_catboost,
    train_lgb_targets,
)
from models.training.feature_selection import select_features
from models.training.featureset import FeatureSet
from models.training.meta import fit_meta
from models.training.prepare import Prepared, TrainError, prepare
from models.training.splits import Fold, SplitError, Window, walk_forward
from models.training.window_rows import row_labels, select_rows

__all__ = [
    "CandleSource",
    "Settings",
    "TrainError",
    "TrainRun",
    "check_settings",
    "evaluate_window",
    "fit_window",
    "prepare",
    "run_training",
]


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
    progress = progress or Progress()
    tcfg = settings.train
    embargo_ms = tcfg.embargo_bars * MINUTE_MS
    t_start = time.monotonic()
    sel = select_rows(prep, window, tcfg, embargo_ms)
    total = 4 * tcfg.lightgbm.num_boost_round + tcfg.catboost.iterations + 2
    if tcfg.optuna_trials:
        total += tcfg.optuna_trials
    progress.begin(key, f"fit {fmt_date(window.start)}..{fmt_date(window.end)}", total)

    selected, sel_info = select_features(prep, sel, settings, cache_dir=cache_dir)
    progress.advance(key, 1)
    cols = np.array([prep.names.index(f) for f in selected], dtype=np.int64)
    params = lgb_base_params(tcfg)

    tuner = None
    if tcfg.optuna_trials > 0:
        from models.training.tuning import study_name, tune_er

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
    sc = scores_on(prep, sel.calib, cols, pred)
    y_cal = row_labels(prep, sel.calib, "ret")
    pred.w_lgb = ensemble_weight(sc["er_lgb"], sc["er_cat"], y_cal)
    er = pred.w_lgb * sc["er_lgb"] + (1 - pred.w_lgb) * sc["er_cat"]
    sc["er"] = er

    meta = fit_meta(prep, sel, cols, selected, sc, y_cal, tcfg)
    pred.meta = meta.model
    meta_info, payoff = meta.info, meta.payoff
    progress.advance(key, 1)
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
        prep.stats["warmup_days"] = round(featureset.warmup_bars * MINUTE_MS / DAY_MS, 2)
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
