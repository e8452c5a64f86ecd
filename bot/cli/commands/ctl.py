"""`bot ctl COMMAND [ARGS]`: act on the running daemon (pause, flatten, retrain, reload ...).

The command goes to the daemon through the store (`bot.ops.control.client`): the daemon answers
within a second and the answer is printed; with no daemon running it says so and nothing is
done. A command that asks for confirmation (flatten; in live mode flatten twice and force-exit
once) prints a code and waits for it on the terminal; `--yes` answers one confirmation (give it
twice for a live flatten), for scripts. Every command is recorded in the store with `user@host`.

Exit status: 0 done, 1 refused, failed or not confirmed, 2 bad usage, 3 no daemon answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config

EXIT_NO_DAEMON = 3


def register(sub: argparse._SubParsersAction) -> None:
    from bot.ops.control.commands import help_text

    p = sub.add_parser("ctl", help="act on the running daemon: pause/resume entries, flatten, force-exit, retrain, reload",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="commands:\n" + "\n".join("  " + ln for ln in help_text().splitlines()))  # fmt: skip
    p.add_argument("name", metavar="COMMAND", help="one of the commands below")
    p.add_argument("args", nargs="*", metavar="ARG", help="its argument (a symbol, a confirmation code, a count)")
    p.add_argument("-y", "--yes", action="count", default=0, help="answer a confirmation (twice in live mode)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="wait this long for the daemon (default 10)")
    p.add_argument("--json", action="store_true", help="print each answer as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bot.ops.control.commands import parse

    p = parse(args.name, args.args)
    if p.error:
        print(p.error, file=sys.stderr)
        return 2
    from bot.config import ConfigError, load_config

    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as e:  # the store is found through the config: nothing can be sent
        print(f"{e}\nnothing was sent to the daemon (it keeps the config it loaded)", file=sys.stderr)
        return 2
    return asyncio.run(_ctl(cfg, p.name, p.args, yes=args.yes, timeout_s=args.timeout, as_json=args.json))


def _dsn(cfg: Config) -> str | None:
    from bot.store.db import embedded_cluster

    emb = embedded_cluster(cfg)
    if emb is None:
        return cfg.database.dsn.get_secret_value()
    if not (emb.initialised() and emb.running()):
        return None
    return emb.dsn()


async def _ctl(cfg: Config, name: str, args: list[str], *, yes: int, timeout_s: float, as_json: bool) -> int:
    import asyncpg

    from bot.config import mask_dsn
    from bot.ops.control.client import cli_identity, send
    from bot.store.daemon_lock import read_status

    dsn = _dsn(cfg)
    if dsn is None:
        print("no daemon running: its embedded database is stopped (`bot run` starts both); nothing done", file=sys.stderr)
        return EXIT_NO_DAEMON
    try:
        conn = await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": "bot ctl"})
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        print(f"cannot reach the store: {type(e).__name__}: {mask_dsn(str(e))}; nothing done", file=sys.stderr)
        return 1
    try:
        st = await read_status(conn)
        if not st or not st.get("running"):
            print("no daemon running on this database (`bot run` starts one); nothing done", file=sys.stderr)
            return EXIT_NO_DAEMON
        who = cli_identity()
        while True:
            try:
                row = await send(conn, who, name, args, timeout_s=timeout_s)
            except asyncpg.UndefinedTableError:
                print("this database has no commands table yet: the daemon runs an older version (restart `bot run` "
                      "with this one); nothing done", file=sys.stderr)  # fmt: skip
                return EXIT_NO_DAEMON
            _show(row, as_json)
            if row.status == "expired" or row.status in ("pending", "running"):
                if row.status != "expired":
                    print(f"the daemon took the command but has not answered yet (command {row.id}); "
                          "see `bot tail` for its CONTROL line", file=sys.stderr)  # fmt: skip
                return EXIT_NO_DAEMON
            if row.status != "confirm":
                return 0 if row.status == "done" else 1
            code = str((row.result or {}).get("code", ""))
            if yes > 0:
                yes -= 1
                print(f"confirmed by --yes ({code})", file=sys.stderr)
            elif sys.stdin.isatty():
                typed = await asyncio.to_thread(input, "type the code to confirm (anything else cancels): ")
                if typed.strip() != code:
                    print("not confirmed: nothing done")
                    return 1
            else:
                print("not confirmed (no terminal: pass --yes, twice in live mode): nothing done", file=sys.stderr)
                return 1
            name, args = "confirm", [code]
    finally:
        await conn.close()


def _show(row: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": row.id, "command": row.command, "args": row.args, "status": row.status,
                          "answer": row.answer, "result": row.result}, default=str))  # fmt: skip
    else:
        print(row.answer or row.status)
