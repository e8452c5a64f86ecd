"""The `bot` command line. Each subcommand lives in its own module under `bot/cli/commands/` and is
discovered automatically: a module there defines `register(subparsers)` which adds its parser
and sets `func(args) -> int`. Heavy imports (ccxt, lightgbm, ...) happen inside the handlers so
that `bot config check` stays fast and light.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import bot.cli.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot", description="30-symbol crypto trading daemon (paper by default)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="config file (default: $BOT_CONFIG, else ./config.yaml, else embedded defaults)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(bot.cli.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"bot.cli.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def _hoist_config(argv: list[str]) -> list[str]:
    """Let `--config FILE` appear after the subcommand too (`bot config check --config x`)."""
    out: list[str] = []
    cfg: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            cfg = ["--config", argv[i + 1]]
            i += 2
            continue
        if a.startswith("--config="):
            cfg = ["--config", a.split("=", 1)[1]]
            i += 1
            continue
        out.append(a)
        i += 1
    return cfg + out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_hoist_config(argv))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
