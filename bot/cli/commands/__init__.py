"""One module per CLI subcommand (group); see `bot.cli.main`. Helpers several commands share live
here (`load_config_or_exit`, `read_symbols`), never in one command's module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.config import Config, ConfigError, load_config


def load_config_or_exit(args: argparse.Namespace) -> Config:
    """Load the config named by `--config`; on any problem print one line each and exit 2.
    Notices (a key read under its old name) go to stderr, one line each, and the command goes on."""
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None
    for line in cfg.notices:
        print(f"config: {line}", file=sys.stderr)
    return cfg


def read_symbols(arg: str | None, default: tuple[str, ...]) -> list[str]:
    """`--symbols`: comma-separated or @FILE (whitespace/commas), normalised to BTCUSDT; else `default`."""
    if not arg:
        return list(default)
    if arg.startswith("@"):
        text = Path(arg[1:]).read_text()
        items = text.replace(",", " ").split()
    else:
        items = arg.split(",")
    return [s.strip().upper().replace("/", "") for s in items if s.strip()]
