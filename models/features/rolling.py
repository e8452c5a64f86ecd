"""O(n) rolling window statistics for the batch path, from running (cumulative) sums.

The online engine evaluates `kernels.rms`, `kernels.zscore_last` and `kernels.corr` on each
window directly (O(window) per bar, exact two-pass arithmetic). Over a whole history that would
be O(n * window), so the batch path uses the same formulas rewritten on window sums, taken as
differences of (block-restarted) cumulative sums; windows shorter than 32 use the kernels
directly, which is cheap at that length and avoids the one-pass sums' weak spot. The two agree to rounding (about 1e-12
relative on the real data; the parity test bounds it at 1e-4) and exactly where it matters for
discrete outcomes: a window of exact zeros (a flat-filled outage, a run of zero-volume minutes)
has window sums of exactly 0, because a cumulative sum does not move when 0 is added, so rv is 0,
the volume z-score is 0 and the correlation is NaN in both paths.

A window containing NaN (before the series starts) gives NaN, like the kernels. Percentile
ranks are counts, computed exactly (`rolling_pct_rank`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.features import kernels as K

_RANK_BLOCK = 128
_RANK_CHUNK = 1024


class WindowSums:
    """Window sums of one or more series over a fixed window length w.

    Cumulative sums restart every `block` rows (block >= w, so a window spans at most two
    blocks): a sum's rounding error then scales with the values near the window, not with the
    whole history, and a quiet window after a huge spike keeps its precision.
    """

    def __init__(self, w: int, n: int):
        self.w = w
        self.n = n
        self.block = max(2 * w, 64)

    def sum(self, x: np.ndarray) -> np.ndarray:
        """Sum of x over the window ending at each index; NaN if incomplete or holding NaN."""
        w, n, b = self.w, self.n, self.block
        out = np.full(n, np.nan)
        if n < w:
            return out
        bad = np.isnan(x)
        nblk = -(-n // b)
        z = np.zeros(nblk * b)
        z[:n] = np.where(bad, 0.0, x)
        part = np.cumsum(z.reshape(nblk, b), axis=1)  # restarts at each block
        flat = part.ravel()
        a = flat[w - 1 : n]  # P[i] for i = w-1 .. n-1
        back = np.concatenate(([0.0], flat[: n - w]))  # P[i-w], 0 before the start
        ends = np.concatenate(([0.0], part[:-1, -1]))  # P at the end of the previous block
        prev_end = np.repeat(ends, b)[w - 1 : n]
        j = np.arange(w - 1, n) % b  # offset of i in its block; the window starts at i-w+1
        # inside the block: P[i] - P[i-w] (just P[i] if it starts the block);
        # across two blocks: (P[end of previous block] - P[i-w]) + P[i]
        tot = np.where(j >= w, a - back, np.where(j == w - 1, a, (prev_end - back) + a))
        nb = np.empty(n + 1, dtype=np.int64)
        nb[0] = 0
        np.cumsum(bad, out=nb[1:])
        out[w - 1 :] = np.where(nb[w:] - nb[:-w] > 0, np.nan, tot)
        return out


# Below this window length the direct kernels are cheap, and one-pass sums would be at their
# least accurate (a window of two nearly equal values next to a spike).
DIRECT_BELOW = 32


def apply_windows(kernel, arrays: list[np.ndarray], w: int) -> np.ndarray:  # noqa: ANN001
    """kernel(windows...) at every position of equal-length series, NaN for the first w-1: the
    online kernel on every sliding window, O(n*w). Windows are (rows, w) sliding views taken in
    chunks of rows to bound the temporaries. For short windows and for kernels without a
    running-sum form (channel position, bars since the high/low)."""
    n = len(arrays[0])
    out = np.full(n, np.nan)
    if n < w:
        return out
    views = [sliding_window_view(a, w) for a in arrays]
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in range(0, n - w + 1, _RANK_CHUNK):
            e = min(s + _RANK_CHUNK, n - w + 1)
            out[w - 1 + s : w - 1 + e] = kernel(*(v[s:e] for v in views))
    return out


def rolling_rms(r2: np.ndarray, w: int) -> np.ndarray:
    """sqrt(mean of r^2 over the last w values) at each index (batch form of `kernels.rms`)."""
    if w < DIRECT_BELOW:
        return apply_windows(K.rms, [r2], w)
    s = WindowSums(w, len(r2)).sum(r2)
    return np.sqrt(np.maximum(s, 0.0) / w)


def rolling_zscore(v: np.ndarray, w: int) -> np.ndarray:
    """(v - mean) / population std over the last w values; 0 for a constant window
    (batch form of `kernels.zscore_last`)."""
    if w < DIRECT_BELOW:
        return apply_windows(K.zscore_last, [v], w)
    ws = WindowSums(w, len(v))
    m = ws.sum(v) / w
    var = np.maximum(ws.sum(v * v) / w - m * m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (v - m) / np.sqrt(var)
    return np.where(var <= 1e-24 * m * m, 0.0, z)


def rolling_corrs(x: np.ndarray, ys: list[np.ndarray], w: int) -> list[np.ndarray]:
    """Pearson correlation of x with each y over the last w values; NaN where either side is
    constant (batch form of `kernels.corr`)."""
    if w < DIRECT_BELOW:
        return [apply_windows(K.corr, [x, y], w) for y in ys]
    ws = WindowSums(w, len(x))
    sx, sxx = ws.sum(x), ws.sum(x * x)
    vx = sxx - sx * sx / w
    outs = []
    for y in ys:
        sy, syy, sxy = ws.sum(y), ws.sum(y * y), ws.sum(x * y)
        vy = syy - sy * sy / w
        cov = sxy - sx * sy / w
        den = np.sqrt(np.maximum(vx, 0.0) * np.maximum(vy, 0.0))
        ok = den > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(ok, cov / np.where(ok, den, 1.0), np.nan)
        outs.append(np.minimum(np.maximum(c, -1.0), 1.0))
    return outs


def rolling_pct_rank(a: np.ndarray, w: int) -> np.ndarray:
    """Batch form of `kernels.pct_rank_last`: 100 * #(a_j <= a_i for j in the last w) / w at
    each i >= w-1, NaN before. Exact (counts, no rounding), so ranks equal the online ones.

    Direct comparison is O(n * w); here the window is split into the current partial block, the
    full 64-value blocks before it (counted by binary search in each block sorted once) and a
    partial head block, which is O(n * (w/64 * log 64 + 128)). NaN inputs count as +inf; rows
    whose window holds them are for the caller to mask (as online, by a count of values).
    """
    n = len(a)
    out = np.full(n, np.nan)
    if n < w:
        return out
    b = _RANK_BLOCK
    x = np.where(np.isnan(a), np.inf, a)
    if w < 4 * b:
        win = sliding_window_view(x, w)
        for s in range(0, n - w + 1, _RANK_CHUNK):
            e = min(s + _RANK_CHUNK, n - w + 1)
            out[w - 1 + s : w - 1 + e] = np.add.reduce(win[s:e] <= x[w - 1 + s : w - 1 + e, None], axis=1) * (100.0 / w)
        return out
    counts = np.zeros(n, dtype=np.int64)
    # full blocks: block k counts for queries i in [(k+1)b, k*b + w - 1]
    nblk = n // b
    blocks = np.sort(x[: nblk * b].reshape(nblk, b), axis=1)
    for k in range(nblk):
        q0 = max((k + 1) * b, w - 1)
        q1 = min(k * b + w - 1, n - 1)
        if q0 <= q1:
            counts[q0 : q1 + 1] += np.searchsorted(blocks[k], x[q0 : q1 + 1], side="right")
    # partial head [s, ceil(s/b)*b) and partial tail [floor(i/b)*b, i], s = i - w + 1
    win = sliding_window_view(x, b)
    lanes = np.arange(b)
    for s0 in range(w - 1, n, _RANK_CHUNK):
        e0 = min(s0 + _RANK_CHUNK, n)
        i = np.arange(s0, e0)
        cur = x[s0:e0, None]
        head_len = (w - 1 - i) % b  # (-s) % b with s = i - w + 1
        head = (win[s0 - w + 1 : e0 - w + 1] <= cur) & (lanes < head_len[:, None])
        tail_len = i % b + 1
        tail = (win[s0 - b + 1 : e0 - b + 1] <= cur) & (lanes >= b - tail_len[:, None])
        counts[s0:e0] += np.add.reduce(head, axis=1) + np.add.reduce(tail, axis=1)
    out[w - 1 :] = counts[w - 1 :] * (100.0 / w)
    return out
