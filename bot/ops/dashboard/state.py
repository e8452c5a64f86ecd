"""What the dashboard shows: the app state the daemon hands in, and the store reads behind it.

Everything comes from the store (read-only queries on the daemon's pool) plus the in-process
`DaemonMetrics`, so the page shows what was persisted, the same thing `bot status` and a
restart see. Tables that an older schema lacks (`daemon_status`, `engine_state`) are read when
present and reported as absent otherwise: the page degrades, it does not fail.

Times go out both as epoch ms (for sorting and the chart) and as UTC text made by
`models.timeutil`, so the page's script never formats a date itself.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, fmt_date, fmt_short, fmt_ts

FEED_OK_S = 150.0  # a closed 1m candle is at most ~60 s old plus delivery; beyond this it is late
FEED_STALE_S = 600.0
HEARTBEAT_STALE_S = 180.0
EQUITY_POINTS = 600
RECENT_TRADES = 15
RECENT_DECISIONS = 25
MODEL_ROWS = 8


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class DashboardState:
    """What the daemon hands to `start_dashboard`.

    `db` is the daemon's asyncpg pool (or a `Store`, whose `.pool` is used). `notice` is one line
    shown on top of the page (the demo's "trading a model without a validated edge, paper only").
    `live` returns in-process figures the store does not have (e.g. next retrain time, feed state);
    they are merged into the status block as they are.
    """

    db: Any
    mode: str
    symbols: Sequence[str]
    metrics: Any = None  # bot.ops.dashboard.metrics.DaemonMetrics
    notice: str | None = None
    live: Callable[[], Mapping[str, Any]] | None = None
    started_ms: int = field(default_factory=now_ms)
    equity_hours: float = 72.0

    @property
    def pool(self) -> asyncpg.Pool:
        return getattr(self.db, "pool", self.db)


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


async def _has_table(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def _status(conn: asyncpg.Connection, st: DashboardState, now: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": st.mode, "started_ms": st.started_ms, "started_text": fmt_ts(st.started_ms),
        "uptime_text": _age_text((now - st.started_ms) / 1000), "daemon_status_table": False,
        "state": "running", "state_text": "running", "model_version": None, "watch_only": None,
        "watch_reason": None, "last_minute_ts": None, "last_minute_text": "–", "last_minute_age_text": "–",
    }  # fmt: skip
    if await _has_table(conn, "daemon_status"):
        out["daemon_status_table"] = True
        r = await conn.fetchrow("SELECT * FROM daemon_status LIMIT 1")
        if r is None:
            out.update(state="unknown", state_text="no daemon_status row yet")
        else:
            hb_age = (now - int(r["heartbeat_ts"])) / 1000
            if r["stopped_ts"] is not None:
                out.update(state="stopped", state_text=f"stopped {fmt_ts(r['stopped_ts'])} UTC")
            elif hb_age > HEARTBEAT_STALE_S:
                out.update(state="stale", state_text=f"no heartbeat for {_age_text(hb_age)}")
            else:
                out.update(state="running", state_text=f"running (pid {r['pid']} on {r['host']})")
            out.update(pid=r["pid"], host=r["host"], model_version=r["model_version"], watch_only=r["watch_only"],
                       watch_reason=r["watch_reason"], heartbeat_text=fmt_ts(r["heartbeat_ts"], seconds=True),
                       heartbeat_age_text=_age_text(hb_age))  # fmt: skip
            if r["started_ts"] is not None:
                out["started_ms"] = int(r["started_ts"])
                out["started_text"] = fmt_ts(r["started_ts"])
                out["uptime_text"] = _age_text((now - int(r["started_ts"])) / 1000)
            if r["last_minute_ts"] is not None:
                out["last_minute_ts"] = int(r["last_minute_ts"])
    if out["last_minute_ts"] is None and await _has_table(conn, "engine_state"):
        v = await conn.fetchval("SELECT last_minute_ts FROM engine_state WHERE mode = $1", st.mode)
        out["last_minute_ts"] = None if v is None else int(v)
    if out["last_minute_ts"] is not None:
        out["last_minute_text"] = fmt_ts(out["last_minute_ts"])
        out["last_minute_age_text"] = _age_text((now - out["last_minute_ts"] - MINUTE_MS) / 1000)
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
    if st.live is not None:
        try:
            out.update(dict(st.live()))
        except Exception as e:  # noqa: BLE001
            out["live_error"] = f"{type(e).__name__}: {e}"
    return out


async def _account(conn: asyncpg.Connection, st: DashboardState, now: int) -> dict[str, Any]:
    last = await conn.fetchrow(
        "SELECT ts, equity, cash, gross_exposure, open_positions FROM equity_snapshots WHERE mode = $1 ORDER BY ts DESC LIMIT 1",
        st.mode,
    )
    if last is None:
        return {"equity": None, "cash": None, "gross_exposure": None, "open_positions": None, "ts_text": "–",
                "today_pnl": None, "today_pct": None}  # fmt: skip
    day0 = now // DAY_MS * DAY_MS
    base = await conn.fetchval(
        "SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts < $2 ORDER BY ts DESC LIMIT 1", st.mode, day0
    )
    if base is None:  # started today: from the first snapshot of the day
        base = await conn.fetchval(
            "SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts >= $2 ORDER BY ts LIMIT 1", st.mode, day0
        )
    eq = float(last["equity"])
    pnl = None if base is None else eq - float(base)
    return {
        "equity": eq, "cash": float(last["cash"]), "gross_exposure": float(last["gross_exposure"]),
        "open_positions": int(last["open_positions"]), "ts": int(last["ts"]), "ts_text": fmt_ts(last["ts"]), "ts_short": fmt_short(last["ts"]),
        "today_pnl": pnl, "today_pct": None if pnl is None or not base else pnl / float(base),
        "exposure_pct": float(last["gross_exposure"]) / eq if eq > 0 else None,
    }  # fmt: skip


def _ticks(lo: int, hi: int, n: int = 6) -> list[dict[str, Any]]:
    if hi <= lo:
        return [{"ts": lo, "text": fmt_short(lo)}]
    step = (hi - lo) / (n - 1)
    fmt = fmt_short if hi - lo > 2 * HOUR_MS else (lambda ms: fmt_ts(ms)[11:])
    if hi - lo > 14 * DAY_MS:
        fmt = fmt_date
    return [{"ts": int(lo + i * step), "text": fmt(int(lo + i * step))} for i in range(n)]


async def _equity(conn: asyncpg.Connection, st: DashboardState, now: int) -> dict[str, Any]:
    since = now - int(st.equity_hours * HOUR_MS)
    span = max(MINUTE_MS, now - since)
    bucket = max(MINUTE_MS, span // EQUITY_POINTS // MINUTE_MS * MINUTE_MS)
    rows = await conn.fetch(
        """SELECT ts, equity FROM (
               SELECT DISTINCT ON (ts / $3) ts, equity FROM equity_snapshots
               WHERE mode = $1 AND ts >= $2 ORDER BY ts / $3, ts DESC) b
           ORDER BY ts""",
        st.mode, since, bucket,
    )  # fmt: skip
    ts = [int(r["ts"]) for r in rows]
    eq = [float(r["equity"]) for r in rows]
    out: dict[str, Any] = {"ts": ts, "equity": eq, "hours": st.equity_hours, "bucket_minutes": bucket // MINUTE_MS}
    if ts:
        out["ticks"] = _ticks(ts[0], ts[-1])
        out["from_text"], out["to_text"] = fmt_ts(ts[0]), fmt_ts(ts[-1])
        out["min"], out["max"] = min(eq), max(eq)
    return out


async def _positions(conn: asyncpg.Connection, st: DashboardState, now: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT p.symbol, p.qty, p.entry_price, p.entry_ts, p.take_profit, p.stop_loss, p.expires_ts,
                  p.model_version, c.close AS last_price, c.ts AS last_ts
           FROM positions p
           LEFT JOIN LATERAL (SELECT close, ts FROM candles WHERE symbol = p.symbol ORDER BY ts DESC LIMIT 1) c ON true
           WHERE p.mode = $1 AND p.status = 'open' ORDER BY p.entry_ts""",
        st.mode,
    )
    out = []
    for r in rows:
        qty, entry, last = float(r["qty"]), float(r["entry_price"]), _f(r["last_price"])
        upnl = None if last is None else qty * (last - entry)
        out.append({
            "symbol": r["symbol"], "qty": qty, "entry_price": entry, "last_price": last,
            "value": None if last is None else qty * last, "upnl": upnl,
            "upnl_pct": None if last is None else last / entry - 1.0,
            "take_profit": _f(r["take_profit"]), "stop_loss": _f(r["stop_loss"]),
            "entry_text": fmt_short(r["entry_ts"]), "expires_text": fmt_short(r["expires_ts"]),
            "held_text": _age_text((now - int(r["entry_ts"])) / 1000), "model_version": r["model_version"],
        })  # fmt: skip
    return out


async def _trades(conn: asyncpg.Connection, st: DashboardState) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT symbol, qty, entry_price, entry_ts, exit_price, exit_ts, exit_reason, pnl FROM positions
           WHERE mode = $1 AND status = 'closed' ORDER BY exit_ts DESC NULLS LAST LIMIT $2""",
        st.mode, RECENT_TRADES,
    )  # fmt: skip
    out = []
    for r in rows:
        entry, exit_ = float(r["entry_price"]), _f(r["exit_price"])
        cost = float(r["qty"]) * entry
        out.append({
            "symbol": r["symbol"], "entry_price": entry, "exit_price": exit_, "pnl": _f(r["pnl"]),
            "pnl_pct": None if r["pnl"] is None or cost <= 0 else float(r["pnl"]) / cost,
            "reason": r["exit_reason"] or "–", "entry_text": fmt_short(r["entry_ts"]), "exit_text": fmt_short(r["exit_ts"]),
        })  # fmt: skip
    return out


async def _decisions(conn: asyncpg.Connection, st: DashboardState, now: int) -> dict[str, Any]:
    rows = await conn.fetch(
        """SELECT ts, symbol, action, reason, er, probability, size_fraction FROM decisions
           WHERE mode = $1 ORDER BY ts DESC, id DESC LIMIT $2""",
        st.mode, RECENT_DECISIONS,
    )  # fmt: skip
    recent = [{
        "time_text": fmt_short(r["ts"]), "symbol": r["symbol"], "action": r["action"], "reason": r["reason"],
        "er": _f(r["er"]), "p": _f(r["probability"]), "size": _f(r["size_fraction"]),
    } for r in rows]  # fmt: skip
    skips = await conn.fetch(
        """SELECT reason, count(*) AS n FROM decisions WHERE mode = $1 AND action = 'skip' AND ts >= $2
           GROUP BY reason ORDER BY n DESC, reason""",
        st.mode, now - HOUR_MS,
    )  # fmt: skip
    return {"recent": recent, "skips_last_hour": [{"reason": r["reason"], "count": int(r["n"])} for r in skips]}


async def _feed(conn: asyncpg.Connection, st: DashboardState, now: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT s AS symbol, (SELECT max(ts) FROM candles WHERE symbol = s) AS last_ts FROM unnest($1::text[]) AS s",
        list(st.symbols),
    )
    out = []
    for r in rows:
        last = r["last_ts"]
        age = None if last is None else (now - int(last) - MINUTE_MS) / 1000  # since the candle closed
        health = "none" if age is None else "ok" if age <= FEED_OK_S else "late" if age <= FEED_STALE_S else "stale"
        out.append({"symbol": r["symbol"], "last_text": fmt_short(last), "age_s": age, "age_text": _age_text(age),
                    "health": health})  # fmt: skip
    return out


async def _models(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT version, status, created_ts, promoted_ts, data_from_ts, data_to_ts, metrics FROM model_versions
           ORDER BY (status = 'champion') DESC, created_ts DESC LIMIT $1""",
        MODEL_ROWS,
    )
    out = []
    for r in rows:
        m = r["metrics"]
        m = json.loads(m) if isinstance(m, str) else (m or {})
        wf = m.get("walk_forward") or {}
        out.append({
            "version": r["version"], "status": r["status"], "created_text": fmt_ts(r["created_ts"]),
            "promoted_text": fmt_ts(r["promoted_ts"]),
            "trained_text": f"{fmt_date(r['data_from_ts'])} … {fmt_date(r['data_to_ts'])}",
            "pf": _f(wf.get("profit_factor")), "trades": wf.get("trades"),
        })  # fmt: skip
    return out


async def read_state(st: DashboardState, *, now: int | None = None) -> dict[str, Any]:
    """One snapshot of everything the page shows (plain JSON-able data)."""
    now = now_ms() if now is None else now
    async with st.pool.acquire() as conn:
        status = await _status(conn, st, now)
        data = {
            "now_ms": now,
            "now_text": fmt_ts(now, seconds=True),
            "notice": st.notice,
            "status": status,
            "account": await _account(conn, st, now),
            "equity": await _equity(conn, st, now),
            "positions": await _positions(conn, st, now),
            "trades": await _trades(conn, st),
            "decisions": await _decisions(conn, st, now),
            "feed": await _feed(conn, st, now),
            "models": await _models(conn),
        }
    return data


def json_clean(x: Any) -> Any:
    """Plain JSON data for the page: NaN / inf become None (JSON has neither)."""
    if isinstance(x, Mapping):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_clean(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x
