"""The batch path's O(n) window statistics equal the online window kernels evaluated on every
window directly: to rounding for sums, exactly for ranks and for all-zero windows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from models.features import kernels as K
from models.features.rolling import rolling_corrs, rolling_pct_rank, rolling_rms, rolling_zscore


def direct(kernel, arrays: list[np.ndarray], w: int) -> np.ndarray:  # noqa: ANN001
    out = np.full(len(arrays[0]), np.nan)
    if len(arrays[0]) >= w:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[w - 1 :] = kernel(*(sliding_window_view(a, w) for a in arrays))
    return out


def series(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "ties":
        x = rng.integers(0, 4, size=n).astype(float)
    elif kind == "zeros":  # flat stretches, like an outage or zero-volume minutes
        x = rng.normal(0, 1e-3, size=n)
        for _ in range(3):
            s = int(rng.integers(0, n))
            x[s : s + int(rng.integers(1, 300))] = 0.0
    else:
        x = rng.lognormal(2, 1.5, size=n)
    x[: int(rng.integers(0, 3))] = np.nan  # the series starts late
    return x


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2000),
    w=st.integers(2, 800),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["ties", "zeros", "lognormal"]),
)
def test_running_sum_forms_equal_the_window_kernels(n: int, w: int, seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    x, y = series(rng, n, kind), series(rng, n, kind)
    x2 = x * x
    # ranks: exact, including ties and the block-decomposed path (w >= 512)
    xi = np.where(np.isnan(x), np.inf, x)
    np.testing.assert_array_equal(rolling_pct_rank(x, w), direct(K.pct_rank_last, [xi], w))
    for got, want in (
        (rolling_rms(x2, w), direct(K.rms, [x2], w)),
        (rolling_zscore(np.abs(x), w), direct(K.zscore_last, [np.abs(x)], w)),
        (rolling_corrs(x, [y], w)[0], direct(K.corr, [x, y], w)),
    ):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-7, atol=1e-9)
    # an all-zero window is exact in both forms: rv 0, z 0, correlation undefined
    zero_win = np.zeros(n, dtype=bool)
    if n >= w:
        zero_win[w - 1 :] = (sliding_window_view(np.nan_to_num(x, nan=1.0), w) == 0).all(axis=1)
    assert (rolling_rms(x2, w)[zero_win] == 0).all()
    assert (rolling_zscore(np.abs(x), w)[zero_win] == 0).all()
    assert np.isnan(rolling_corrs(x, [y], w)[0][zero_win]).all()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), p=st.integers(2, 60), seed=st.integers(0, 2**31 - 1), lead=st.integers(0, 4),
       holes=st.booleans())  # fmt: skip
def test_batch_recursions_equal_the_online_step_arithmetic(n: int, p: int, seed: int, lead: int, holes: bool) -> None:
    """EMA and Wilder over a series (batch: scipy lfilter) == the online step applied bar by bar
    (numpy, the same prev*decay + x*gain form), bit for bit, NaN skipping included."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0, 1, size=n)
    x[: min(lead, n)] = np.nan
    if holes and n > 3:
        x[rng.integers(0, n, size=2)] = np.nan
    ema, wil = K.OnlineEma(1, p), K.OnlineWilder(1, p)
    e_on, w_on = np.empty(n), np.empty(n)
    for i in range(n):
        e_on[i] = ema.step(x[i : i + 1])[0]
        w_on[i] = wil.step(x[i : i + 1])[0]
    np.testing.assert_array_equal(K.ema_series(x, p), e_on)
    np.testing.assert_array_equal(K.wilder_series(x, p), w_on)
