"""The backtest: the live engine (`bot.engine.Engine`) driven by another clock over stored candles.

Only two things differ from `bot run`: where the minutes come from (a candle source: the store
or a directory of `SYMBOL.csv.gz`) and when the clock ticks (as fast as the CPU allows). The
features (online path), scoring, entry and exit rules, risk manager and paper broker are the
engine's own.

- Minutes: every minute in [start, end) in which at least one symbol has a candle, in order; a
  symbol without a candle in such a minute is a NaN row (the feature engine fills it flat and
  the engine never enters it). Exchange-wide outages (no symbol has a candle) are jumped over:
  the feature engine fills them, exactly as the batch features and the labels treat them.
- Warm-up: the engine's features are warmed from the `warmup_bars` minutes before `start`.
- Block scoring (`block_minutes > 1`): the online features of a block of minutes are computed
  first (minute by minute: they depend only on candles), scored in one call, and then the engine
  steps through the block's minutes with those rows. Scores depend only on features, never on
  positions, so this gives the same trades as scoring minute by minute (a test checks it).
- End of the window: no entry is decided within one label horizon of `end`
  (`Engine.no_entries_from_ts`), so every trade resolves inside the window, as in the trainer's
  simulation; anything still open after the last minute is closed at its last close
  (`end_of_data`).

`minute_matrix` and `online_feature_rows` are also what `bot features dump --mode online` uses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.engine import Engine, TradingConfig
from bot.engine.records import ClosedTrade, DecisionRow, EquityPoint
from models.candles import Candles
from models.config import CostConfig
from models.features.online import OnlineFeatureEngine
from models.timeutil import MINUTE_MS, fmt_ts
from risk.config import RiskConfig

if TYPE_CHECKING:
    from models.bundle.directory import Bundle
    from models.candles import CandleSource


class BacktestError(Exception):
    """The backtest cannot run as asked; the message says why and what to do."""


def minute_matrix(data: Mapping[str, Candles], symbols: Sequence[str], start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(minutes (T,) int64, bars (T, S, 5) float64): every minute in [start, end) with a candle of
    any symbol; rows of symbols without a candle in that minute are NaN."""
    parts = [data[s].between(start, end) for s in symbols if s in data]
    ts = [c.ts for c in parts if len(c)]
    minutes = np.unique(np.concatenate(ts)).astype(np.int64) if ts else np.empty(0, np.int64)
    bars = np.full((len(minutes), len(symbols), 5), np.nan)
    for i, s in enumerate(symbols):
        if s not in data:
            continue
        c = data[s].between(start, end)
        if not len(c):
            continue
        pos = np.searchsorted(minutes, c.ts)
        bars[pos, i, 0] = c.open
        bars[pos, i, 1] = c.high
        bars[pos, i, 2] = c.low
        bars[pos, i, 3] = c.close
        bars[pos, i, 4] = c.volume
    return minutes, bars


def online_feature_rows(eng: OnlineFeatureEngine, minutes: np.ndarray, bars: np.ndarray,
                        out: np.ndarray | None = None, warm: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Run the online feature engine over the minutes; (T, S, F) float32 rows (and the warm
    flags of each minute into `warm` (T, S) if given)."""
    n = len(minutes)
    if out is None:
        out = np.empty((n, len(eng.symbols), len(eng.names)), dtype=np.float32)
    for t in range(n):
        out[t] = eng.update(int(minutes[t]), bars[t])
        if warm is not None:
            warm[t] = eng.warm
    return out


@dataclass
class BacktestResult:
    """What a run produced (the report is written from it)."""

    trades: list[ClosedTrade]
    equity_ts: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    exposure: np.ndarray
    open_positions: np.ndarray
    skips: Counter
    decisions: list[DecisionRow]
    orders: int
    minutes: int
    symbols: list[str]
    start: int
    end: int
    seconds: float
    watch_reason: str | None
    status_line: str
    fees: float = 0.0
    benchmark: tuple[np.ndarray, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def symbol_bars(self) -> int:
        return self.minutes * len(self.symbols)

    def equity_points(self) -> list[EquityPoint]:
        return [EquityPoint(int(t), float(e), float(c), float(g), int(n)) for t, e, c, g, n
                in zip(self.equity_ts, self.equity, self.cash, self.exposure, self.open_positions, strict=True)]  # fmt: skip


def load_window(source: CandleSource, symbols: Sequence[str], start: int, end: int, warmup_bars: int) -> dict[str, Candles]:
    """Candles of each symbol from the warm-up before `start` to `end`."""
    lo = start - warmup_bars * MINUTE_MS
    out = {}
    for s in symbols:
        c = source.load(s, lo, end)
        if len(c) == 0:
            raise BacktestError(f"no candles for {s} in {fmt_ts(lo)} .. {fmt_ts(end)}; import or backfill it first")
        out[s] = c
    return out


def run_backtest(
    source: CandleSource,
    bundle: Bundle,
    symbols: Sequence[str],
    start: int,
    end: int,
    *,
    trading: TradingConfig | None = None,
    risk: RiskConfig | None = None,
    costs: CostConfig | None = None,
    initial_equity: float = 10_000.0,
    block_minutes: int = 1440,
    keep_decisions: bool = True,
    progress: Callable[[int, int], None] | None = None,
    data: Mapping[str, Candles] | None = None,
) -> BacktestResult:
    """Replay [start, end) through a fresh engine (see the module docstring)."""
    if end <= start:
        raise BacktestError(f"empty window: {fmt_ts(start)} .. {fmt_ts(end)}")
    t0 = time.perf_counter()
    eng = Engine(symbols, bundle, trading=trading, risk=risk, costs=costs, initial_equity=initial_equity)
    syms = eng.symbols
    if data is None:
        data = load_window(source, syms, start, end, eng.features.warmup)
    eng.warm_up({s: c.between(None, start) for s, c in data.items()})
    eng.no_entries_from_ts = end - eng.horizon_ms
    minutes, bars = minute_matrix(data, syms, start, end)
    n = len(minutes)
    if n == 0:
        raise BacktestError(f"no candles in {fmt_ts(start)} .. {fmt_ts(end)}")
    eq = np.empty(n)
    cash = np.empty(n)
    gross = np.empty(n)
    held = np.zeros(n, np.int32)
    trades: list[ClosedTrade] = []
    decisions: list[DecisionRow] = []
    orders = 0
    fees = 0.0
    block = max(1, int(block_minutes))
    s_n, f_n = len(syms), len(eng.features.names)
    tradable = np.zeros(s_n, bool)
    tradable[: len(eng.trade_symbols)] = True
    fbuf = np.empty((min(block, n), s_n, f_n), np.float32)
    wbuf = np.empty((min(block, n), s_n), bool)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        m = b1 - b0
        if block > 1:
            online_feature_rows(eng.features, minutes[b0:b1], bars[b0:b1], fbuf[:m], wbuf[:m])
            scores = _block_scores(eng, fbuf[:m], wbuf[:m] & tradable)
        for k in range(m):
            t = b0 + k
            if block > 1:
                res = eng.step(int(minutes[t]), bars[t], feats=fbuf[k], warm=wbuf[k],
                               scores={key: v[k] for key, v in scores.items()})  # fmt: skip
            else:
                res = eng.step(int(minutes[t]), bars[t])
            e = res.equity
            eq[t], cash[t], gross[t], held[t] = e.equity, e.cash, e.gross_exposure, e.open_positions
            if res.closed:
                trades.extend(res.closed)
            if res.orders:
                orders += len(res.orders)
            if res.fills:
                fees += sum(f.fee for f in res.fills)
            if keep_decisions and res.decisions:
                decisions.extend(res.decisions)
        if progress is not None:
            progress(b1, n)
    if eng.positions:
        res = eng.flatten(int(minutes[-1]), "end_of_data")
        trades.extend(res.closed)
        orders += len(res.orders)
        fees += sum(f.fee for f in res.fills)
        eq[-1], cash[-1], gross[-1], held[-1] = res.equity.equity, res.equity.cash, res.equity.gross_exposure, 0
    bench = None
    ref = eng.features.cfg.reference_symbols[0]
    if ref in data:
        c = data[ref].between(start, end)
        bench = (c.ts.copy(), c.close.copy())
    return BacktestResult(
        trades=trades, equity_ts=minutes, equity=eq, cash=cash, exposure=gross, open_positions=held, skips=Counter(eng.skips),
        decisions=decisions, orders=orders, minutes=n, symbols=list(eng.trade_symbols), start=start, end=end,
        seconds=time.perf_counter() - t0, watch_reason=eng.watch_reason, status_line=eng.status_line(), fees=fees,
        benchmark=bench,
        meta={"bundle_version": eng.model_version, "entry_rule": eng.rule.describe(), "fee_rate": eng.costs.fee_rate,
              "slippage_bps": eng.costs.slippage * 10_000, "initial_equity": initial_equity,
              "sizing": eng.trading.sizing, "edge": eng.edge.reason},
    )  # fmt: skip


def _block_scores(eng: Engine, feats: np.ndarray, use: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of a block's feature rows, one call; NaN for rows not scored (not warm / not traded)."""
    m, s_n, f_n = feats.shape
    flat = feats.reshape(m * s_n, f_n)
    rows = np.flatnonzero(use.reshape(-1))
    out: dict[str, np.ndarray] = {}
    if len(rows):
        sc = eng.score(flat[rows])
        for k, v in sc.items():
            a = np.full(m * s_n, np.nan)
            a[rows] = v
            out[k] = a.reshape(m, s_n)
    else:
        for k in ("er", "p", "q05"):
            out[k] = np.full((m, s_n), np.nan)
    return out
