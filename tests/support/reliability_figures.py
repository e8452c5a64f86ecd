"""Figures the reliability tests measure, for scripts/reliability.py (`make reliability`).

A test calls `record(name, value)`; when $RELIABILITY_OUT names a directory (the harness sets
it) the figure is written there as `<name>.json`, otherwise nothing happens. The harness reads
them after the run and never makes up a figure no test wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "RELIABILITY_OUT"


def record(name: str, value: Any) -> None:
    out = os.environ.get(ENV)
    if not out:
        return
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")
