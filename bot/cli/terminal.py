"""Rich consoles for the CLI that do not cut tables at 80 columns when output is not a terminal.

Rich falls back to 80 columns for a pipe, a file or journald, which cuts wide tables
(`bot backfill ... | less`, `> report.txt`). A terminal keeps its real width; anything else
gets $COLUMNS if set, else `PIPE_WIDTH`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

PIPE_WIDTH = 200


def console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A Rich console on stdout (or stderr) with a sensible width when it is not a tty."""
    stream = sys.stderr if stderr else sys.stdout
    if "width" not in kwargs and not _isatty(stream) and not os.environ.get("COLUMNS", "").isdigit():
        kwargs["width"] = PIPE_WIDTH
    return Console(stderr=stderr, **kwargs)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
