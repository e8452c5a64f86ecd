"""The meta model of one window: should the primary's entry be taken?

A LightGBM classifier of `ret_net > 0` on the calibration part's candidates (ensemble er >
threshold, widened to the top `1 - meta_candidate_quantile` of er when the threshold alone
leaves too few rows), from the features plus the primary predictions -- out-of-sample
predictions only: the primary models were fitted on the fit part, and are not refitted on the
whole window afterwards, because the meta model must see the same models it will gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bundle.predictor import meta_feature_names, meta_matrix
from models.config import TrainConfig
from models.training.boosters import dataset_params
from models.training.prepare import Prepared
from models.training.window_rows import Selection, read_rows


@dataclass
class MetaFit:
    """The meta booster (None when there were too few candidates), its diagnostics, and the
    candidates' win/loss ratio on the calibration part (risk's Kelly payoff b; None if undefined)."""

    model: Any
    info: dict[str, Any]
    payoff: float | None


def fit_meta(
    prep: Prepared,
    sel: Selection,
    cols: np.ndarray,
    selected: list[str],
    sc: dict[str, np.ndarray],
    y_cal: np.ndarray,
    tcfg: TrainConfig,
) -> MetaFit:
    """Train the meta model on the calibration candidates. `sc` holds the primary scores on
    the calibration rows (with the ensemble `er`), `y_cal` their net returns."""
    import lightgbm as lgb

    er = sc["er"]
    model = None
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
        x_c = read_rows(prep, cand_rows, cols)
        sc_c = {k: v[cand] for k, v in sc.items()}
        y_c = (y_cal[cand] > 0).astype(np.float32)
        xm = meta_matrix(x_c, sc_c)
        n = len(xm)
        mparams = {"objective": "binary", "metric": "binary_logloss", "num_leaves": 15, "learning_rate": 0.05,
                   "min_data_in_leaf": max(20, n // 50), "feature_fraction": 0.8, "bagging_fraction": 0.8,
                   "bagging_freq": 1, "lambda_l2": 1.0, "max_bin": tcfg.lightgbm.max_bin, "force_col_wise": True,
                   "deterministic": True, "num_threads": tcfg.n_threads, "seed": tcfg.seed, "verbose": -1}  # fmt: skip
        ds = lgb.Dataset(xm, y_c, params=dataset_params(tcfg), feature_name=meta_feature_names(selected))
        model = lgb.train(mparams, ds, num_boost_round=150)
        model.free_dataset()
        # in-sample for the meta model, so only a diagnostic: how much the gate thins candidates
        p_c = model.predict(xm, num_threads=tcfg.n_threads)
        del ds, xm, x_c
        meta_info.update({"trained": True, "base_rate": float(y_c.mean()),
                          "passing_gate_in_sample": int((p_c > tcfg.meta_threshold).sum())})  # fmt: skip
    else:
        meta_info.update({"trained": False, "reason": f"{int(cand.sum())} candidates < meta_min_samples {tcfg.meta_min_samples}"})
    cands = y_cal[cand]
    meta_info["calib_candidates_mean_ret"] = float(cands.mean()) if len(cands) else None
    # win/loss ratio of the meta candidates on the calibration part (risk's Kelly payoff b)
    w, lo = cands[cands > 0], cands[cands <= 0]
    payoff = float(w.mean() / -lo.mean()) if len(w) and len(lo) and lo.mean() < 0 else None
    return MetaFit(model, meta_info, payoff)
