"""Synthetic `FoldScores` (a block of scored symbol-minutes) for simulation and rule tests."""

from __future__ import annotations

import numpy as np

from models.evaluation.scores import FoldScores
from models.training.splits import Window

T0 = 1_617_321_600_000  # 2021-04-02 00:00 UTC


def synthetic_scores(n_sym: int = 6, minutes: int = 3 * 1440, seed: int = 0, skill: float = 0.0, hold: int = 10,
                     t0: int = T0, step_minutes: int = 1) -> FoldScores:  # fmt: skip
    """n_sym symbols x `minutes` rows `step_minutes` apart: er ~ N(0, 0.2 %), ret = skill x er +
    noise, every trade exits `hold` minutes after its decision; the last rows have no label."""
    rng = np.random.default_rng(seed)
    ts = t0 + np.arange(minutes, dtype=np.int64) * 60_000 * step_minutes
    er = rng.standard_normal((n_sym, minutes)).astype(np.float32) * 0.002
    ret = (skill * er + rng.standard_normal((n_sym, minutes)) * 0.004).astype(np.float32)
    ok = np.ones((n_sym, minutes), bool)
    ok[:, -max(1, hold // step_minutes) :] = False
    n = n_sym * minutes
    tt = np.tile(ts, n_sym)
    return FoldScores(Window(int(ts[0]), int(ts[-1]) + 60_000), [f"S{i}USDT" for i in range(n_sym)], False,
                      sym=np.repeat(np.arange(n_sym, dtype=np.int16), minutes), ts=tt, er=er.ravel(),
                      p=np.full(n, np.nan, np.float32), ret=ret.ravel(), exit_ts=tt + hold * 60_000,
                      hold=np.full(n, float(hold), np.float32), ok=ok.ravel(),
                      regime=np.tile((np.arange(minutes) // 600 % 3).astype(np.int8), n_sym),
                      scored=np.ones(n, bool))  # fmt: skip
