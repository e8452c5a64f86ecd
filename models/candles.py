"""Columnar 1m candles: the value that crosses every boundary (store -> features -> labels).

`Candles` holds one symbol's bars as parallel numpy arrays, `ts` in UTC epoch milliseconds of
the candle open. Reading the `../shared/data` CSV format lives here too, because the trainer,
the evaluator and the feature tools all read it; it is plain file parsing, no network or
database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from models.timeutil import MINUTE_MS

FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Candles:
    """One symbol's candles, ascending by `ts`. Price/volume dtype is float64 or float32."""

    ts: np.ndarray  # int64, epoch ms of the candle open
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for f in FIELDS:
            if len(getattr(self, f)) != n:
                raise ValueError(f"Candles.{f} has {len(getattr(self, f))} rows, ts has {n}")

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> Candles:
        return Candles(*(a[start:stop] for a in self.columns()))

    def columns(self) -> tuple[np.ndarray, ...]:
        return (self.ts, self.open, self.high, self.low, self.close, self.volume)

    def between(self, start_ms: int | None = None, end_ms: int | None = None) -> Candles:
        """Rows with start_ms <= ts < end_ms (either bound optional)."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.ts, start_ms, "left"))
        hi = len(self.ts) if end_ms is None else int(np.searchsorted(self.ts, end_ms, "left"))
        return self.slice(lo, hi)

    def astype(self, dtype: np.dtype | type) -> Candles:
        return Candles(self.ts, *(getattr(self, f).astype(dtype, copy=False) for f in FIELDS))

    @staticmethod
    def empty(dtype: np.dtype | type = np.float64) -> Candles:
        return Candles(np.empty(0, np.int64), *(np.empty(0, dtype) for _ in FIELDS))

    @staticmethod
    def concat(parts: Iterable[Candles]) -> Candles:
        parts = list(parts)
        if not parts:
            return Candles.empty()
        return Candles(*(np.concatenate(cols) for cols in zip(*(p.columns() for p in parts), strict=True)))


def exact_float_options() -> dict[str, str]:
    """`pandas.read_csv` options that parse each number exactly as Python's `float(text)`."""
    import pandas as pd

    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def read_candles_csv(path: str | Path | IO[bytes]) -> Candles:
    """Read one `SYMBOL.csv.gz` (header `ts,open,high,low,close,volume`) into float64 arrays.

    Uses pandas' C parser with exactly-rounded float parsing (the default from pandas 3,
    `float_precision="round_trip"` before), so each value equals Python's `float(text)` of the
    exchange's decimal string.
    """
    import pandas as pd  # not on the live hot path; keep `import models.candles` light

    df = pd.read_csv(path, dtype={"ts": np.int64, **{f: np.float64 for f in FIELDS}}, engine="c", **exact_float_options())
    missing = [c for c in ("ts", *FIELDS) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected ts,open,high,low,close,volume")
    return Candles(
        df["ts"].to_numpy(np.int64),
        *(df[f].to_numpy(np.float64) for f in FIELDS),
    )


def symbol_from_path(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"{path}: not a SYMBOL.csv or SYMBOL.csv.gz file")


def candle_files(directory: str | Path, symbols: Iterable[str] | None = None) -> dict[str, Path]:
    """Map symbol -> file for the `SYMBOL.csv.gz` (or `.csv`) files of a directory."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"candle directory {d} does not exist")
    found = {symbol_from_path(p): p for p in sorted(d.iterdir()) if p.name.endswith((".csv.gz", ".csv"))}
    if symbols is None:
        return found
    wanted = list(symbols)
    absent = [s for s in wanted if s not in found]
    if absent:
        raise FileNotFoundError(f"no candle file in {d} for {', '.join(absent)}")
    return {s: found[s] for s in wanted}


def find_gaps(ts: np.ndarray) -> list[tuple[int, int]]:
    """Missing-minute runs as (first_missing_ts, n_missing) for an ascending ts array."""
    if len(ts) < 2:
        return []
    step = np.diff(ts)
    idx = np.flatnonzero(step > MINUTE_MS)
    return [(int(ts[i] + MINUTE_MS), int(step[i] // MINUTE_MS - 1)) for i in idx]


class CandleSource(Protocol):
    """Where candles come from (a CSV directory, the store, a synthetic generator)."""

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        """One symbol's candles with start_ms <= ts < end_ms, ascending, float64 prices."""
        ...


class CsvDirs:
    """`SYMBOL.csv.gz` files of one or more directories as one candle source: a symbol's files
    (e.g. a 2021 month and a 2023 month) joined in time. Picklable (it holds only the paths, the
    file lists are read on first use), so a spawned research worker can be handed it; `open()`
    returns itself, the interface `models.research.runner.Setup.source` asks of any source spec.
    Each `load` reads the files (nothing cached); overlapping files must agree minute by minute.
    """

    def __init__(self, dirs: Iterable[str | Path]):
        self.dirs = [str(Path(d)) for d in dirs]
        if not self.dirs:
            raise ValueError("no candle directory given")
        self._files: list[dict[str, Path]] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"dirs": self.dirs, "_files": None}

    def open(self) -> CsvDirs:
        return self

    @property
    def files(self) -> list[dict[str, Path]]:
        if self._files is None:
            self._files = [candle_files(d) for d in self.dirs]
        return self._files

    def symbols(self) -> list[str]:
        return sorted({s for f in self.files for s in f})

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        paths = [f[symbol] for f in self.files if symbol in f]
        if not paths:
            raise FileNotFoundError(f"no candle file for {symbol} in {', '.join(self.dirs)}")
        parts = [c for c in (read_candles_csv(p).between(start_ms, end_ms) for p in paths) if len(c)]
        if len(parts) <= 1:
            return parts[0] if parts else Candles.empty()
        c = Candles.concat(parts)
        order = np.argsort(c.ts, kind="stable")
        c = Candles(c.ts[order], *(getattr(c, f)[order] for f in FIELDS))
        dup = np.flatnonzero(c.ts[1:] == c.ts[:-1]) + 1
        for f in FIELDS:  # a minute in two files must be the same candle in both
            col = getattr(c, f)
            bad = dup[col[dup] != col[dup - 1]]
            if len(bad):
                raise ValueError(f"{symbol}: the files of {', '.join(self.dirs)} differ at ts {int(c.ts[bad[0]])} ({f})")
        if len(dup):
            keep = np.ones(len(c), bool)
            keep[dup] = False
            c = Candles(c.ts[keep], *(getattr(c, f)[keep] for f in FIELDS))
        return c

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        c = self.load(symbol, None, None)
        return (int(c.ts[0]), int(c.ts[-1])) if len(c) else None

    def close(self) -> None:
        pass
