"""`bot models list | show VERSION | promote VERSION [--force] | rollback`: the model versions.

Promotion is a status change (candidate -> champion, the old champion -> retired), so a
rollback is promoting the previous champion again. A bundle is loaded and validated before it
can be promoted: a broken bundle never becomes the champion. A rejected bundle (failed leakage
audit, lost to the champion) or a degenerate one (no validation trades, a one-round booster:
`models.bundle.champion.degenerate_reason`) is refused with the reason unless `--force`. Every
promotion, rollback and refusal is logged; a running daemon swaps to the new champion between
two minutes (`bot.live.hotswap`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit
from models.timeutil import fmt_ts

if TYPE_CHECKING:
    from bot.config import Config
    from bot.store.db import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, inspect and promote model bundles")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="model versions, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_list)
    show = msub.add_parser("show", help="one version: store record + bundle manifest summary")
    show.add_argument("version")
    show.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    show.set_defaults(func=_show)
    pr = msub.add_parser("promote", help="make a version the champion")
    pr.add_argument("version")
    pr.add_argument("--force", action="store_true",
                    help="promote even a rejected or degenerate version (failed leakage audit, no validation trades)")
    pr.set_defaults(func=_promote)
    rb = msub.add_parser("rollback", help="make the previous champion the champion again")
    rb.set_defaults(func=_rollback)


def _fmt_pf(m: dict[str, Any] | None) -> str:
    wf = (m or {}).get("walk_forward") or {}
    pf = wf.get("profit_factor")
    ex = wf.get("expectancy")
    return f"PF {'-' if pf is None else f'{pf:.2f}'} exp {'-' if ex is None else f'{ex * 100:+.3f}%'} n={wf.get('trades', '-')}"


async def _with_store(cfg: Config, fn: Any) -> int:
    from bot.store.db import open_store

    async with open_store(cfg) as store:
        return await fn(store)


async def _open_version(store: Store, version: str, load: Callable[[str], Any], failed: str) -> tuple[Any, Any] | None:
    """Find `version` in model_versions and load its bundle with `load` (`read_manifest` or
    `load_bundle`): (row, loaded), or None after telling the user what went wrong (`failed`,
    formatted with the row as `r`, prefixes a bundle error)."""
    from bot.store.model_versions import get_model_version
    from models.bundle.directory import BundleError

    r = await get_model_version(store.pool, version)
    if r is None:
        print(f"unknown model version {version!r}; see `bot models list`", file=sys.stderr)
        return None
    try:
        return r, await asyncio.to_thread(load, r.path)
    except BundleError as e:
        print(f"{failed.format(r=r)}: {e}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.store.model_versions import list_model_versions

    async def go(store: Store) -> int:
        rows = await list_model_versions(store.pool, args.limit)
        if not rows:
            print("no model versions recorded (train one with `bot train`)")
            return 0
        print(f"{'version':<28} {'status':<10} {'created':<17} {'data':<35} walk-forward")
        for r in rows:
            data = f"{fmt_ts(r.data_from_ts)} .. {fmt_ts(r.data_to_ts)}"
            why = (r.metrics or {}).get("reason")
            print(f"{r.version:<28} {r.status:<10} {fmt_ts(r.created_ts):<17} {data:<35} {_fmt_pf(r.metrics)}"
                  + (f"  [{why}]" if why and r.status != "champion" else ""))  # fmt: skip
        return 0

    return asyncio.run(_with_store(cfg, go))


def _show(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from models.bundle.directory import read_manifest
    from models.evaluation.tables import audit_lines, walk_forward_table

    async def go(store: Store) -> int:
        found = await _open_version(store, args.version, read_manifest, "{r.version}: {r.status}; bundle unreadable")
        if found is None:
            return 1
        r, m = found
        if args.json:
            print(json.dumps(m, indent=2))
            return 0
        print(f"version      {r.version}  ({r.status}{', promoted ' + fmt_ts(r.promoted_ts) if r.promoted_ts else ''})")
        print(f"path         {r.path}")
        print(f"code         {m.get('code_version')}")
        print(f"data         {fmt_ts(m['data_from_ts'])} .. {fmt_ts(m['data_to_ts'])}, {len(m.get('symbols', []))} symbols")
        print(f"features     {len(m['selected_features'])} of {len(m['feature_names'])} selected")
        print(f"thresholds   er > {m['thresholds']['er']}, meta p > {m['thresholds']['meta']}; "
              f"ensemble w_lgb {m['ensemble']['w_lgb']:.2f}")  # fmt: skip
        if m.get("walk_forward", {}).get("folds"):
            print("\n" + walk_forward_table(m["walk_forward"]))
        print("\n" + audit_lines(m.get("audit") or {}))
        return 0

    return asyncio.run(_with_store(cfg, go))


def _promote(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    import structlog

    from bot.logs.setup import setup_from_config
    from bot.store.model_versions import ModelVersionError, promote
    from models.bundle.champion import degenerate_reason
    from models.bundle.directory import load_bundle

    setup_from_config(cfg, console=False)
    log = structlog.get_logger("bot.models")

    async def go(store: Store) -> int:
        found = await _open_version(store, args.version, load_bundle, "refusing to promote {r.version}")
        if found is None:
            return 1
        r, bundle = found
        why = degenerate_reason(bundle.manifest) or (
            f"it was rejected: {(r.metrics or {}).get('reason') or 'see `bot models show`'}" if r.status == "rejected" else None
        )
        if why and not args.force:
            log.warning("model_promote_refused", version=r.version, reason=why,
                        text=f"MODEL {r.version} not promoted: {why}")  # fmt: skip
            print(f"refusing to promote {r.version}: {why}; pass --force to promote it anyway", file=sys.stderr)
            return 1
        try:
            prev = await promote(store.pool, r.version, int(time.time() * 1000), allow_rejected=args.force)
        except ModelVersionError as e:
            print(str(e), file=sys.stderr)
            return 1
        forced = f" (forced despite: {why})" if why else ""
        log.info("model_promoted", version=r.version, previous=prev.version if prev else None, by="hand", forced=bool(why),
                 reason=why, text=f"MODEL {r.version} promoted by hand (was {prev.version if prev else 'none'}){forced}")  # fmt: skip
        print(f"{r.version} is now the champion" + (f" (was {prev.version}, now retired)" if prev else "") + forced)
        return 0

    return asyncio.run(_with_store(cfg, go))


def _rollback(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    import structlog

    from bot.logs.setup import setup_from_config
    from bot.store.model_versions import ModelVersionError, champion, previous_champion, promote
    from models.bundle.directory import load_bundle

    setup_from_config(cfg, console=False)
    log = structlog.get_logger("bot.models")

    async def go(store: Store) -> int:
        cur = await champion(store.pool)
        prev = await previous_champion(store.pool)
        if prev is None:
            print("nothing to roll back to: no earlier champion is recorded", file=sys.stderr)
            return 1
        found = await _open_version(store, prev.version, load_bundle, "cannot roll back to {r.version}")
        if found is None:
            return 1
        try:
            await promote(store.pool, prev.version, int(time.time() * 1000), allow_rejected=True)
        except ModelVersionError as e:
            print(str(e), file=sys.stderr)
            return 1
        log.info("model_rollback", version=prev.version, previous=cur.version if cur else None,
                 text=f"MODEL rolled back to {prev.version} (was {cur.version if cur else 'none'})")  # fmt: skip
        print(f"rolled back: {prev.version} is the champion again" + (f" ({cur.version} retired)" if cur else ""))
        return 0

    return asyncio.run(_with_store(cfg, go))
