"""Progress bars for the CLI: `models.progress.Progress` drawn with rich (bars, counts, ETA).

The trainer and the evaluator report progress through the small `models.progress.Progress`
interface so that `models/` does not depend on a terminal library; the commands that run them
(`bot train`, `bot evaluate`) hand in this implementation.
"""

from __future__ import annotations

from typing import Any


class RichProgress:
    """models.progress.Progress drawn as rich bars with ETA (thread-safe: rich locks)."""

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.bar = Progress(
            TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
        )  # fmt: skip
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def begin(self, key: str, label: str, total: float) -> None:
        self.tasks[key] = self.bar.add_task(label, total=total)

    def advance(self, key: str, n: float = 1.0) -> None:
        if key in self.tasks:
            self.bar.advance(self.tasks[key], n)

    def end(self, key: str) -> None:
        if key in self.tasks:
            t = self.tasks[key]
            self.bar.update(t, completed=self.bar.tasks[t].total)

    def message(self, text: str) -> None:
        self.bar.console.print(text)


def rows_progress(console: Any, unit: str) -> Any:
    """A rich Progress for work counted in steps that also totals rows (`bot backfill`,
    `bot import-candles`): description, bar, n/N, "<rows> <unit>", ETA. Add tasks with a
    `rows` field (`add_task(..., rows=0)`) and update it as rows land."""
    import rich.progress as rp

    return rp.Progress(
        rp.TextColumn("{task.description:>14}"), rp.BarColumn(), rp.MofNCompleteColumn(),
        rp.TextColumn("{task.fields[rows]:,} " + unit), rp.TimeRemainingColumn(), console=console,
    )  # fmt: skip
