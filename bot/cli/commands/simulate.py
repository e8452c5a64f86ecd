"""`bot simulate-exchange --candles DIR [--speed X] [--port P]`: serve recorded candles as a
Binance-compatible exchange (REST + websocket) for paper runs, demos and tests.

Point the bot at it with the printed `exchange.urls` config. Signed endpoints accept the key
pair from `--keys-file` (YAML with api_key/api_secret, like `exchange.secrets_file`) or from
$BOT_API_KEY/$BOT_API_SECRET; without one, signed requests get Binance's -2015 error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from models.timeutil import DAY_MS, fmt_ts, parse_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate-exchange", help="serve recorded candles as a Binance-compatible exchange")
    p.add_argument("--candles", required=True, metavar="DIR", help="directory of SYMBOL.csv.gz files")
    p.add_argument("--symbols", default=None, help="comma-separated subset (default: every file in DIR)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed: 1 = real time, 60 = an hour a minute, 0 = frozen")
    p.add_argument("--start", default=None,
                   help="replay clock start: epoch ms or ISO time (UTC), default: 8 days into the data "
                        "(so a 7-day backfill has history)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900, help="TCP port (0 = any free port)")
    p.add_argument("--update-interval", type=float, default=2.0, help="wall seconds between in-progress kline updates")
    p.add_argument("--keys-file", default=None, help="YAML file with api_key/api_secret accepted on signed endpoints")
    p.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT",
                   help="starting balance, repeatable (default USDT=10000)")  # fmt: skip
    p.add_argument("--fee", type=float, default=0.001, help="trading fee rate (default 0.001 = 0.1%%)")
    p.add_argument("--faults", default=None, metavar="FILE",
                   help='JSON list of faults [{"kind": "ws_drop", "at_ms": ..., "symbol": ...}]')  # fmt: skip
    p.add_argument("--timeout-delay", type=float, default=30.0, help="seconds a rest_timeout fault holds the answer")
    p.add_argument("--ws-queue-size", type=int, default=20_000, help="frames queued per websocket client before it is cut as too slow")
    p.add_argument("--record-close-times", action="store_true",
                   help="keep each minute's close time (GET /_sim/close_times) for delay benchmarks")  # fmt: skip
    p.set_defaults(func=_run)


def _keys(path: str | None) -> dict[str, str]:
    if path:
        from bot.config import ConfigError, read_secrets_file

        try:
            s = read_secrets_file(Path(path))
        except ConfigError as e:
            raise SystemExit(f"--keys-file: {'; '.join(e.problems)}") from None
        if s.api_key and s.api_secret:
            return {s.api_key.get_secret_value(): s.api_secret.get_secret_value()}
        raise SystemExit("--keys-file: needs both api_key and api_secret")
    k, sec = os.environ.get("BOT_API_KEY"), os.environ.get("BOT_API_SECRET")
    return {k: sec} if k and sec else {}


def _run(args: argparse.Namespace) -> int:
    from bot.logs.setup import setup_logging

    setup_logging(None, level="info", console=True)
    if args.speed < 0:
        print("--speed must be >= 0", file=sys.stderr)
        return 2
    balances: dict[str, float] = {}
    for b in args.balance or ["USDT=10000"]:
        asset, _, amount = b.partition("=")
        try:
            balances[asset.strip().upper()] = float(amount)
        except ValueError:
            print(f"--balance {b!r}: expected ASSET=AMOUNT", file=sys.stderr)
            return 2
    try:
        start = parse_time(args.start) if args.start else None
    except ValueError:
        print(f"--start {args.start!r}: expected epoch ms or an ISO time like 2021-04-20T01:00", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, balances, start))


async def _serve(args: argparse.Namespace, balances: dict[str, float], start: int | None) -> int:
    from bot.exchange_sim.faults import Fault, FaultPlanError
    from bot.exchange_sim.replay import CandleBook
    from bot.exchange_sim.server import ExchangeSimulator, SimSettings

    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    try:
        book = await asyncio.to_thread(CandleBook.from_directory, args.candles, symbols)
    except (FileNotFoundError, ValueError) as e:
        print(f"--candles: {e}", file=sys.stderr)
        return 2
    faults: list[Fault] = []
    if args.faults:
        try:
            faults = [Fault(f["kind"], int(f["at_ms"]), f.get("symbol")) for f in json.loads(Path(args.faults).read_text())]
        except (OSError, ValueError, KeyError, TypeError, FaultPlanError) as e:
            print(f"--faults {args.faults}: {e}", file=sys.stderr)
            return 2
    settings = SimSettings(
        speed=args.speed, start_ms=start if start is not None else book.first_ms + 8 * DAY_MS,
        update_interval_s=args.update_interval, fee_rate=args.fee, balances=balances,
        api_keys=_keys(args.keys_file), timeout_delay_s=args.timeout_delay,
        ws_queue_size=args.ws_queue_size, record_close_times=args.record_close_times,
    )  # fmt: skip
    sim = ExchangeSimulator(book, settings, faults)
    await sim.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    now = fmt_ts(sim.clock.now_ms(), seconds=True)
    print(f"exchange simulator on {sim.base_url}: {len(book.symbols)} symbols, clock {now} UTC x{args.speed:g}", flush=True)
    print("config:\n  exchange:\n    urls:\n" + "".join(f"      {k}: {v}\n" for k, v in sim.urls.items()), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0
