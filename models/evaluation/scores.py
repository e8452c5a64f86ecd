"""A validation block's out-of-sample scores, one row per symbol-minute (decision minute).

The one simulation (`models.evaluation.trade_sim.simulate`) runs on this table: scoring is
the expensive part, the entry rule (thresholds, cadence, cross-section rank, trailing quantile,
meta gate, regime) only decides which rows become trades. The walk-forward folds and `bot
evaluate` build it from prepared rows (`fold_scores`); the research runner saves it (npz) per
trained variant and fold and judges every entry rule of a grid on it without training again.

Rows are every minute of the block, or only the decision minutes when the rows were prepared
on a decision cadence (`models.training.prepare.prepare(valid_cadence=...)`); a trade's exit is
a time (`exit_ts`), so a slot frees correctly either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.training.splits import Window

REGIME_COLS = ("regime_p0", "regime_p1", "regime_p2")


@dataclass
class FoldScores:
    """Rows of all symbols, symbol-major, ts ascending within a symbol (every row of the block)."""

    window: Window
    symbols: list[str]
    has_meta: bool
    sym: np.ndarray  # int16: index into symbols
    ts: np.ndarray  # int64
    er: np.ndarray  # float32, NaN where features are not warm
    p: np.ndarray  # float32 meta probability (NaN: no meta model)
    ret: np.ndarray  # float32 net return of the label trade (absolute, costs in)
    exit_ts: np.ndarray  # int64 open time of the label trade's exit bar
    hold: np.ndarray  # float32 minutes held
    ok: np.ndarray  # bool: label known inside the window and features warm (may become a trade)
    regime: np.ndarray  # int8 argmax regime state (-1 unknown)
    scored: np.ndarray  # bool: a real candle with warm features and valid barriers (ranked, and
    #                     counted in the trailing score distribution, label or not)

    FIELDS = ("sym", "ts", "er", "p", "ret", "exit_ts", "hold", "ok", "regime", "scored")

    def bounds(self) -> list[tuple[int, int]]:
        """(lo, hi) row range of each symbol."""
        edges = np.searchsorted(self.sym, np.arange(len(self.symbols) + 1), "left")
        return [(int(edges[i]), int(edges[i + 1])) for i in range(len(self.symbols))]

    def subset(self, symbols: list[str]) -> FoldScores:
        """Only the rows of `symbols` (those present), e.g. trading the 30 symbols of a model trained on 86."""
        keep = [self.symbols.index(s) for s in symbols if s in self.symbols]
        remap = np.full(len(self.symbols), -1, np.int16)
        remap[keep] = np.arange(len(keep), dtype=np.int16)
        m = remap[self.sym] >= 0
        order = np.argsort(remap[self.sym[m]], kind="stable")
        pick = np.flatnonzero(m)[order]
        cols = {k: getattr(self, k)[pick] for k in self.FIELDS}
        cols["sym"] = remap[self.sym[pick]]
        return FoldScores(self.window, [self.symbols[i] for i in keep], self.has_meta, **cols)

    def replace(self, **cols: np.ndarray) -> FoldScores:
        """The same rows with some columns replaced (e.g. the returns repriced under other costs)."""
        return FoldScores(self.window, self.symbols, self.has_meta, **{k: cols.get(k, getattr(self, k)) for k in self.FIELDS})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, window=np.array([self.window.start, self.window.end]), symbols=np.array(self.symbols),
                 has_meta=np.array(self.has_meta), **{k: getattr(self, k) for k in self.FIELDS})  # fmt: skip
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> FoldScores:
        with np.load(path) as z:
            w = z["window"]
            return FoldScores(Window(int(w[0]), int(w[1])), [str(s) for s in z["symbols"]], bool(z["has_meta"]),
                              **{k: z[k] for k in FoldScores.FIELDS})  # fmt: skip


def fold_scores(prep: object, predictor: Any, window: Window) -> FoldScores:
    """Score every prepared validation row of `window` (any object with the `Predictor.predict`
    interface: the leakage audit passes a lone booster)."""
    cols = np.array([prep.names.index(f) for f in predictor.features], dtype=np.int64)  # type: ignore[attr-defined]
    rcols = np.array([prep.names.index(c) for c in REGIME_COLS if c in prep.names], dtype=np.int64)  # type: ignore[attr-defined]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FoldScores.FIELDS}
    symbols = list(prep.symbols)  # type: ignore[attr-defined]
    for i, s in enumerate(symbols):
        v = prep.valid[s]  # type: ignore[attr-defined]
        lo = int(np.searchsorted(v.ts, window.start, "left"))
        hi = int(np.searchsorted(v.ts, window.end, "left"))
        sl = slice(lo, hi)
        use = v.usable[sl]
        n = hi - lo
        er = np.full(n, np.nan, np.float32)
        p = np.full(n, np.nan, np.float32)
        reg = np.full(n, -1, np.int8)
        idx = np.flatnonzero(use) + lo
        if len(idx):
            out = [predictor.predict(chunk) for chunk in v.rows.iter_rows(idx, cols)]
            er[use] = np.concatenate([q["er"] for q in out])
            p[use] = np.concatenate([q["p"] for q in out])
            if len(rcols):
                probs = np.concatenate(list(v.rows.iter_rows(idx, rcols)))
                good = np.isfinite(probs).all(axis=1)
                r = np.full(len(idx), -1, np.int8)
                r[good] = np.argmax(probs[good], axis=1)
                reg[use] = r
        parts["sym"].append(np.full(n, i, np.int16))
        parts["ts"].append(v.ts[sl].astype(np.int64))
        parts["er"].append(er)
        parts["p"].append(p)
        parts["ret"].append(v.ret[sl].astype(np.float32))
        parts["exit_ts"].append(v.exit_ts[sl].astype(np.int64))
        parts["hold"].append(v.hold[sl].astype(np.float32))
        parts["ok"].append(v.labelled[sl] & (v.resolved[sl] < window.end) & use)
        parts["regime"].append(reg)
        parts["scored"].append(use & np.isfinite(er))
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    return FoldScores(window, symbols, getattr(predictor, "meta", None) is not None, **cat)
