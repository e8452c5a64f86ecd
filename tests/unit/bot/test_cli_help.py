"""Help texts that state facts about the code stay true."""

from __future__ import annotations

import subprocess
import sys

from models.features.config import FeatureConfig
from models.features.spec import warmup_bars
from tests.support.shared_data import ROOT


def test_features_dump_help_states_the_warmup_and_the_regime_columns() -> None:
    out = subprocess.run([sys.executable, "-m", "bot", "features", "dump", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True, env={"COLUMNS": "400", "PATH": "/usr/bin"}).stdout  # fmt: skip
    text = " ".join(out.split())
    w = warmup_bars(FeatureConfig())
    assert f"{w:,} = {w / 1440:g} days" in text
    assert "regime columns stay empty unless --regime or --fit-regime" in text
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{w:,} minutes" in readme and f"{w / 1440:g} days" in readme
