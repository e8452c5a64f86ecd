"""Leakage audit, run inside every training: permuted labels must not trade profitably.

Two checks, both reported in the bundle (`audit`), either one failing marks the bundle rejected:

1. **Permuted labels** (this module). The `er` model is retrained on the last walk-forward
   fold with its labels shuffled within time blocks (`audit_block_bars` per symbol): each
   block keeps its own label distribution (so slow drifts in the level of returns survive),
   but the link between a row's features and its own outcome is gone. Judged by the very same
   simulation on the fold's validation block, such a model must come out near PF 1 (a little
   below after costs). If it trades well, the pipeline is leaking -- e.g. training rows whose
   labels overlap the validation block, or a simulation reading data it should not -- because
   only then can block-level memorisation carry over. Two variants: at the real `er`
   threshold (a permuted model rarely clears it), and on its top-q predictions with q the
   real model's signal rate (same number of trades, the decisive one).
2. **Look-ahead in features** (`models.training.prepare.lookahead_check`, run while preparing the data):
   features at a few cut rows t are recomputed without the bars after t; any column that
   changes peeks into the future. A deliberately leaky column (e.g. the next bar's return)
   is caught there: a permutation test alone would not see it, since its model never learns
   from the real labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.config import Settings
from models.evaluation.window import evaluate_window
from models.progress import Progress
from models.timeutil import MINUTE_MS
from models.training.boosters import train_lgb_targets
from models.training.prepare import Prepared
from models.training.splits import Fold
from models.training.window_rows import select_rows


@dataclass
class _ErOnly:
    """The slice of the `Predictor` interface the simulation uses, for a lone `er` booster."""

    features: list[str]
    booster: Any
    er_threshold: float
    threads: int
    meta: Any = None
    meta_threshold: float = 0.5

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        er = self.booster.predict(x, num_threads=self.threads)
        return {"er": er, "p": np.full(len(er), np.nan)}


def permute_within_blocks(values: np.ndarray, ts: np.ndarray, block_ms: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle `values` among the rows sharing a time block (ts // block_ms)."""
    out = values.copy()
    blocks = ts // block_ms
    if len(blocks) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ends = np.r_[starts[1:], len(blocks)]
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:
            out[s:e] = values[s:e][rng.permutation(e - s)]
    return out


def permuted_label_check(
    prep: Prepared,
    fold: Fold,
    real: Any,
    real_signal_rate: float,
    settings: Settings,
    work_dir: Path,
    *,
    progress: Progress | None = None,
    valid_prep: Prepared | None = None,
) -> dict[str, Any]:
    """Check 1 of the module docstring on `fold`, with the real model's features and params.
    `valid_prep`: the validation block's rows when they were prepared apart from the training
    rows (the research runner's outer block); default `prep`."""
    progress = progress or Progress()
    vprep = valid_prep or prep
    tcfg = settings.train
    sel = select_rows(prep, fold.train, tcfg, tcfg.embargo_bars * MINUTE_MS)
    rng = np.random.default_rng(tcfg.seed + 7919)
    block = tcfg.audit_block_bars * MINUTE_MS

    def permuted(rows: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for s in prep.symbols:
            t = prep.train[s]
            idx = rows[s]
            parts.append(permute_within_blocks(t.ret[idx], t.ts[idx], block, rng))
        return np.concatenate(parts).astype(np.float32)

    cols = np.array([prep.names.index(f) for f in real.features], dtype=np.int64)
    params = {**real.info.get("params", {}), "num_threads": tcfg.n_threads, "verbose": -1}
    # as many rounds as the real er model (at least 50), no early stopping: on shuffled labels
    # early stopping would halt after a round or two and leave a constant, untradeable model
    rounds = max(50, int(real.info.get("lightgbm", {}).get("er", {}).get("rounds") or 0))
    progress.begin("audit", "leakage audit (permuted labels)", rounds)
    boosters, info, _ = train_lgb_targets(
        prep, sel, cols, list(real.features), params, settings, targets=("er",),
        labels_fit={"er": permuted(sel.fit)}, labels_cal={"er": permuted(sel.calib)}, progress=progress, key="audit",
        fixed_rounds=rounds,
    )  # fmt: skip
    progress.end("audit")
    model = _ErOnly(list(real.features), boosters["er"], real.er_threshold, tcfg.n_threads)
    at_threshold = evaluate_window(vprep, model, fold.valid, settings, key="audit_eval").report

    # the same number of trades as the real model: enter on the permuted model's top-q rows
    q = float(np.clip(real_signal_rate, 0.005, 0.2)) if real_signal_rate > 0 else 0.05
    er_all = []
    for s in vprep.symbols:
        v = vprep.valid[s]
        lo, hi = np.searchsorted(v.ts, [fold.valid.start, fold.valid.end])
        use = np.flatnonzero(v.usable[lo:hi] & v.labelled[lo:hi]) + lo
        for chunk in v.rows.iter_rows(use, cols):
            er_all.append(model.predict(chunk)["er"])
    ers = np.concatenate(er_all) if er_all else np.empty(0)
    top = None
    if len(ers):
        model.er_threshold = float(np.quantile(ers, 1.0 - q))
        top = evaluate_window(vprep, model, fold.valid, settings, key="audit_eval").report

    def brief(rep: dict[str, Any] | None) -> dict[str, Any] | None:
        if rep is None:
            return None
        o = rep["overall"]
        return {k: o[k] for k in ("trades", "profit_factor", "expectancy", "win_rate")} | {"seed_metric": rep["seed_metric"]}

    out: dict[str, Any] = {
        "fold": fold.index,
        "block_bars": tcfg.audit_block_bars,
        "at_threshold": brief(at_threshold),
        "top_q": q,
        "top": brief(top),
        "rounds": info.get("er", {}).get("rounds"),
        "max_pf": tcfg.audit_max_pf,
        "flagged": False,
    }
    decisive = out["top"] if out["top"] else out["at_threshold"]
    pf = decisive["profit_factor"] if decisive else None
    if decisive and decisive["trades"] >= 30 and pf is not None and pf > tcfg.audit_max_pf:
        out["flagged"] = True
        out["reason"] = (
            f"a model trained on permuted labels trades at PF {pf:.2f} (> {tcfg.audit_max_pf}) over "
            f"{decisive['trades']} trades on fold {fold.index}'s validation block: the evaluation leaks"
        )
    return out
