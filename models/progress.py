"""Progress reporting hooks for long offline jobs (training, evaluation).

`models/` must not know how progress is shown: the CLI draws rich bars with an ETA, the
scheduler's training process writes log lines. Both subclass `Progress`; the base does nothing.
"""

from __future__ import annotations


class Progress:
    """Stages with a known amount of work; `advance` is called as work completes."""

    def begin(self, key: str, label: str, total: float) -> None:
        """A stage starts; `total` units of work (symbols, boosting rounds, ...)."""

    def advance(self, key: str, n: float = 1.0) -> None:
        """`n` more units of stage `key` are done."""

    def end(self, key: str) -> None:
        """Stage `key` is complete (whatever its counter says)."""

    def message(self, text: str) -> None:
        """A short human line worth showing (a stage result, a warning)."""


class LogProgress(Progress):
    """Stage starts/ends and messages as structlog events (for the background training process)."""

    def __init__(self) -> None:
        import structlog

        self._log = structlog.get_logger("models.training.run")

    def begin(self, key: str, label: str, total: float) -> None:
        self._log.info("train_stage_begin", stage=key, label=label, total=total)

    def end(self, key: str) -> None:
        self._log.info("train_stage_end", stage=key)

    def message(self, text: str) -> None:
        self._log.info("train_note", text=text)
