"""`bot config check [--show]`: the verdict first (OK / every problem with its key), then, with
`--show`, the effective values with secrets masked. `bot config template`: the default file."""

from __future__ import annotations

import argparse
import sys

import yaml

from bot.config import Config, ConfigError, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="inspect the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate the config: the verdict, then (--show) the effective values")
    check.add_argument("--show", action="store_true", help="also print every effective value (secrets masked)")
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
    print(f"config OK: {_summary(cfg, args.config)}")
    if args.show:
        sys.stdout.write(yaml.safe_dump(cfg.masked(), sort_keys=False))
    else:
        print("(bot config check --show prints every effective value, secrets masked)")
    return 0


def _summary(cfg: Config, path: str | None) -> str:
    from bot.config import resolve_config_path

    src = resolve_config_path(path)
    db = "external database" if cfg.database.dsn.get_secret_value() else f"embedded database in {cfg.paths.data_dir}/pgdata"
    keys = "API keys set" if cfg.secrets.complete else "no API keys"
    tg = "telegram on" if cfg.telegram.enabled else "telegram off"
    n = len(cfg.symbols)
    return f"{src or '(embedded defaults)'}: mode {cfg.mode}, {n} symbol{'' if n == 1 else 's'}, {db}, {keys}, {tg}"
