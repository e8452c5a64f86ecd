"""Where the checkout and the shared real data are (`../shared` beside the checkout), and the
switch that makes a missing `../shared` fail instead of skip.

Tests that need the real candles call `shared_data_or_skip()`. On a developer's machine without
`../shared` they skip with a clear message; with `REQUIRE_SHARED_DATA=1` (what `.ci/run` sets)
they fail, so CI cannot pass on skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the checkout
SHARED = ROOT.parent / "shared"
DATA_DIR = SHARED / "data" / "candles_1m"
DATA_DIR_2023 = SHARED / "data" / "candles_1m_2023_10"
SYMBOLS30_FILE = SHARED / "data" / "symbols30.txt"


def shared_data_required() -> bool:
    return os.environ.get("REQUIRE_SHARED_DATA", "").strip() not in ("", "0")


def shared_data_or_skip(path: Path = DATA_DIR) -> Path:
    """`path` (default: the 2021 candles) if it exists; else skip, or fail under REQUIRE_SHARED_DATA=1."""
    if not path.is_dir():
        msg = f"real candle data not found at {path} (../shared is absent)"
        if shared_data_required():
            pytest.fail(msg + "; REQUIRE_SHARED_DATA=1 makes this a failure, not a skip", pytrace=False)
        pytest.skip(msg)
    return path


def symbols30() -> list[str]:
    shared_data_or_skip()
    return [s.strip() for s in SYMBOLS30_FILE.read_text().split() if s.strip()]
