"""`bot status [--json]`: the daemon at a glance, from another process (read from the store).

Mode, uptime, model version and its validated PF, trading or watch-only (and why), equity,
today's P&L, open positions with unrealised P&L (marked at the last candle in the store), the
last candle's age per symbol (feed health), the kill switch, the next retrain. Says clearly when
no daemon runs; with the embedded database it never starts the cluster just to answer (a
stopped cluster means no daemon runs: it says so). What is read and how: `bot.ops.read_model`.
Exit status: 0 with a daemon running, 3 without one (scripts can test it), 1 if the database
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit

if TYPE_CHECKING:
    from bot.config import Config

EXIT_NO_DAEMON = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the daemon at a glance: mode, model, equity, positions, feed, kill switch")
    p.add_argument("--json", action="store_true", help="one JSON object (every field)")
    p.set_defaults(func=_run)


async def _read(dsn: str, cfg: Config) -> dict[str, Any]:
    import asyncpg

    from bot.ops.read_model import gather

    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": "bot status"})
    try:
        return await gather(conn, cfg.mode, list(cfg.symbols))
    finally:
        await conn.close()


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.config import mask_dsn
    from bot.store.db import embedded_cluster

    emb = embedded_cluster(cfg)
    if emb is not None and not (emb.initialised() and emb.running()):
        why = "not created yet" if not emb.initialised() else "stopped"
        msg = (f"no daemon running: the embedded database in {emb.data_dir} is {why} "
               "(`bot status` does not start it; `bot run` does)")  # fmt: skip
        if args.json:
            print(json.dumps({"daemon_running": False, "database": why, "data_dir": str(emb.data_dir), "message": msg}))
        else:
            print(msg)
        return EXIT_NO_DAEMON
    dsn = emb.dsn() if emb is not None else cfg.database.dsn.get_secret_value()
    try:
        st = asyncio.run(_read(dsn, cfg))
    except Exception as e:  # noqa: BLE001 - a status command reports, it does not crash
        print(f"cannot read the store: {type(e).__name__}: {mask_dsn(str(e))}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, default=str))
    else:
        print("\n".join(render(st)))
    return 0 if st["daemon_running"] else EXIT_NO_DAEMON


def _money(v: Any) -> str:
    return "-" if v is None else f"{v:,.2f}"


def render(st: dict[str, Any]) -> list[str]:
    """The human report (times UTC, `MM-DD HH:MM`)."""
    from bot.logs.event_lines import duration, pct
    from models.timeutil import fmt_short

    lines = []
    if st["daemon_running"]:
        lines.append(f"daemon: RUNNING {st['mode']}  pid {st['pid']} on {st['host']}  up {duration(st['uptime_s'] or 0)}"
                     f"  (heartbeat {st['heartbeat_age_s']}s ago)")  # fmt: skip
    else:
        when = f", last stopped {fmt_short(st['stopped_ts'])} UTC" if st.get("stopped_ts") else ""
        if st.get("started_ts") and not st.get("stopped_ts"):
            when = f", last seen {fmt_short(st['heartbeat_ts'])} UTC (it did not stop cleanly)"
        lines.append(f"daemon: NOT RUNNING (no `bot run` holds this database{when}); figures below are from its last run")
    m = st.get("model")
    if m is None:
        lines.append("model:  none promoted")
    else:
        pf = "-" if m["validated_pf"] is None else f"{m['validated_pf']:.2f}"
        lines.append(f"model:  {m['version']} ({m['status']})  validated PF {pf}")
    if st["watch_only"]:
        lines.append(f"state:  WATCH ONLY: {st['watch_reason']}")
    elif st["daemon_running"]:
        lines.append("state:  trading" if st["trading"] else "state:  starting (warming up)")
    ks = st["kill_switch"]
    lines.append("kill switch: " + (f"TRIPPED ({ks['tripped']}) since {fmt_short(ks.get('since_ts'))} UTC: no new entries"
                                    if ks.get("tripped") else "off"))  # fmt: skip
    t = st.get("today")
    lines.append(f"equity: {_money(st['equity'])}  cash {_money(st['cash'])}  last minute {fmt_short(st['last_minute_ts'])} UTC")
    if t is not None:
        p = "-" if t["pnl"] is None else f"{t['pnl']:+,.2f}" + ("" if t["pnl_pct"] is None else f" ({pct(t['pnl_pct'])})")
        lines.append(f"today ({fmt_short(t['day_start_ts'])[:5]}): P&L {p}  realised {t['realised']:+,.2f} "
                     f"over {t['trades_closed']} closed trades")  # fmt: skip
    pos = st["positions"]
    lines.append(f"open positions: {len(pos)}")
    for p in pos:
        u = "-" if p["unrealised"] is None else f"{p['unrealised']:+,.2f} ({pct(p['unrealised_pct'])})"
        lines.append(f"  {p['symbol']:<10} {p['qty']:g} @ {p['entry_price']:.6g}  since {fmt_short(p['entry_ts'])}  "
                     f"mark {p['mark'] if p['mark'] is not None else '-'}  unrealised {u}")  # fmt: skip
    feed = st["feed"]
    ages = [v["age_s"] for v in feed.values() if v["age_s"] is not None]
    missing = [s for s, v in feed.items() if v["last_candle_ts"] is None]
    if ages:
        worst = max(feed, key=lambda s: -1 if feed[s]["age_s"] is None else feed[s]["age_s"])
        lines.append(f"feed:   last candle age {duration(max(0, min(ages)))}..{duration(max(0, max(ages)))} over "
                     f"{len(ages)} symbols (oldest {worst})" + (f"; no candles: {', '.join(missing)}" if missing else ""))  # fmt: skip
        for s, v in feed.items():
            if v["age_s"] is not None:
                lag = "" if v["behind_engine_min"] is None else f"  ({v['behind_engine_min']} min behind the engine)"
                lines.append(f"  {s:<10} {fmt_short(v['last_candle_ts'])}  age {duration(max(0, v['age_s']))}{lag}")
    else:
        lines.append("feed:   no candles in the store")
    lines.append(f"next retrain: {st.get('retrain_next') or '-'} UTC")
    return lines
