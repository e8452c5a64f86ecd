"""Which training rows a window fits on and calibrates on, and reading them back.

A window [start, end) is split in time into a fit part and a calibration part an embargo
later (`models.training.splits.calibration_split`); rows are purged so that no label resolves at or
after the end of its part. Everything "fitted on validation" (early stopping, the ensemble
weight, the meta model) uses the calibration part, out of sample for the primary models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.config import TrainConfig
from models.timeutil import fmt_ts
from models.training.prepare import Prepared, TrainError
from models.training.splits import Window, calibration_split, purged_rows


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
            f"too few training rows in [{fmt_ts(window.start)}, {fmt_ts(window.end)}): {sel.n_fit()} fit, "
            f"{sel.n_calib()} calibration (features need {prep.stats.get('warmup_days', '?')} days of warm-up); "
            "use a longer range, fewer folds or a smaller row_stride"
        )
    return sel


def row_labels(prep: Prepared, rows: dict[str, np.ndarray], attr: str) -> np.ndarray:
    return np.concatenate([getattr(prep.train[s], attr)[rows[s]] for s in prep.symbols]).astype(np.float32)


def target_labels(prep: Prepared, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ret = row_labels(prep, rows, "ret")
    return {"er": ret, "q05": ret, "e_mae": row_labels(prep, rows, "mae"), "e_hold": row_labels(prep, rows, "hold")}


def subsample(rows: dict[str, np.ndarray], max_rows: int) -> dict[str, np.ndarray]:
    total = sum(len(v) for v in rows.values())
    k = max(1, math.ceil(total / max_rows))
    return {s: v[::k] for s, v in rows.items()}


def read_rows(prep: Prepared, rows: dict[str, np.ndarray], cols: np.ndarray | None) -> np.ndarray:
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
