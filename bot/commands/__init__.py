"""One module per CLI subcommand (group); see `bot.cli`."""

from __future__ import annotations

import argparse
import sys

from bot.config import Config, ConfigError, load_config


def load_config_or_exit(args: argparse.Namespace) -> Config:
    """Load the config named by `--config`; on any problem print one line each and exit 2."""
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None
