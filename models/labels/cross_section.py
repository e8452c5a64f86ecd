"""The cross-sectional target: a symbol's label return minus the mean of all symbols' at that minute.

Why: the signal the absolute target finds is largely the market's common move, which the cost
of a round trip eats; ranking symbols against each other asks the models for the part that
differs between symbols (`labels.target: cross_sectional`). Only what the models *learn* changes
(the training rows' `ret`, hence er / q05 and the meta label); the simulated trades still earn
each symbol's own absolute net return.

No look-ahead beyond the label's own: the mean at minute t uses the labels of the other symbols
decided at the same minute t, which resolve at the same time as the row's own label (same
horizon), so purging by `resolved_ts` still covers them. The training rows of every symbol sit
on the same minutes (`stride_rows` aligns on the minute of ts), so each minute's mean is over
the symbols that have a label there.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def relative_to_cross_section(train: dict[str, Any]) -> dict[str, int]:
    """In place: `rows.ret -= mean over symbols of ret at the same ts` for every symbol's
    training rows (objects with `ts` and `ret` arrays). Returns counts for the log."""
    if not train:
        return {"minutes": 0}
    all_ts = np.concatenate([t.ts for t in train.values()])
    minutes, inverse = np.unique(all_ts, return_inverse=True)
    all_ret = np.concatenate([t.ret.astype(np.float64) for t in train.values()])
    ok = np.isfinite(all_ret)
    sums = np.bincount(inverse[ok], weights=all_ret[ok], minlength=len(minutes))
    counts = np.bincount(inverse[ok], minlength=len(minutes))
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    pos = 0
    for t in train.values():
        n = len(t.ts)
        t.ret = (t.ret.astype(np.float64) - mean[inverse[pos : pos + n]]).astype(np.float32)
        pos += n
    return {"minutes": int(len(minutes)), "mean_symbols": float(counts.mean()) if len(counts) else 0.0}
