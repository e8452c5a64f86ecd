"""Every column of the feature spec against an independent textbook reference.

The batch/online parity test shares the kernels between both paths, so a kernel error (say
bars-since-low counting one bar short) is invisible to it. Here each column of
`feature_names(cfg, external=True)` is parametrised from the spec itself and compared, on every
1m row after the warm-up, with `tests/support/feature_references.py`, which recomputes it from its
definition without touching `models.features`' arithmetic. A column added to the spec without a
reference fails here by name. Data: SOLUSDT against BTCUSDT/ETHUSDT, 2021-04-02 00:00 UTC plus
the warm-up and two days, a gap-free stretch of the real candles; the regime model is fitted on
the same BTC candles, the external daily series is synthetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.candles import read_candles_csv
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig
from models.features.external import external_from_config
from models.features.spec import feature_names, warmup_bars
from tests.support.feature_references import (
    ReferenceInputs,
    TfShape,
    corr_break_reference,
    reference_column,
)
from tests.support.shared_data import shared_data_or_skip

START = 1617321600000  # 2021-04-02 00:00 UTC; no gap before 04-20
SYM = "SOLUSDT"
# The checked rows run from 04-07 12:00 to 04-09 12:00: they see 04-06 (16), then 04-07 (17),
# then, with no row for 04-08, a value a day old, which max_age_days=1 refuses (NaN). Day 04-04
# is listed without a value (before the checked rows; `test_features_external` covers the rule).
EXTERNAL_DAYS = [("2021-04-01", 11.0), ("2021-04-02", 12.0), ("2021-04-03", 13.0), ("2021-04-04", float("nan")),
                 ("2021-04-05", 15.0), ("2021-04-06", 16.0), ("2021-04-07", 17.0)]  # fmt: skip
COLUMNS = feature_names(FeatureConfig(), external=True)


def _prefix(minutes: int) -> str:
    return f"h{minutes // 60}" if minutes % 60 == 0 else f"m{minutes}"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    data = shared_data_or_skip()
    csv = Path(tmp_path_factory.mktemp("ext")) / "daily.csv"
    csv.write_text("date,fear_greed\n" + "".join(f"{d},{'' if v != v else v}\n" for d, v in EXTERNAL_DAYS))
    cfg = FeatureConfig(external_daily_file=str(csv), external_max_age_days=1)
    n = warmup_bars(cfg) + 2 * 1440
    end = START + n * 60_000
    c = {s: read_candles_csv(data / f"{s}.csv.gz").between(START, end) for s in (SYM, "BTCUSDT", "ETHUSDT")}
    assert all(len(v) == n for v in c.values()), "expected a gap-free stretch"
    refs = {r: c[r] for r in cfg.reference_symbols}
    regime = fit_regime(c["BTCUSDT"], cfg)
    feats = compute_batch(c[SYM], refs, cfg, regime=regime, external=external_from_config(cfg))
    inp = ReferenceInputs(
        sym=c[SYM],
        refs=refs,
        timeframes={
            _prefix(tf.minutes): (tf.minutes, TfShape(tf.atr_period, tf.atr_pct_window, tf.rsi_period, tf.volz_window,
                                                      tf.channel_window))  # fmt: skip
            for tf in cfg.timeframes
        },
        corr_windows=cfg.corr_windows,
        break_level=cfg.corr_break_level,
        regime=regime,
        regime_symbol=cfg.reference_symbols[0],
        regime_minutes=cfg.regime_minutes,
        regime_vol_window=cfg.regime_vol_window,
        external_days=EXTERNAL_DAYS,
        external_max_age_days=cfg.external_max_age_days,
    )
    names = feature_names(cfg, external=True)
    assert names == COLUMNS
    return {"feats": feats, "names": names, "inp": inp, "rows": np.arange(warmup_bars(cfg) - 1, n)}


def tolerance(name: str) -> dict[str, float]:
    """How close a float32 output must be to the float64 reference, per kind of column."""
    if name.endswith(("_since_hi", "_since_lo")) or name.startswith(("xbrk_", "ext_")):
        return {"rtol": 0.0, "atol": 0.0}  # counts, flags and copied values: exact
    if name.endswith("_atr_pct"):
        return {"rtol": 0.0, "atol": 1e-4}  # a percent of a whole count: exact up to float32
    if name.endswith("_volz"):
        return {"rtol": 1e-4, "atol": 1e-5}  # running sums over the window
    if name.startswith(("xc_", "regime_")) or name.endswith(("_chanpos", "_closepos")):
        return {"rtol": 0.0, "atol": 1e-5}  # bounded values, some near 0
    return {"rtol": 1e-5, "atol": 1e-9}  # returns may be exactly 0


@pytest.mark.parametrize("name", COLUMNS)
def test_column_matches_its_independent_reference(real: dict, name: str) -> None:
    rows = real["rows"]
    got = real["feats"][rows, real["names"].index(name)].astype(np.float64)
    want = reference_column(name, real["inp"])[rows]
    if name.startswith("xbrk_"):
        # rows where a correlation sits within rounding of the level could flip either way
        _, margin = corr_break_reference(name.removeprefix("xbrk_"), real["inp"])
        keep = margin[rows] > 1e-5
        got, want = got[keep], want[keep]
        assert {0.0, 1.0} <= set(want.tolist()), "the stretch should hold both a break and none"
    assert np.isfinite(want).sum() >= 100, "too few defined reference values to test anything"
    assert len(np.unique(want[np.isfinite(want)])) > 1, "a constant reference cannot tell a bug"
    np.testing.assert_allclose(got, want, equal_nan=True, err_msg=name, **tolerance(name))


def test_an_unknown_column_has_no_reference(real: dict) -> None:
    for name in ("m1_unknown", "m5_rv_10", "xc_dogeusdt_60", "something_new"):
        with pytest.raises(KeyError):
            reference_column(name, real["inp"])
