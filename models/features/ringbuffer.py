"""Preallocated ring buffers of the recent values of S series (one per symbol).

Each value is written twice, at `pos` and `pos + capacity` of a (S, 2 * capacity) array. That
costs one extra store per push and makes the last n values of every series one contiguous,
time-ordered slice, so windows are zero-copy views that the feature kernels can reduce along the
last axis exactly like the batch path's sliding windows. Nothing is allocated after __init__.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """The last `capacity` values of `n_series` series, pushed together (one shared clock)."""

    __slots__ = ("_buf", "_cap", "_pos", "_count")

    def __init__(self, n_series: int, capacity: int, dtype: np.dtype | type = np.float64, fill: float = np.nan):
        if n_series < 1 or capacity < 1:
            raise ValueError(f"RingBuffer needs n_series >= 1 and capacity >= 1, got {n_series}, {capacity}")
        self._buf = np.full((n_series, 2 * capacity), fill, dtype=dtype)
        self._cap = capacity
        self._pos = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def count(self) -> int:
        """Values pushed so far (saturates at nothing; compare with capacity yourself)."""
        return self._count

    @property
    def n_series(self) -> int:
        return self._buf.shape[0]

    def push(self, values: np.ndarray) -> None:
        """Append one value per series (shape (S,))."""
        p = self._pos
        self._buf[:, p] = values
        self._buf[:, p + self._cap] = values
        self._pos = p + 1 if p + 1 < self._cap else 0
        self._count += 1

    def window(self, n: int) -> np.ndarray:
        """View (S, n) of the last n values, oldest first. Slots never written hold the fill
        value (NaN by default). The view changes on the next push: copy it to keep it."""
        if not 1 <= n <= self._cap:
            raise ValueError(f"window({n}) outside 1..capacity={self._cap}")
        end = self._pos + self._cap
        return self._buf[:, end - n : end]

    def last(self, lag: int = 0) -> np.ndarray:
        """View (S,) of the value pushed `lag` pushes ago (0 = the latest)."""
        if not 0 <= lag < self._cap:
            raise ValueError(f"last({lag}) outside 0..capacity-1={self._cap - 1}")
        return self._buf[:, self._pos + self._cap - 1 - lag]
