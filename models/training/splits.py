"""Time splits: walk-forward folds, the calibration split inside a training window, purging.

Nothing here is random: minutes are strongly autocorrelated, so every split is a cut in time.

Vocabulary (all times are candle-open epoch ms, intervals half-open [start, end)):
- a training window [train_start, train_end) uses the rows with ts in it whose label is fully
  known before train_end (`resolved_ts < train_end`): the **purge** (a label looks up to H
  minutes ahead, so the last H minutes of rows drop out);
- its validation block starts `embargo` later, at train_end + embargo (the **embargo**, at
  least the label horizon, keeps the serial correlation of the last training minutes out of
  the first validation minutes), and ends where the next fold's training window ends;
- the walk-forward is anchored (expanding): every fold trains from the same start, each on a
  longer window. Fold boundaries fall on UTC midnights so that training a bundle on, say, the
  first 4 weeks reproduces exactly the fold whose training window is those 4 weeks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts


class SplitError(ValueError):
    """A split that cannot be made from the data and settings given."""


@dataclass(frozen=True, slots=True)
class Window:
    """Half-open [start, end) in epoch ms."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise SplitError(f"empty window [{self.start}, {self.end})")

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY_MS

    def contains(self, ts: np.ndarray) -> np.ndarray:
        return (ts >= self.start) & (ts < self.end)


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: fit on `train`, judge on `valid` (which starts an embargo later)."""

    index: int
    train: Window
    valid: Window

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, **{f"train_{k}": v for k, v in asdict(self.train).items()},
                **{f"valid_{k}": v for k, v in asdict(self.valid).items()}}  # fmt: skip


def floor_day(ms: int) -> int:
    return ms - ms % DAY_MS


def walk_forward(
    data: Window,
    *,
    folds: int,
    fold_days: float,
    embargo_ms: int,
    min_train_days: float = 1.0,
) -> list[Fold]:
    """Anchored walk-forward folds over `data` (see the module docstring).

    Fold k (1..folds) trains on [data.start, E_k) with E_k = floor_day(data.end - (folds-k+1) x
    fold_days) and validates on [E_k + embargo, E_{k+1}) (the last one up to data.end).
    """
    if folds <= 0:
        return []
    ends = [floor_day(int(data.end - (folds - k) * fold_days * DAY_MS)) for k in range(folds)]
    out: list[Fold] = []
    for k, train_end in enumerate(ends):
        valid_end = ends[k + 1] if k + 1 < folds else data.end
        train_days = (train_end - data.start) / DAY_MS
        if train_days < min_train_days:
            raise SplitError(
                f"fold {k + 1} of {folds} would train on {train_days:.1f} days (< {min_train_days:g}) of "
                f"[{fmt_ts(data.start)}, {fmt_ts(data.end)}): use fewer folds or a shorter fold_days"
            )
        if valid_end - (train_end + embargo_ms) < MINUTE_MS:
            raise SplitError(f"fold {k + 1}: validation block is empty after the {embargo_ms // MINUTE_MS}-minute embargo")
        out.append(Fold(k + 1, Window(data.start, train_end), Window(train_end + embargo_ms, valid_end)))
    return out


def calibration_split(train: Window, fraction: float, embargo_ms: int) -> tuple[Window, Window]:
    """Split a training window into a fit part and a later calibration part, an embargo apart.

    The calibration part (the last `fraction` of the window) is out of sample for the models
    fitted on the first part: it serves early stopping, ensemble weights and the meta model.
    """
    cut = train.start + int((train.end - train.start) * (1.0 - fraction))
    cut -= cut % MINUTE_MS
    fit = Window(train.start, cut)
    if cut + embargo_ms >= train.end:
        raise SplitError(f"training window of {train.days:.2f} days is too short for a calibration split")
    return fit, Window(cut + embargo_ms, train.end)


def purged_rows(ts: np.ndarray, resolved_ts: np.ndarray, window: Window) -> np.ndarray:
    """Rows with ts in the window whose label is fully known before the window ends."""
    return window.contains(ts) & (resolved_ts < window.end)


def stride_rows(ts: np.ndarray, stride: int) -> np.ndarray:
    """1 row in `stride`, chosen by the minute of `ts` (not the row number) so that two runs over
    different ranges pick the same rows wherever they overlap."""
    if stride <= 1:
        return np.ones(len(ts), dtype=bool)
    return (ts // MINUTE_MS) % stride == 0
