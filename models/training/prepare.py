"""Stage 1 of training: features and labels per symbol to disk, one symbol at a time.

Memory is bounded by one symbol, never by all symbols' raw rows: load candles, compute the
float32 feature matrix and the labels, write the rows the trainer will use to a raw float32
file in the work directory, keep only small label arrays in memory, drop the rest.

- Training rows are 1 minute in `row_stride` (aligned on the minute of ts, so two runs over
  different ranges pick the same rows). Why: a 60-minute label overlaps 59 of its
  neighbours', so adjacent 1m rows are near-duplicates in both features and target; 1 row in
  5 keeps 12 samples per label horizon and cuts memory and time 5x. If the rows would still
  exceed `max_train_rows` the stride grows (logged), which is what lets 30 symbols x 365
  days fit the 2.5 GB budget.
- Validation rows (every minute from the first walk-forward validation block on) are kept
  in full: the trading simulation decides on every bar -- unless the decisions are on a
  cadence (`valid_cadence`: e.g. 60 = only bars closing an hour), then only those rows are
  kept and scored: a year of hourly decisions is 8,760 rows a symbol instead of 525,600.
- `lookahead_check` (the audit's look-ahead half) runs here, on the candles already loaded.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from models.candles import Candles, CandleSource
from models.config import Settings, TrainConfig
from models.labels.triple_barrier import NO_TS, triple_barrier
from models.progress import Progress
from models.timeutil import DAY_MS, MINUTE_MS
from models.trading.costs import Costs
from models.trading.rules import entry_fractions, on_cadence
from models.training.dataset import RowFile, RowWriter
from models.training.featureset import FeatureSet
from models.training.splits import stride_rows

log = structlog.get_logger("models.training.run")


class TrainError(Exception):
    """Training cannot proceed; the message says what is missing or inconsistent."""


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
    """One symbol's rows from the first validation minute on (every minute, or the decision
    minutes of a cadence): what the simulation needs."""

    rows: RowFile
    ts: np.ndarray
    ret: np.ndarray
    exit_ts: np.ndarray  # open time of the label trade's exit bar (NO_TS without a label)
    hold: np.ndarray
    resolved: np.ndarray
    labelled: np.ndarray  # bool: a label exists
    usable: np.ndarray  # bool: features are warm and the bar's barriers are valid


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
    valid_cadence: int = 1,
) -> Prepared:
    """Stage 1 (see the module docstring). `regime="fit"` fits it on the first
    `regime_fit_days` of [start_ms, end_ms); otherwise pass a fitted model (or None).
    `valid_cadence`: keep only validation rows of bars closing a period of that many minutes."""
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
        # what the engine may rank and enter: warm features and valid barriers (the label's own
        # setup conditions; whether the next minute exists is the label's business)
        usable = np.isfinite(atr) & np.isfinite(pct) & entry_fractions(atr, pct, settings.labels)[2]
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
            sl = np.arange(lo, hi)
            if valid_cadence > 1:
                sl = sl[on_cadence(c.ts[sl], valid_cadence)]
            with RowWriter(work_dir / f"{safe}.valid.f32", x.shape[1]) as w:
                w.append(x[sl])
                rf = w.close()
            exit_ts = np.where(lab.valid[sl], c.ts[np.minimum(sl + lab.exit_offset[sl], len(c) - 1)], NO_TS)
            prep.valid[sym] = ValidRows(rf, c.ts[sl], lab.ret_net[sl], exit_ts.astype(np.int64), lab.hold[sl],
                                        lab.resolved_ts[sl], lab.valid[sl], usable[sl])  # fmt: skip
            n_valid += len(sl)
        if sym in audit_syms:
            prep.lookahead[sym] = lookahead_check(featureset, c, refs, regime, usable, settings.labels.horizon_bars)
        del c, x, lab, atr, pct, usable
        progress.advance("prepare")
    progress.end("prepare")
    del refs
    gc.collect()
    prep.stats = {"train_rows": n_train, "valid_rows": n_valid, "stride": stride, "valid_cadence": valid_cadence}
    if want_train and settings.labels.target == "cross_sectional":
        from models.labels.cross_section import relative_to_cross_section

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
