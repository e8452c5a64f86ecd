"""Simulated trading of a predictor on one validation window: the single evaluation path.

Walk-forward folds, the leakage audit and `bot evaluate` all call `evaluate_window`; `combine`
pools several validation blocks into one report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bundle.predictor import Predictor
from models.config import Settings
from models.evaluation.trade_sim import SymbolResult, Trades, report, take_trades
from models.progress import Progress
from models.timeutil import fmt_date
from models.trading.rules import EntryRule
from models.training.prepare import Prepared, TrainError
from models.training.splits import Window


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
    """Simulated trading of `predictor` on [window.start, window.end) (models.evaluation.trade_sim).

    This is the single evaluation path: walk-forward folds and `bot evaluate` both call it.
    """
    progress = progress or Progress()
    tcfg = settings.train
    cols = np.array([prep.names.index(f) for f in predictor.features], dtype=np.int64)
    results: list[SymbolResult] = []
    primary: list[SymbolResult] = []
    n_sig = n_rows = 0
    progress.begin(key, f"simulate {fmt_date(window.start)}..{fmt_date(window.end)}", len(prep.symbols))
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
        # the one entry rule (models.trading.rules), with and without the meta gate
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

    cat = lambda f: np.concatenate([getattr(p.trades, f) for p in parts])  # noqa: E731
    t = Trades(cat("rows"), cat("exit_rows"), cat("entry_ts"), cat("exit_ts"), cat("ret"), cat("hold"))
    return SymbolResult(symbol, t, np.concatenate([p.seed_ret for p in parts]))
