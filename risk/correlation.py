"""Return correlations for the correlation filter, computed for all needed pairs in one go.

The filter compares each candidate with the open positions and with the other candidates, so we
need a small block of the correlation matrix, not all of it. Rows may contain NaN (a symbol that
just started, a feed gap): each pair uses the minutes where both returns are finite
("pairwise complete"), and a pair with too few such minutes, or with a flat series (a constant
price has no correlation), is NaN = unknown. When every value is known (the usual case) it is one
matrix product of standardised rows; otherwise five small ones.
"""

from __future__ import annotations

import numpy as np


def corr_matrix(returns: np.ndarray, idx: np.ndarray, min_overlap: int) -> np.ndarray:
    """Pearson correlations among the series `returns[idx]` -> square array (len(idx), len(idx)).

    `returns` is symbols x window (any float dtype; computed in float64). An index of -1 stands for
    a symbol without a row (all NaN). Entries are NaN where fewer than `min_overlap` minutes are
    finite in both series or either series is constant over them.
    """
    x = returns[np.maximum(idx, 0)].astype(np.float64)
    missing = idx < 0
    if missing.any():
        x[missing] = np.nan
    if x.shape[1] >= max(min_overlap, 2) and np.isfinite(x).all():
        return _corr_complete(x)
    return _corr_pairwise_complete(x, min_overlap)


def _corr_complete(x: np.ndarray) -> np.ndarray:
    """Every series fully known (the usual case): standardise each row, one matrix product.

    A constant row leaves only rounding noise after centring (about 1e-16 of its magnitude), so it
    is called flat when its spread is below 1e-12 of its largest absolute value.
    """
    x = x - x.mean(axis=1, keepdims=True)
    ss = np.einsum("ij,ij->i", x, x)
    flat = ss <= x.shape[1] * (1e-12 * np.abs(x).max(axis=1)) ** 2
    norm = np.sqrt(ss)
    norm[flat] = 1.0
    z = x / norm[:, None]
    corr = z @ z.T
    corr[flat, :] = np.nan
    corr[:, flat] = np.nan
    np.clip(corr, -1.0, 1.0, out=corr)
    return corr


def _corr_pairwise_complete(x: np.ndarray, min_overlap: int) -> np.ndarray:
    """Some values missing: each pair over the minutes where both are finite (4 matrix products)."""
    mask = np.isfinite(x)
    cnt = mask.sum(axis=1, keepdims=True)
    x0 = np.where(mask, x, 0.0)
    # Centre on each row's own mean first: correlation ignores shifts, and the pair formula below
    # re-centres on the overlap, so this only reduces cancellation error.
    x0 = np.where(mask, x0 - x0.sum(axis=1, keepdims=True) / np.maximum(cnt, 1), 0.0)
    f = mask.astype(np.float64)
    n = f @ f.T
    s = x0 @ f.T  # s[i, j] = sum of x_i over the minutes both i and j are known
    ss = (x0 * x0) @ f.T
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = x0 @ x0.T - s * s.T / n
        var = ss - s * s / n  # var[i, j]: variance of x_i over the overlap with j
        corr = cov / np.sqrt(var * var.T)
    # Flat series: after centring the variance is rounding noise relative to the sum of squares.
    flat = var <= 1e-10 * ss
    bad = (n < max(min_overlap, 2)) | flat | flat.T | ~np.isfinite(corr)
    corr[bad] = np.nan
    np.clip(corr, -1.0, 1.0, out=corr)
    return corr


