"""The `training:` config section: how a training process is run, and on how much history.

What a model is and how it is fitted (features, labels, folds, boosters) is `train:`
(`models.config.TrainConfig`, recorded in every bundle). This section is about the process the
daemon or the CLI starts to train in (`bot.training.launcher`): its priority, threads, memory
and time, the same for the first model, the scheduled retrain and `bot train --spawn`; and the
window of history the daemon's trainings use. These keys were `daemon.retrain_nice`,
`retrain_threads`, `retrain_memory_mb` and `retrain_timeout_s` before; an old config is still
read (`MOVED_KEYS`: `bot.config` moves them here and says so).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: old key in `daemon:` -> its key in `training:`
MOVED_KEYS: dict[str, str] = {
    "retrain_nice": "nice",
    "retrain_threads": "threads",
    "retrain_memory_mb": "memory_mb",
    "retrain_timeout_s": "timeout_s",
}


class TrainingConfig(BaseModel):
    """The training process (first model, retrain, bot train --spawn): limits and history window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nice: int = Field(10, ge=0, le=19, description="CPU niceness added to the training process (the trading loop keeps "
                      "the CPU it needs)")  # fmt: skip
    threads: int = Field(1, ge=1, le=256, description="threads of the training process (LightGBM/CatBoost, OpenMP, BLAS; "
                         "replaces train.threads there); 1 leaves a core to the trading loop on a 2-core PC")  # fmt: skip
    memory_mb: int = Field(
        4096, ge=0,
        description="address-space limit of the training process (RLIMIT_AS, MB; 0 = none): past it the process fails "
        "with one line naming this key, the daemon carries on. Virtual size, so above the resident peak (docs/benchmarks.md: "
        "train.peak_rss_mb_*); under systemd a cgroup MemoryMax on the unit limits resident memory instead")  # fmt: skip
    timeout_s: int = Field(4 * 3600, ge=10, description="a training process still running after this many seconds is killed")
    window_days: int = Field(
        0, ge=0,
        description="days of history the daemon's trainings (the first model, the retrain) learn from, ending at the "
        "last closed minute (the retrain: before its judging window); 0 = all the store has, up to max_window_days. "
        "A fresh store is first backfilled this many days (0: train.history_days)")  # fmt: skip
    max_window_days: int = Field(365, ge=1, description="the cap on window_days = 0 (all the store has)")

    @field_validator("memory_mb")
    @classmethod
    def _memory(cls, v: int) -> int:
        if 0 < v < 100:
            raise ValueError(f"{v} MB cannot hold a training process (its libraries alone map ~500 MB): the limit is "
                             "in MB (4096 = 4 GB); 0 = none")  # fmt: skip
        return v

    @property
    def window_key(self) -> str:
        """The key that sets the effective window (for messages)."""
        return "training.window_days" if self.window_days else "training.max_window_days"

    @property
    def effective_window_days(self) -> int:
        """The most days a daemon training reads: `window_days`, or the cap when it is 0."""
        return self.window_days or self.max_window_days
