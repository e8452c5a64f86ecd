"""Simulated trading of a predictor on one validation window: the single evaluation path.

Walk-forward folds, the leakage audit and `bot evaluate` all call `evaluate_window`; `combine`
pools several validation blocks into one report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bundle.predictor import Predictor
from models.config import Settings
from models.evaluation.scores import fold_scores
from models.evaluation.trade_sim import SymbolResult, Trades, report, signal_mask, symbol_results
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
    rule: EntryRule | None = None,
    progress: Progress | None = None,
    key: str = "evaluate",
) -> WindowResult:
    """Simulated trading of `predictor` on [window.start, window.end) with `rule` (default: the
    predictor's own thresholds, `EntryRule.from_predictor`), by the one simulation
    (`models.evaluation.trade_sim.simulate` on the window's `fold_scores`). `primary_only` is
    the same rule without the meta gate."""
    progress = progress or Progress()
    missing = [s for s in prep.symbols if s not in prep.valid]
    if missing:
        raise TrainError(f"no validation rows prepared for {', '.join(missing)}")
    progress.begin(key, f"simulate {fmt_date(window.start)}..{fmt_date(window.end)}", 1)
    fs = fold_scores(prep, predictor, window)
    rule = rule or EntryRule.from_predictor(predictor)
    sig = signal_mask(fs, rule)
    results = symbol_results(fs, sig, settings.train.seed_metric_threshold)
    primary = symbol_results(fs, signal_mask(fs, dataclasses.replace(rule, p_threshold=None)))
    progress.advance(key)
    progress.end(key)
    rep = report(results, window)
    rep["primary_only"] = report(primary, window)["overall"]
    n_ok = int(fs.ok.sum())
    rep["signal_rate"] = float(sig.sum() / n_ok) if n_ok else 0.0
    rep["entry_rule"] = rule.describe()
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
    t = Trades(cat("rows"), cat("entry_ts"), cat("exit_ts"), cat("ret"), cat("hold"))
    return SymbolResult(symbol, t, np.concatenate([p.seed_ret for p in parts]))
