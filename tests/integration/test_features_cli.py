"""`bot features dump`: both paths from the outside, on the real candle files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bot.cli.main import main
from models.features.config import FeatureConfig, TimeframeFeatures
from models.features.spec import feature_names
from tests.support.shared_data import shared_data_or_skip

# a light feature config keeps the warm-up (and so the run) short
SMALL = {
    "features": {
        "timeframes": [
            {"minutes": 1, "return_horizons": [1, 5], "vol_windows": [5, 15], "atr_pct_window": 30,
             "ema_spans": [5, 10], "volz_window": 15, "channel_window": 10},
            {"minutes": 15, "return_horizons": [1], "vol_windows": [4], "atr_period": 3, "rsi_period": 3,
             "atr_pct_window": 6, "ema_spans": [3], "volz_window": 4, "channel_window": 4},
        ],
        "corr_windows": [10, 30],
        "lead_lags": [1, 2],
        "regime_vol_window": 15,
        "settle_eps": 0.01,
    }
}  # fmt: skip


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(SMALL))
    return p


def dump(cfg_file: Path, out: Path, mode: str, *extra: str) -> int:
    return main([
        "--config", str(cfg_file), "features", "dump", "--candles", str(shared_data_or_skip()),
        "--symbols", "LTCUSDT,ADAUSDT", "--from", "2021-04-25T02:00", "--to", "2021-04-25T10:00",
        "--mode", mode, "--out", str(out), *extra,
    ])  # fmt: skip


def test_batch_and_online_dumps_agree(cfg_file: Path, tmp_path: Path) -> None:
    fb, fo = tmp_path / "b.csv", tmp_path / "o.csv"
    assert dump(cfg_file, fb, "batch", "--fit-regime") == 0
    assert dump(cfg_file, fo, "online", "--fit-regime") == 0
    b, o = pd.read_csv(fb), pd.read_csv(fo)
    cfg = FeatureConfig(timeframes=tuple(TimeframeFeatures(**t) for t in SMALL["features"]["timeframes"]),
                        **{k: v for k, v in SMALL["features"].items() if k != "timeframes"})  # fmt: skip
    assert list(b.columns) == ["symbol", "ts", *feature_names(cfg)]
    assert list(o.columns) == list(b.columns)
    assert b["symbol"].unique().tolist() == ["LTCUSDT", "ADAUSDT"]
    # LTC traded in the 04:01 minute of the outage, ADA did not; neither traded 04:02-08:44
    ltc, ada = b[b.symbol == "LTCUSDT"], b[b.symbol == "ADAUSDT"]
    assert len(ltc) == len(ada) + 1 and len(ada) == 8 * 60 - 284
    pd.testing.assert_frame_equal(b, o, check_exact=False, rtol=1e-6)
    x = b.drop(columns=["symbol", "ts"]).to_numpy()
    assert not np.isnan(x).any()  # warmed up from the data before --from, regime fitted


def test_bad_arguments_exit_2_with_a_message(cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.csv"
    rc = main(["--config", str(cfg_file), "features", "dump", "--candles", str(shared_data_or_skip()),
               "--symbols", "NOPEUSDT", "--from", "2021-04-25", "--to", "2021-04-26", "--out", str(out)])  # fmt: skip
    assert rc == 2 and "NOPEUSDT" in capsys.readouterr().err
    rc = main(["--config", str(cfg_file), "features", "dump", "--candles", str(tmp_path),
               "--symbols", "BTCUSDT", "--from", "yesterday", "--to", "2021-04-26", "--out", str(out)])  # fmt: skip
    assert rc == 2 and "ISO date" in capsys.readouterr().err
    assert not out.exists()
