"""What `bot status` reports, read from the store only (works from any process, daemon or not).

The daemon writes its `daemon_status` row (start, heartbeat every few seconds, model, watch-only
reason, details such as the next retrain) and, each minute, `engine_state`, `positions` and
`equity_snapshots` in one transaction; whether a daemon runs right now is whether one holds the
store's advisory lock (`bot.store.daemon_lock`), which the row alone cannot tell after a kill -9.
Open positions are marked at the last candle in the store (unrealised P&L before exit costs).
"Today" is the UTC day of the last minute the engine processed (the bar clock: in a replay or
the demo that is the market's day, not the wall clock's).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from models.timeutil import DAY_MS, MINUTE_MS


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def validated_pf(metrics: Any, path: str | None = None) -> float | None:
    """The out-of-sample PF recorded in model_versions, else in the bundle's manifest (the
    figure the engine's no-edge floor reads)."""
    wf = (_json(metrics) or {}).get("walk_forward") or {}
    pf = wf.get("profit_factor")
    if pf is None and path:
        try:
            m = json.loads((Path(path) / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        pf = (((m.get("walk_forward") or {}).get("all") or {}).get("overall") or {}).get("profit_factor")
    return None if pf is None else float(pf)


async def gather(conn: Any, mode: str, symbols: list[str], now_ms: int | None = None) -> dict[str, Any]:
    """The status as one JSON-safe dict (see the module docstring)."""
    from bot.store.daemon_lock import read_status

    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    st = await read_status(conn) or {}
    running = bool(st.get("running"))
    details = st.get("details") or {}
    mode = st.get("mode") or mode
    out: dict[str, Any] = {"now_ms": now_ms, "daemon_running": running, "lock_holder": st.get("lock_holder"),
                           "mode": mode, "pid": st.get("pid") if running else None, "host": st.get("host")}  # fmt: skip
    started, stopped = st.get("started_ts"), st.get("stopped_ts")
    out["started_ts"], out["stopped_ts"], out["heartbeat_ts"] = started, stopped, st.get("heartbeat_ts")
    out["uptime_s"] = round((now_ms - started) / 1000) if running and started else None
    out["heartbeat_age_s"] = round((now_ms - st["heartbeat_ts"]) / 1000, 1) if st.get("heartbeat_ts") else None

    # model: the one the daemon uses (else the champion), with its validated PF
    version = st.get("model_version")
    row = None
    if version:
        row = await conn.fetchrow("SELECT version, status, metrics, path FROM model_versions WHERE version = $1", version)
    if row is None:
        row = await conn.fetchrow("SELECT version, status, metrics, path FROM model_versions WHERE status = 'champion'")
    out["model"] = None if row is None else {"version": row["version"], "status": row["status"],
                                             "validated_pf": validated_pf(row["metrics"], row["path"]),
                                             "in_use": bool(version) and row["version"] == version}  # fmt: skip
    out["watch_only"] = bool(st.get("watch_only")) if st else None
    out["watch_reason"] = st.get("watch_reason")
    out["trading"] = running and not out["watch_only"] and bool(version)

    # account: engine_state (written with each minute), today's P&L on the bar clock
    es = await conn.fetchrow("SELECT last_minute_ts, cash, equity, state FROM engine_state WHERE mode = $1", mode)
    last_minute = es["last_minute_ts"] if es else st.get("last_minute_ts")
    out["last_minute_ts"] = last_minute
    kill: dict[str, Any] = {"tripped": None}
    if es is not None:
        state = json.loads(es["state"]) if isinstance(es["state"], str) else (es["state"] or {})
        ks = (state.get("risk") or {}).get("kill_switch") or {}
        kill = {"tripped": ks.get("tripped"), "since_ts": ks.get("tripped_ms")}
    out["kill_switch"] = kill
    out["equity"] = es["equity"] if es else None
    out["cash"] = es["cash"] if es else None
    out["today"] = None
    if es is not None:
        day0 = last_minute - last_minute % DAY_MS
        base = await conn.fetchval("SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts < $2 ORDER BY ts DESC LIMIT 1",
                                   mode, day0)  # fmt: skip
        if base is None:
            base = await conn.fetchval("SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts >= $2 ORDER BY ts LIMIT 1",
                                       mode, day0)  # fmt: skip
        realised = await conn.fetchval("SELECT coalesce(sum(pnl), 0) FROM positions WHERE mode = $1 AND status = 'closed' "
                                       "AND exit_ts >= $2", mode, day0)  # fmt: skip
        closed = await conn.fetchval("SELECT count(*) FROM positions WHERE mode = $1 AND status = 'closed' AND exit_ts >= $2",
                                     mode, day0)  # fmt: skip
        pnl = None if base is None else es["equity"] - base
        out["today"] = {"day_start_ts": day0, "pnl": pnl, "pnl_pct": (pnl / base) if base else None,
                        "realised": float(realised), "trades_closed": int(closed)}  # fmt: skip

    # open positions, marked at the last candle in the store
    pos = await conn.fetch("SELECT symbol, qty, entry_price, entry_ts, take_profit, stop_loss FROM positions "
                           "WHERE mode = $1 AND status = 'open' ORDER BY entry_ts, symbol", mode)  # fmt: skip
    positions = []
    for p in pos:
        mark = await conn.fetchrow("SELECT ts, close FROM candles WHERE symbol = $1 ORDER BY ts DESC LIMIT 1", p["symbol"])
        u = None if mark is None else p["qty"] * (mark["close"] - p["entry_price"])
        positions.append({"symbol": p["symbol"], "qty": p["qty"], "entry_price": p["entry_price"], "entry_ts": p["entry_ts"],
                          "take_profit": p["take_profit"], "stop_loss": p["stop_loss"],
                          "mark": None if mark is None else mark["close"], "mark_ts": None if mark is None else mark["ts"],
                          "unrealised": u, "unrealised_pct": None if mark is None else mark["close"] / p["entry_price"] - 1})  # fmt: skip
    out["positions"] = positions

    # feed health: the last candle per symbol (one index probe each) and its age
    rows = await conn.fetch("SELECT s AS symbol, (SELECT ts FROM candles WHERE symbol = s ORDER BY ts DESC LIMIT 1) AS ts "
                            "FROM unnest($1::text[]) AS s", list(symbols))  # fmt: skip
    feed = {}
    for r in rows:
        ts = r["ts"]
        feed[r["symbol"]] = {"last_candle_ts": ts,
                             "age_s": None if ts is None else round((now_ms - ts - MINUTE_MS) / 1000),
                             "behind_engine_min": None if ts is None or last_minute is None else (last_minute - ts) // MINUTE_MS}  # fmt: skip
    out["feed"] = feed
    out["retrain_next"] = details.get("retrain_next_run")
    out["retrain_last"] = details.get("retrain_last")
    out["details"] = {k: details[k] for k in ("minutes_processed", "rss_mb", "loop_lag_max_ms", "feed_ws_up", "db")
                      if k in details}  # fmt: skip
    return out
