"""`bot tail [-f] [-n N] [--since 1h] [--level warning] [--json]`: the daemon's short lines.

Reads the JSON log (and its rotated backups) that the daemon writes, so it works while the
daemon runs and after it stopped, and follows across rotation with `-f` (see `bot.ops.tail`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tail",
        help="print the daemon's short log lines (UTC), optionally following them",
        description="Print the last short log lines of the daemon (times MM-DD HH:MM UTC). "
        "Reads paths.logs_dir/logging.json_file and its rotated backups; -f keeps following "
        "across log rotation until Ctrl-C.",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they are written")
    p.add_argument("-n", "--lines", type=int, default=None, metavar="N",
                   help="how many past lines (default 20, or all since --since; 0 = none)")  # fmt: skip
    p.add_argument("--since", metavar="WHEN", help="only lines since then: 30m, 1h, 2d, 1w ago or a UTC date/time")
    p.add_argument("--level", choices=("debug", "info", "warning", "error"), default="info",
                   help="lowest level shown (default info)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the JSON records (every field) instead")
    p.add_argument("--file", metavar="PATH", help="the JSON log to read (default: from the config)")
    p.set_defaults(func=_tail)


def _log_path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    from bot.config import load_config

    cfg = load_config(args.config)
    return Path(cfg.paths.logs_dir) / cfg.logging.json_file


def _tail(args: argparse.Namespace) -> int:
    from bot.config import ConfigError
    from bot.logs.setup import human_line
    from bot.ops.tail import Filter, parse_since, tail_records
    from models.timeutil import TimeParseError

    try:
        path = _log_path(args)
        since = parse_since(args.since) if args.since else None
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except TimeParseError as e:
        print(f"--since: {e}", file=sys.stderr)
        return 2
    if args.lines is not None and args.lines < 0:
        print("-n: must be >= 0", file=sys.stderr)
        return 2
    if not path.exists() and not args.follow:
        print(f"no log at {path} yet (has the daemon run with this config?)", file=sys.stderr)
        return 1
    out = sys.stdout
    if not args.json:
        out.write(f"# times are UTC (MM-DD HH:MM); log {path}\n")
    keep = Filter(since_ms=since, min_level=args.level)
    n = args.lines if args.lines is not None else (None if since is not None else 20)
    try:
        for rec in tail_records(path, keep, n, follow=args.follow):
            out.write((json.dumps(rec) if args.json else human_line(rec)) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `bot tail | head`
        return 0
    return 0
