"""`write_report`: the backtest's report directory, written from the engine's records.

    out_dir/metrics.json   every figure, each block naming its basis (`bot.backtest.report.metrics`)
    out_dir/trades.csv     one row per closed trade, times as ISO UTC and epoch ms
    out_dir/equity.png     equity and drawdown with BTC buy-and-hold (`bot.backtest.report.chart`)
    out_dir/report.html    one self-contained page (`bot.backtest.report.html`)

Files are written to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.backtest.report.metrics import (
    TradeArrays,
    benchmark_curve,
    compute_metrics,
    equity_curve,
    json_safe,
    tested_window,
)
from bot.engine.records import ClosedTrade, EquityPoint
from models.timeutil import MINUTE_MS, fmt_ts, to_datetime

TRADE_COLUMNS = (
    "symbol", "entry_time", "exit_time", "decision_time", "hold_minutes", "qty", "entry_price", "exit_price",
    "fees", "pnl", "ret", "exit_reason", "er", "p", "model_version", "entry_ts", "exit_ts", "decision_ts",
)  # fmt: skip


def iso_utc(ms: int) -> str:
    """Epoch ms -> '2021-04-30T12:00:00Z'."""
    return to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def trades_csv(trades: Sequence[ClosedTrade]) -> str:
    """The trades as CSV text (header always present, also without trades)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    for t in sorted(trades, key=lambda t: (t.exit_ts, t.entry_ts, t.symbol)):
        w.writerow([
            t.symbol, iso_utc(t.entry_ts), iso_utc(t.exit_ts), iso_utc(t.decision_ts),
            (t.exit_ts - t.entry_ts) // MINUTE_MS, repr(float(t.qty)), repr(float(t.entry_price)),
            repr(float(t.exit_price)), repr(float(t.fees)), repr(float(t.pnl)), repr(float(t.ret)), t.exit_reason,
            "" if t.er != t.er else repr(float(t.er)), "" if t.p != t.p else repr(float(t.p)),
            t.model_version or "", t.entry_ts, t.exit_ts, t.decision_ts,
        ])  # fmt: skip
    return buf.getvalue()


def write_report(
    out_dir: Path,
    *,
    trades: Sequence[ClosedTrade],
    equity: Sequence[EquityPoint],
    benchmark: tuple[np.ndarray, np.ndarray] | None,
    skips: Mapping[str, int],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """Write metrics.json, trades.csv, equity.png and report.html into `out_dir`; return the metrics.

    `meta` keys (all optional): title, in_sample, bundle_version, trained_from_ts, trained_to_ts,
    from_ts, to_ts, symbols, initial_equity, fee_rate, slippage_bps. Times are UTC epoch ms.
    """
    from bot.backtest.report.chart import equity_png
    from bot.backtest.report.html import render_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(trades, equity, benchmark, skips, meta)
    metrics["meta"] = {
        **{k: v for k, v in meta.items()},
        **{f"{k[:-3]}": fmt_ts(meta[k]) for k in ("from_ts", "to_ts", "trained_from_ts", "trained_to_ts") if meta.get(k) is not None},
    }
    metrics = json_safe(metrics)
    _atomic_write(out_dir / "metrics.json", (json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode())
    _atomic_write(out_dir / "trades.csv", trades_csv(trades).encode())

    t = TradeArrays(trades)
    window = tested_window(meta, t, np.array([p.ts for p in equity], dtype=np.int64))
    initial = metrics["overall"]["portfolio"]["initial_equity"]
    ts, eq = equity_curve(equity, initial, window[0] if window else None)
    title = str(meta.get("title") or "Backtest") + (" (in-sample)" if meta.get("in_sample") else "")
    png_path = out_dir / "equity.png"
    tmp_png = out_dir / ".equity.png.tmp.png"
    equity_png(tmp_png, ts, eq, benchmark_curve(benchmark, window, initial), title=title)
    os.replace(tmp_png, png_path)
    page = render_html(metrics, trades, meta, png_path.read_bytes())
    _atomic_write(out_dir / "report.html", page.encode("utf-8"))
    return metrics
