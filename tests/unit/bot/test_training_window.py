"""The daemon's training window (`training.window_days`, issue 20): the first model and the
retrain train on that many days before their end, or on all the store has (up to the cap)."""

from __future__ import annotations

from bot.config import Config
from bot.training.job import default_range, first_backfill_days, first_model_job
from bot.training.retrain import spec_from_config
from models.timeutil import DAY_MS, MINUTE_MS

APR2 = 1_617_321_600_000  # a UTC midnight


class Bounds:
    """A history source that only knows its bounds: 2021-04-02 03:17 .. 40 days later."""

    def __init__(self, days: int = 40):
        self.lo, self.hi = APR2 + 197 * MINUTE_MS, APR2 + days * DAY_MS - MINUTE_MS

    def bounds(self, symbol: str) -> tuple[int, int]:
        return self.lo, self.hi


def test_window_zero_is_all_the_store_has_up_to_the_cap() -> None:
    cfg = Config.model_validate({"training": {"window_days": 0}})
    job = first_model_job(cfg, "postgresql://x@/y")
    spec = spec_from_config(cfg, "postgresql://x@/y", APR2 + 40 * DAY_MS, None)
    assert job.window_days == spec.window_days == 365
    start, end = default_range(Bounds(), "BTCUSDT", None, None, job.window_days)
    assert (start, end) == (APR2 + DAY_MS, APR2 + 40 * DAY_MS)  # from the first whole UTC day the store has
    capped = Config.model_validate({"training": {"max_window_days": 30}, "train": {"folds": 1}})
    start, _ = default_range(Bounds(), "BTCUSDT", None, None, capped.training.effective_window_days)
    assert start == APR2 + 10 * DAY_MS  # 30 days before the end, not all 39
    assert first_backfill_days(cfg) == cfg.train.history_days + 1  # a fresh store: what training needs


def test_a_window_in_days_is_used_by_the_first_model_and_the_retrain() -> None:
    cfg = Config.model_validate({"training": {"window_days": 30, "threads": 1}, "train": {"folds": 1, "threads": 0}})
    job = first_model_job(cfg, "")
    spec = spec_from_config(cfg, "", APR2 + 40 * DAY_MS, None)
    assert job.window_days == spec.window_days == 30 and first_backfill_days(cfg) == 31
    assert job.settings["train"]["threads"] == spec.settings["train"]["threads"] == 1  # training.threads, not train.threads
    start, end = default_range(Bounds(), "BTCUSDT", None, None, job.window_days)
    assert (start, end) == (APR2 + 10 * DAY_MS, APR2 + 40 * DAY_MS)
