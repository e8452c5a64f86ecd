"""`bot status [--json]`: the daemon at a glance, from another process (read from the store).

Mode, uptime, model version and its validated PF, trading or watch-only (and why), equity,
today's P&L, open positions with unrealised P&L (marked at the last candle in the store), the
last candle's age per symbol (feed health), the kill switch, the next retrain. Says clearly when
no daemon runs; with the embedded database it never starts the cluster just to answer (a
stopped cluster means no daemon runs: it says so). What is read and how: `bot.ops.read_model`.
`--json` is the whole `OperatorView` (`bot.ops.read_model.to_json`).
Exit status: 0 with a daemon running, 3 without one (scripts can test it), 1 if the database
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from bot.cli.commands import load_config_or_exit

if TYPE_CHECKING:
    from bot.config import Config
    from bot.ops.read_model import OperatorView

EXIT_NO_DAEMON = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the daemon at a glance: mode, model, equity, positions, feed, kill switch")
    p.add_argument("--json", action="store_true", help="one JSON object (every field)")
    p.set_defaults(func=_run)


async def _read(dsn: str, cfg: Config) -> OperatorView:
    import asyncpg

    from bot.ops.read_model import ReadModel

    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": "bot status"})
    try:
        return await ReadModel(conn, cfg.mode, list(cfg.symbols), mode_from_daemon=True).view()
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
            print(json.dumps({"daemon": {"running": False, "state": "never" if why == "not created yet" else "stopped"},
                              "database": why, "data_dir": str(emb.data_dir), "message": msg}))  # fmt: skip
        else:
            print(msg)
        return EXIT_NO_DAEMON
    dsn = emb.dsn() if emb is not None else cfg.database.dsn.get_secret_value()
    try:
        view = asyncio.run(_read(dsn, cfg))
    except Exception as e:  # noqa: BLE001 - a status command reports, it does not crash
        print(f"cannot read the store: {type(e).__name__}: {mask_dsn(str(e))}", file=sys.stderr)
        return 1
    if args.json:
        from bot.ops.read_model import to_json

        print(json.dumps(to_json(view), allow_nan=False))
    else:
        print("\n".join(render(view)))
    return 0 if view.daemon.running else EXIT_NO_DAEMON


def render(v: OperatorView) -> list[str]:
    """The human report (times UTC, `MM-DD HH:MM`; which clock each figure is on: `bot.ops.read_model`)."""
    from models.textfmt import MISSING, count, duration, money, pct, pf, price
    from models.timeutil import fmt_short

    d = v.daemon
    lines = []
    if d.running:
        up = f"  up {duration(d.uptime_s)}" if d.uptime_s is not None else ""
        hb = f"  (heartbeat {duration(d.heartbeat_age_s)} ago)" if d.heartbeat_age_s is not None else ""
        lines.append(f"daemon: RUNNING {d.mode or v.mode}  pid {d.pid} on {d.host}{up}{hb}"
                     + ("  STALLED: " + d.state_text if d.state == "stale" else ""))  # fmt: skip
    else:
        when = ""
        if d.state == "stopped":
            when = f", last stopped {fmt_short(d.stopped_ts)} UTC"
        elif d.state == "vanished":
            when = f", last seen {fmt_short(d.heartbeat_ts)} UTC (it did not stop cleanly)"
        lines.append(f"daemon: NOT RUNNING (no `bot run` holds this database{when}); figures below are from its last run")
    m = v.model
    if m is None:
        lines.append("model:  none promoted")
    else:
        lines.append(f"model:  {m.version} ({m.status})  validated PF {pf(m.validated_pf)}")
    if v.paused is not None:
        lines.append(f"entries: PAUSED since {fmt_short(v.paused.since_ts)} UTC by {v.paused.by}: no new positions, "
                     "exits go on (`bot ctl resume`)")  # fmt: skip
    if v.watch_only:
        lines.append(f"state:  WATCH ONLY: {v.watch_reason}")
    elif d.running:
        lines.append("state:  trading" if v.trading else "state:  starting (warming up)")
    ks = v.kill_switch
    lines.append("kill switch: " + (f"TRIPPED ({ks.tripped}) since {fmt_short(ks.since_ts)} UTC: no new entries"
                                    if ks.tripped else "off"))  # fmt: skip
    lines.extend(f"protection: {p.text}" for p in v.protections)  # only while one blocks entries
    a, c = v.account, v.clock
    step = f" (engine stepped {duration(d.last_step_age_s)} ago)" if d.running and d.last_step_age_s is not None else ""
    if a is None:
        lines.append(f"equity: {MISSING}  last minute {fmt_short(c.last_minute_ts)} UTC{step}")
    else:
        lines.append(f"equity: {money(a.equity, sign=False)}  cash {money(a.cash, sign=False)}  exposure "
                     f"{pct(a.exposure_pct, sign=False, digits=1)}  last minute {fmt_short(c.last_minute_ts)} UTC{step}")  # fmt: skip
    t = v.today
    if t is not None:
        p = MISSING if t.pnl is None else money(t.pnl) + ("" if t.pnl_pct is None else f" ({pct(t.pnl_pct)})")
        lines.append(f"today ({fmt_short(t.start_ts)[:5]}): P&L {p}  realised {money(t.realised)} "
                     f"over {count(t.trades_closed)} closed trades")  # fmt: skip
    u = v.unrealised
    lines.append(f"open positions: {len(v.positions)}" + ("" if u is None else f"  unrealised {money(u)}"))
    for ps in v.positions:
        un = MISSING if ps.unrealised is None else f"{money(ps.unrealised)} ({pct(ps.unrealised_pct)})"
        lines.append(f"  {ps.symbol:<10} {price(ps.qty)} @ {price(ps.entry_price)}  since {fmt_short(ps.entry_ts)}  "
                     f"held {duration(ps.held_s)}  mark {price(ps.mark)}  unrealised {un}")  # fmt: skip
    feed = v.feed
    ages = {s: f.age_s for s, f in feed.items() if f.age_s is not None}
    missing = [s for s, f in feed.items() if f.last_candle_ts is None]
    if ages:
        worst = max(ages, key=lambda s: ages[s])
        lines.append(f"feed:   last candle age {duration(min(ages.values()))}..{duration(max(ages.values()))} behind the "
                     f"last minute over {len(ages)} symbols (oldest {worst})"
                     + (f"; no candles: {', '.join(missing)}" if missing else ""))  # fmt: skip
        for s, f in feed.items():
            if f.age_s is not None:
                lines.append(f"  {s:<10} {fmt_short(f.last_candle_ts)}  age {duration(f.age_s)}  {f.health}")
    else:
        lines.append("feed:   no candles in the store")
    lines.append(f"next retrain: {v.retrain_next or MISSING} UTC")
    return lines
