"""`bot config check`: validate the config and print the effective values, secrets masked."""

from __future__ import annotations

import argparse
import sys

import yaml

from bot.config import ConfigError, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="inspect the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate and print the effective config (secrets masked)")
    check.set_defaults(func=_check)
    tmpl = csub.add_parser("template", help="print the complete default config as commented YAML")
    tmpl.set_defaults(func=_template)


def _template(args: argparse.Namespace) -> int:
    from bot.config import render_default_yaml

    sys.stdout.write(render_default_yaml())
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(cfg.masked(), sort_keys=False))
    print(f"# config OK: mode={cfg.mode}, {len(cfg.symbols)} symbols", file=sys.stderr)
    return 0
