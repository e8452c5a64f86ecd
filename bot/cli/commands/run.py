"""`bot run`: the daemon (paper mode unless the config says live AND --confirm-live is given)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.cli.commands import load_config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the trading daemon (paper mode by default)")
    p.add_argument(
        "--confirm-live",
        action="store_true",
        help="required, together with `mode: live` in the config, before any real order can be placed",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="when no model is promoted yet, do not train one at start (the daemon then only collects candles)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    if cfg.mode == "live" and not args.confirm_live:
        print(
            "mode: live needs --confirm-live on the command line too; refusing to start "
            "(use mode: paper to trade on paper)",
            file=sys.stderr,
        )
        return 2
    from bot.live.daemon import hold_stop_signals

    hold_stop_signals()  # a SIGTERM from here on is a clean stop, even before the loop runs
    from bot.config import resolve_config_path
    from bot.live.daemon import run_daemon
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg)
    return asyncio.run(run_daemon(cfg, no_train=args.no_train, confirm_live=args.confirm_live,
                                  config_path=resolve_config_path(getattr(args, "config", None))))  # fmt: skip
