"""Optional external daily series (e.g. the Fear & Greed index), joined without look-ahead.

File format: CSV with a header, a `date` column (YYYY-MM-DD, UTC) and one column per name in
`features.external_columns`; one row per day. The value of day D is taken as known only at the
end of that day (D+1 00:00 UTC), so a 1m bar closing at time c uses the latest day D with
D+1 00:00 <= c: during day D+1 every bar sees day D ("as of the previous UTC day's close").
A value older than `features.external_max_age_days` is treated as missing (NaN) rather than
carried forward indefinitely when the file stops being updated.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.features.config import FeatureConfig
from models.features.errors import ExternalDataError
from models.timeutil import DAY_MS


@dataclass(frozen=True, eq=False)
class ExternalDaily:
    names: tuple[str, ...]
    day_ms: np.ndarray  # int64 epoch ms of each day's 00:00 UTC, strictly ascending
    values: np.ndarray  # float64 (D, len(names))
    max_age_days: int = 3

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.day_ms), len(self.names)):
            raise ExternalDataError(
                f"external values shape {self.values.shape} != ({len(self.day_ms)}, {len(self.names)})"
            )
        if len(self.day_ms) > 1 and np.any(np.diff(self.day_ms) <= 0):
            raise ExternalDataError("external daily dates must be strictly ascending and unique")
        object.__setattr__(self, "_known_at", self.day_ms + DAY_MS)

    def asof(self, close_ms: np.ndarray) -> np.ndarray:
        """Values (n, k) known at each bar close time (epoch ms); NaN where none or too old."""
        close_ms = np.asarray(close_ms, dtype=np.int64)
        idx = np.searchsorted(self._known_at, close_ms, side="right") - 1
        out = np.full((len(close_ms), len(self.names)), np.nan)
        ok = idx >= 0
        ok[ok] = close_ms[ok] - self._known_at[idx[ok]] < self.max_age_days * DAY_MS
        out[ok] = self.values[idx[ok]]
        return out

    def asof_one(self, close_ms: int, out: np.ndarray) -> np.ndarray:
        """`asof` for a single close time, written into `out` (k,)."""
        i = int(np.searchsorted(self._known_at, close_ms, side="right")) - 1
        if i < 0 or close_ms - int(self._known_at[i]) >= self.max_age_days * DAY_MS:
            out[:] = np.nan
        else:
            out[:] = self.values[i]
        return out


def load_external_daily(path: str | Path, columns: tuple[str, ...], max_age_days: int = 3) -> ExternalDaily:
    """Read the daily CSV; raise `ExternalDataError` naming the problem (file, column, row)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ExternalDataError(
            f"external daily file {p} does not exist; fix features.external_daily_file or set it to null"
        ) from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in ("date", *columns) if c not in header]
    if missing:
        raise ExternalDataError(f"{p}: missing column(s) {missing}; header is {header}")
    days: list[int] = []
    rows: list[list[float]] = []
    for lineno, row in enumerate(reader, start=2):
        try:
            d = dt.date.fromisoformat(row["date"].strip())
        except ValueError:
            raise ExternalDataError(f"{p}:{lineno}: date {row['date']!r} is not YYYY-MM-DD") from None
        days.append(int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000))
        vals = []
        for c in columns:
            s = (row.get(c) or "").strip()
            try:
                vals.append(float(s) if s else float("nan"))
            except ValueError:
                raise ExternalDataError(f"{p}:{lineno}: {c}={s!r} is not a number") from None
        rows.append(vals)
    if not days:
        raise ExternalDataError(f"{p}: no rows")
    order = np.argsort(days, kind="stable")
    day_ms = np.asarray(days, dtype=np.int64)[order]
    if np.any(np.diff(day_ms) == 0):
        raise ExternalDataError(f"{p}: a date appears twice")
    return ExternalDaily(tuple(columns), day_ms, np.asarray(rows, dtype=np.float64)[order], max_age_days)


def external_from_config(cfg: FeatureConfig) -> ExternalDaily | None:
    """The configured external series, or None when `features.external_daily_file` is unset."""
    if cfg.external_daily_file is None:
        return None
    return load_external_daily(cfg.external_daily_file, cfg.external_columns, cfg.external_max_age_days)


def check_external(external: ExternalDaily | None, cfg: FeatureConfig) -> None:
    if external is not None and tuple(external.names) != tuple(cfg.external_columns):
        raise ExternalDataError(
            f"external series has columns {list(external.names)} but features.external_columns is "
            f"{list(cfg.external_columns)}"
        )
