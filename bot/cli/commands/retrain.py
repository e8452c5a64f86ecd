"""`bot retrain --now`: a champion/challenger retrain now (see `bot.training.retrain`).

With a daemon running on this machine and store, it is asked to retrain (SIGUSR1): the
training runs in the daemon's own limited child process while it keeps trading, and its
outcome is the daemon's `RETRAIN ...` log line. With no daemon, the same retrain runs from
here on the candles in the store (`bot backfill` first) and a winning challenger is promoted;
a daemon started later uses it. `bot train --promote` is the same as the latter.

Exit status: 0 promoted (or the daemon was asked), 3 rejected, 1 failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

from bot.cli.commands import load_config_or_exit

if TYPE_CHECKING:
    from bot.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="train a challenger now, judge it against the champion, promote if better")
    p.add_argument("--now", action="store_true", required=True, help="now (the schedule is daemon.retrain_cron)")
    p.add_argument("--here", action="store_true", help="run it in this command even if a daemon runs")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    return asyncio.run(retrain_here_or_ask(cfg, ask_daemon=not args.here))


async def retrain_here_or_ask(cfg: Config, *, ask_daemon: bool = True) -> int:
    from bot.store.daemon_lock import read_status
    from bot.store.db import open_store
    from bot.training.retrain import retrain_once
    from models.timeutil import MINUTE_MS, fmt_ts

    async with open_store(cfg) as store:
        st = await read_status(store.pool)
        if ask_daemon and st and st.get("running") and st.get("host") == socket.gethostname() and st.get("pid"):
            try:
                os.kill(int(st["pid"]), signal.SIGUSR1)
            except OSError as e:
                print(f"cannot signal the daemon (pid {st['pid']}): {e.strerror}", file=sys.stderr)
                return 1
            print(f"asked the daemon (pid {st['pid']}) to retrain now; its log says how it went (RETRAIN ...)")
            return 0
        ends = [t for t in [await store.last_candle_ts(s) for s in cfg.symbols] if t is not None]
        if not ends:
            print("no candles in the store: `bot backfill` or `bot import-candles` first", file=sys.stderr)
            return 1
        end = min(max(ends) + MINUTE_MS, (int(__import__("time").time() * 1000) // MINUTE_MS) * MINUTE_MS)
        print(f"retraining on the store's candles up to {fmt_ts(end)} in a separate process (progress in the log)...")
        res = await retrain_once(cfg, store.pool, store.dsn, end)
    print(res.line())
    if not res.ok:
        return 1
    return 0 if res.promoted else 3
