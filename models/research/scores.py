"""A fold's out-of-sample scores, one row per symbol-minute of its validation block.

Training is the expensive part of a configuration; the entry-rule levers (cadence, thresholds,
cross-section rank, meta gate, regime) only change which of these rows become trades. So a
trained variant is reduced to this table -- what `models.training.run.evaluate_window` sees -- and
saved (npz), and every entry rule is judged on it without training again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bundle.predictor import Predictor
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
    off: np.ndarray  # int32 rows to the exit
    hold: np.ndarray  # float32 minutes held
    ok: np.ndarray  # bool: label known inside the window and features warm
    regime: np.ndarray  # int8 argmax regime state (-1 unknown)

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
        return FoldScores(self.window, [self.symbols[i] for i in keep], self.has_meta, remap[self.sym[pick]], self.ts[pick],
                          self.er[pick], self.p[pick], self.ret[pick], self.off[pick], self.hold[pick], self.ok[pick],
                          self.regime[pick])  # fmt: skip

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, window=np.array([self.window.start, self.window.end]), symbols=np.array(self.symbols),
                 has_meta=np.array(self.has_meta), sym=self.sym, ts=self.ts, er=self.er, p=self.p, ret=self.ret,
                 off=self.off, hold=self.hold, ok=self.ok, regime=self.regime)  # fmt: skip
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> FoldScores:
        with np.load(path) as z:
            w = z["window"]
            return FoldScores(Window(int(w[0]), int(w[1])), [str(s) for s in z["symbols"]], bool(z["has_meta"]),
                              z["sym"], z["ts"], z["er"], z["p"], z["ret"], z["off"], z["hold"], z["ok"],
                              z["regime"])  # fmt: skip


def fold_scores(prep: object, predictor: Predictor, window: Window) -> FoldScores:
    """Score every validation row of `window` (the same rows and masks as `evaluate_window`)."""
    cols = np.array([prep.names.index(f) for f in predictor.features], dtype=np.int64)  # type: ignore[attr-defined]
    rcols = np.array([prep.names.index(c) for c in REGIME_COLS if c in prep.names], dtype=np.int64)  # type: ignore[attr-defined]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sym", "ts", "er", "p", "ret", "off", "hold", "ok", "regime")}
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
        parts["off"].append(v.exit_offset[sl].astype(np.int32))
        parts["hold"].append(v.hold[sl].astype(np.float32))
        parts["ok"].append(v.labelled[sl] & (v.resolved[sl] < window.end) & use)
        parts["regime"].append(reg)
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    return FoldScores(window, symbols, predictor.meta is not None, **cat)
