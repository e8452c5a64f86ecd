"""Writes the feather fixtures with pyarrow, the way freqtrade writes its candles.

Run once by hand where pyarrow is installed (the project does not depend on it):
    pip install --target /tmp/pa pyarrow && PYTHONPATH=/tmp/pa:. python tests/support/feather/make_fixtures.py
freqtrade: `data.reset_index(drop=True).loc[:, columns].to_feather(path, compression_level=9,
compression="lz4")` with `date` a UTC datetime (ns under pandas 2, us under pandas 3).
"""

from __future__ import annotations

import pandas as pd
import pyarrow

from tests.support.candle_archives import FEATHER_DIR, formula_candles


def frame(seed: int, unit: str) -> pd.DataFrame:
    c = formula_candles(seed)
    date = pd.to_datetime(c.ts, unit="ms", utc=True).astype(f"datetime64[{unit}, UTC]")
    return pd.DataFrame({"date": date, "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume})


def main() -> None:
    print("pyarrow", pyarrow.__version__, "pandas", pd.__version__)
    # freqtrade's call; chunksize 600 makes three record batches
    frame(0, "ns").to_feather(FEATHER_DIR / "BTC_USDT-1m.feather", compression_level=9, compression="lz4", chunksize=600)
    frame(1, "us").to_feather(FEATHER_DIR / "ETH_USDT-1m.feather", compression="uncompressed")
    frame(2, "ms").to_feather(FEATHER_DIR / "XRP_USDT-1m.feather", compression="zstd")  # refused: ZSTD


if __name__ == "__main__":
    main()
