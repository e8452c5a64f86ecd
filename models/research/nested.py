"""Nested walk-forward: choose on inner folds, report on an outer block that played no part.

    data:   |------------------- inner (first weeks) -------------------|emb|---- outer ----|
    inner folds (anchored):  train [start, E1) | valid [E1+emb, E2) ; train [start, E2) | valid [E2+emb, inner.end)

Configurations are trained and compared on the inner folds only; the runner never loads a
candle at or after `inner.end` while choosing (the candle source is asked for ranges that end
there). The chosen configuration is then fitted on the whole inner range and judged once on the
outer block: by default [inner.end + embargo, data.end), the last `outer_days`; or an explicit
window anywhere after the inner range (e.g. a month of another year, with its own feature
warm-up), when the block right after the data has already been looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.training.splits import DAY_MS, Fold, SplitError, Window, floor_day, walk_forward


@dataclass(frozen=True)
class NestedSplit:
    data: Window
    inner: Window
    folds: list[Fold]
    outer_days: float
    outer_window: Window | None = None  # explicit outer block; None = the data's last outer_days

    def outer(self, embargo_ms: int) -> Window:
        if self.outer_window is not None:
            return Window(max(self.outer_window.start, self.inner.end + embargo_ms), self.outer_window.end)
        return Window(self.inner.end + embargo_ms, self.data.end)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"data": [self.data.start, self.data.end], "inner": [self.inner.start, self.inner.end],
                                  "folds": [f.to_dict() for f in self.folds], "outer_days": self.outer_days}  # fmt: skip
        if self.outer_window is not None:
            out["outer_window"] = [self.outer_window.start, self.outer_window.end]
        return out


def nested_split(data: Window, *, outer_days: float, inner_folds: int, embargo_ms: int, min_train_days: float,
                 fold_days: float | None = None, outer: Window | None = None) -> NestedSplit:  # fmt: skip
    """Outer block = the last `outer_days` (from a UTC midnight), or `outer` if given (the inner
    range then runs to the data's end or the outer block's start, whichever is first); inner
    folds split the inner range, each validation block `fold_days` long (default: the inner
    range after `min_train_days` shared equally)."""
    if outer is None:
        inner_end = floor_day(int(data.end - outer_days * DAY_MS))
        if inner_end <= data.start:
            raise SplitError(f"no inner range: the data has {data.days:.1f} days, the outer block takes {outer_days:g}")
    else:
        inner_end = min(data.end, outer.start)
        if inner_end <= data.start:
            raise SplitError("no inner range: the outer block starts before the data")
    inner = Window(data.start, inner_end)
    if fold_days is None:
        fold_days = (inner.days - min_train_days) / max(1, inner_folds)
        if fold_days <= 1:
            raise SplitError(f"inner range of {inner.days:.1f} days is too short for {inner_folds} folds after {min_train_days:g} days of training")
    folds = walk_forward(inner, folds=inner_folds, fold_days=fold_days, embargo_ms=embargo_ms, min_train_days=min_train_days)
    return NestedSplit(data, inner, folds, outer_days, outer)
