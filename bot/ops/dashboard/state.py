"""What the dashboard shows: the operator read model (`bot.ops.read_model`) as the page's data.

Every store figure comes from one `ReadModel.view()` (one read-only transaction on the daemon's
pool), so the page shows what `bot status` and Telegram show, on the same clocks: "today",
"held", ages, "the last hour" and the equity chart on the exchange clock (the last processed
minute), uptime and heartbeat on the wall clock. The in-process `DaemonMetrics` (bars, decision
latency, loop lag) and the daemon's `live()` figures (store up, next retrain, websocket state)
are added as they are.

Every number goes out twice: as a value (for the chart and the colour of a figure) and as text
made by `models.textfmt` / `models.timeutil`, so the page's script formats nothing itself and
a missing value is the one mark `models.textfmt.MISSING`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.ops.read_model import EquityCurve, OperatorView, ReadModel
from models.textfmt import MISSING, count, duration, fixed, money, pct, pf, price
from models.timeutil import DAY_MS, HOUR_MS, fmt_date, fmt_short, fmt_ts

CHART_Y_PAD = 0.08  # the equity line keeps 8% of its range free above and below


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class DashboardState:
    """What the daemon hands to `start_dashboard`.

    `db` is the daemon's asyncpg pool (or a `Store`, whose `.pool` is used). `notice` is one line
    shown on top of the page (the demo's "trading a model without a validated edge, paper only").
    `live` returns in-process figures the store does not have (e.g. next retrain time, feed state);
    they are merged into the status block as they are. `equity_hours`: the chart's span, hours
    of exchange time back from the last minute (None: the whole run).
    """

    db: Any
    mode: str
    symbols: Sequence[str]
    metrics: Any = None  # bot.ops.dashboard.metrics.DaemonMetrics
    notice: str | None = None
    live: Callable[[], Mapping[str, Any]] | None = None
    started_ms: int = field(default_factory=now_ms)
    equity_hours: float | None = None

    @property
    def pool(self) -> Any:
        return getattr(self.db, "pool", self.db)

    def read_model(self) -> ReadModel:
        return ReadModel(self.pool, self.mode, list(self.symbols), equity_hours=self.equity_hours)


def _hhmm(ms: int | None) -> str:
    return MISSING if ms is None else fmt_ts(ms)[11:]


def _status(v: OperatorView, st: DashboardState) -> dict[str, Any]:
    d, c = v.daemon, v.clock
    out: dict[str, Any] = {
        "mode": v.mode, "state": d.state, "state_text": d.state_text, "pid": d.pid, "host": d.host,
        "model_version": v.model.version if v.model and v.model.in_use else None,
        "watch_only": v.watch_only, "watch_reason": v.watch_reason, "trading": v.trading,
        "started_text": fmt_ts(d.started_ts or st.started_ms),
        "uptime_text": duration(d.uptime_s if d.uptime_s is not None else (now_ms() - st.started_ms) / 1000),
        "heartbeat_text": fmt_ts(d.heartbeat_ts, seconds=True), "heartbeat_age_text": duration(d.heartbeat_age_s),
        "last_minute_ts": c.last_minute_ts, "last_minute_text": fmt_ts(c.last_minute_ts),
        "last_minute_hhmm": _hhmm(c.last_minute_ts),
        "last_minute_note": (f"{fmt_date(c.last_minute_ts)} · stepped {duration(d.last_step_age_s)} ago"
                             if d.last_step_age_s is not None else fmt_date(c.last_minute_ts)),
        "kill_switch": v.kill_switch.tripped,
        "protections": [{"protection": p.protection, "scope": p.scope, "until_ts": p.until_ts, "text": p.text}
                        for p in v.protections],
        "paused_text": None if v.paused is None else f"entries paused since {fmt_ts(v.paused.since_ts)} UTC by "
                                                     f"{v.paused.by}: no new positions, exits go on",
    }  # fmt: skip
    m = st.metrics
    if m is not None:
        last = m.last
        if out["model_version"] is None:
            out["model_version"] = last.get("model_version")
        if out["watch_only"] is None:
            out["watch_only"] = last.get("watch_only")
        out["bars_processed"] = last.get("bars")
        out["steps"] = last.get("steps")
        out["decision_latency_ms"] = None if last.get("latency_s") is None else last["latency_s"] * 1000
        out["loop_lag_ms"] = None if last.get("loop_lag_s") is None else last["loop_lag_s"] * 1000
    try:
        import psutil

        out["rss_mb"] = psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - RSS is a nicety; never fail the page for it
        out["rss_mb"] = None
    out["latency_text"] = MISSING if out.get("decision_latency_ms") is None else f"{fixed(out['decision_latency_ms'])} ms"
    out["bars_text"] = count(out.get("bars_processed"))
    out["loop_lag_text"] = MISSING if out.get("loop_lag_ms") is None else f"{fixed(out['loop_lag_ms'], 1)} ms"
    out["rss_text"] = MISSING if out["rss_mb"] is None else f"{fixed(out['rss_mb'], 0)} MB"
    if st.live is not None:
        try:
            out.update(dict(st.live()))
        except Exception as e:  # noqa: BLE001
            out["live_error"] = f"{type(e).__name__}: {e}"
    return out


def _account(v: OperatorView) -> dict[str, Any]:
    a, t = v.account, v.today
    today_pnl = None if t is None else t.pnl
    today_pct = None if t is None else t.pnl_pct
    note = pct(today_pct)
    if t is not None:
        note += f" · realised {money(t.realised)} over {count(t.trades_closed)} trades"
    return {
        "equity": None if a is None else a.equity, "cash": None if a is None else a.cash,
        "exposure": None if a is None else a.exposure, "exposure_pct": None if a is None else a.exposure_pct,
        "ts": None if a is None else a.ts, "open_positions": len(v.positions),
        "equity_text": MISSING if a is None else money(a.equity, sign=False),
        "equity_note": "no snapshot yet" if a is None else f"USDT · {_hhmm(a.ts)} UTC",
        "cash_text": MISSING if a is None else money(a.cash, sign=False),
        "exposure_text": f"exposure {pct(None if a is None else a.exposure_pct, sign=False, digits=1)}",
        "today_pnl": today_pnl, "today_pct": today_pct, "today_pnl_text": money(today_pnl), "today_note": note,
        "today_realised": None if t is None else t.realised, "today_trades_closed": None if t is None else t.trades_closed,
        "today_day_text": MISSING if t is None else fmt_date(t.start_ts),
    }  # fmt: skip


def _x_ticks(lo: int, hi: int, n: int = 6) -> list[dict[str, Any]]:
    if hi <= lo:
        return [{"ts": lo, "text": fmt_short(lo)}]
    step = (hi - lo) / (n - 1)
    fmt = fmt_short if hi - lo > 2 * HOUR_MS else _hhmm
    if hi - lo > 14 * DAY_MS:
        fmt = fmt_date
    return [{"ts": int(lo + i * step), "text": fmt(int(lo + i * step))} for i in range(n)]


def _equity(e: EquityCurve) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": e.ts, "equity": e.equity, "hours": e.hours, "bucket_minutes": e.bucket_ms // 60_000,
                           "start_ts": e.start_ts, "end_ts": e.end_ts}  # fmt: skip
    span = "the whole run" if e.hours is None else f"the last {e.hours:g} h"
    out["title_text"] = f"Equity (USDT), {span}"
    if e.ts:
        lo, hi = min(e.equity), max(e.equity)
        if hi - lo < 1e-9:
            lo, hi = lo - 1.0, hi + 1.0
        pad = (hi - lo) * CHART_Y_PAD
        lo, hi = lo - pad, hi + pad
        out.update(min=min(e.equity), max=max(e.equity), lo=lo, hi=hi, ticks=_x_ticks(e.ts[0], e.ts[-1]),
                   y_ticks=[{"v": lo + (hi - lo) * i / 4, "text": fixed(lo + (hi - lo) * i / 4, 0)} for i in range(5)],
                   from_text=fmt_ts(e.ts[0]), to_text=fmt_ts(e.ts[-1]))  # fmt: skip
        out["title_text"] += (f" · {out['from_text']} … {out['to_text']} UTC · {len(e.ts)} points"
                              f" ({duration(e.bucket_ms / 1000)} buckets)")  # fmt: skip
    return out


def page_data(v: OperatorView, st: DashboardState) -> dict[str, Any]:
    """The page's data from one view (plain JSON-able values and their texts)."""
    wall = v.clock.wall_ms
    return {
        "now_ms": wall,
        "now_text": fmt_ts(wall, seconds=True),
        "notice": st.notice,
        "missing": MISSING,
        "status": _status(v, st),
        "account": _account(v),
        "equity": _equity(v.equity),
        "positions": [{
            "symbol": p.symbol, "qty": p.qty, "entry_price": p.entry_price, "last_price": p.mark, "value": p.value,
            "upnl": p.unrealised, "upnl_pct": p.unrealised_pct, "take_profit": p.take_profit, "stop_loss": p.stop_loss,
            "held_s": p.held_s, "model_version": p.model_version,
            "qty_text": price(p.qty), "entry_price_text": price(p.entry_price), "last_price_text": price(p.mark),
            "value_text": money(p.value, sign=False), "upnl_text": money(p.unrealised), "upnl_pct_text": pct(p.unrealised_pct),
            "take_profit_text": price(p.take_profit), "stop_loss_text": price(p.stop_loss),
            "entry_text": fmt_short(p.entry_ts), "expires_text": fmt_short(p.expires_ts), "held_text": duration(p.held_s),
        } for p in v.positions],  # fmt: skip
        "trades": [{
            "symbol": t.symbol, "entry_price": t.entry_price, "exit_price": t.exit_price, "pnl": t.pnl, "pnl_pct": t.pnl_pct,
            "reason": t.exit_reason or MISSING, "entry_text": fmt_short(t.entry_ts), "exit_text": fmt_short(t.exit_ts),
            "entry_price_text": price(t.entry_price), "exit_price_text": price(t.exit_price), "pnl_text": money(t.pnl),
            "pnl_pct_text": pct(t.pnl_pct), "held_text": duration(t.held_s),
        } for t in v.trades],  # fmt: skip
        "decisions": {
            "recent": [{"time_text": fmt_short(d.ts), "symbol": d.symbol, "action": d.action, "reason": d.reason,
                        "er": d.er, "p": d.probability, "size": d.size_fraction, "er_text": pct(d.er, digits=3),
                        "p_text": fixed(d.probability), "size_text": pct(d.size_fraction, sign=False, digits=1)}
                       for d in v.decisions],  # fmt: skip
            "skips_last_hour": [{"reason": s.reason, "count": s.count, "count_text": count(s.count)} for s in v.skips_last_hour],
        },
        "feed": [{"symbol": f.symbol, "last_ts": f.last_candle_ts, "last_text": fmt_short(f.last_candle_ts), "age_s": f.age_s,
                  "age_text": duration(f.age_s), "health": f.health} for f in v.feed.values()],  # fmt: skip
        "models": [{"version": m.version, "status": m.status, "created_text": fmt_ts(m.created_ts),
                    "promoted_text": fmt_ts(m.promoted_ts), "trained_text": f"{fmt_date(m.data_from_ts)} … {fmt_date(m.data_to_ts)}",
                    "pf": m.validated_pf, "trades": m.validated_trades, "pf_text": pf(m.validated_pf),
                    "trades_text": count(m.validated_trades)} for m in v.models],  # fmt: skip
    }


async def read_state(st: DashboardState, *, now: int | None = None) -> dict[str, Any]:
    """One snapshot of everything the page shows (plain JSON-able data)."""
    view = await st.read_model().view(wall_ms=now)
    return page_data(view, st)
