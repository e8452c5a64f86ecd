"""`make reliability`: run the reliability suite (issue 15) and report its figures.

Runs every test of tests/reliability/ -- the `reliability`-marked long ones included,
the fuzzing at 2,000 examples per property, the 30-symbol Postgres outages -- with $RELIABILITY_OUT pointing at a scratch
directory where the tests record what they measured (tests/support/reliability_figures.py). Then prints
ONE table and writes docs/reliability.md and docs/reliability.json.

A figure no test measured is written as null with the reason, never estimated. The week-long
run (tests/reliability/test_week.py) also writes its sample table (RSS, fds, threads, tasks,
queues, table rows every few simulated hours) under the table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOT_YET = "not measured yet: needs issue 11/12 work"
DAEMON_KEYS = ("faults_injected", "candles_lost", "duplicate_orders", "position_mismatches", "crashes", "kills_recovered")
KEYS = ("faults_injected", "candles_lost", "duplicate_orders", "position_mismatches", "crashes", "kills_recovered",
        "pg_outages_survived", "secrets_found", "rss_growth_pct", "bad_configs_tried", "bad_configs_clear_error")  # fmt: skip


def run_suite(out: Path) -> int:
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "reliability").glob("test_*.py"))
    env = {**os.environ, "RELIABILITY_OUT": str(out), "RELIABILITY_FUZZ": os.environ.get("RELIABILITY_FUZZ", "2000")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "reliability or not reliability", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def load(out: Path, name: str) -> Any:
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def figures(out: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    bad, secrets = load(out, "bad_configs"), load(out, "secrets")
    fig: dict[str, Any] = dict.fromkeys(KEYS)
    notes = dict.fromkeys(KEYS, NOT_YET)
    if bad is not None:
        fig["bad_configs_tried"], fig["bad_configs_clear_error"] = bad["tried"], bad["clear_error"]
        notes["bad_configs_tried"] = notes["bad_configs_clear_error"] = (
            "tests/support/bad_configs.py; each run as `bot config check` and `bot run` processes: exit 2, one line naming "
            "the key and the reason, no file written")
    else:
        notes["bad_configs_tried"] = notes["bad_configs_clear_error"] = "the test did not record it (failed or not run)"
    if secrets is not None:
        fig["secrets_found"] = secrets["found"]
        notes["secrets_found"] = (f"fake key/secret/Telegram token; {secrets['files_scanned']} files, "
                                  f"{secrets['tables_scanned']} tables, pages {', '.join(secrets['pages_scanned'])}, "
                                  f"commands: {', '.join(secrets['commands'])}")  # fmt: skip
    else:
        notes["secrets_found"] = "the test did not record it (failed or not run)"
    pg = [x for x in (load(out, "pg_outages"), load(out, "pg_outages_30"), load(out, "pg_outages_live"),
                             load(out, "pg_outage_live_mid_step")) if x is not None]
    if pg:  # tests/reliability/test_pg_outage.py: restarts and stalls under a running paper daemon
        fig["pg_outages_survived"] = sum(int(x["survived"]) for x in pg)
        notes["pg_outages_survived"] = "; ".join(
            f"{x['symbols']} symbols{' live' if 'orders_while_down' in x else ''}: {' + '.join(f'{k} {m} min' for k, m in zip(x['kinds'], x['minutes_down'], strict=True))}"
            f" (exchange time), {x['dropped_candles']} candles dropped from memory and re-fetched, {x['entries_paused']} "
            f"entries paused, candles lost {x['candles_lost']}, crashes {x['crashes']}" for x in pg)  # fmt: skip
    else:
        notes["pg_outages_survived"] = "the test did not record it (failed or not run)"
    week = load(out, "week")
    if week is not None:
        fig["rss_growth_pct"] = week["rss_growth_pct"]
        notes["rss_growth_pct"] = (
            f"tests/reliability/test_week.py: {week['simulated_days']:g} simulated days, {week['symbols']} real symbols at "
            f"{week['speed']:g}x ({week['wall_s']} s wall), paper, {week['retrains']} retrain(s) and {week['swaps']} hot "
            f"swap(s); RSS {week['rss_mb'][0]:.1f} -> {week['rss_mb'][1]:.1f} MB after the first day's warm-up")  # fmt: skip
    else:
        notes["rss_growth_pct"] = "the week-long test did not record it (failed or not run)"
    daemon_figures(out, fig, notes)
    extra = {k: load(out, k) for k in ("fuzz_examples_per_property", "bundles_refused", "log_dir_unwritable",
                                       "pg_outages", "pg_outages_30", "pg_outages_live", "pg_outage_live_mid_step", "week", "week_keep_up",
                                       "systemd")}  # fmt: skip
    extra["daemon_runs"] = {k: _brief_run(load(out, k)) for k in DAEMON_RUNS}
    return fig, notes, extra


DAEMON_RUNS = ("daemon_fault_run_paper", "daemon_fault_run_live", "daemon_kill_run")  # tests/reliability/test_daemon.py


def _brief_run(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    keep = ("mode", "hours", "symbols", "speed", "faults_planned", "faults_injected", "candles", "candles_lost",
            "duplicate_orders", "position_mismatches", "crashes", "tracebacks", "kills", "kills_recovered",
            "restart_problems", "retrain_kill", "crash_point_kills", "orders_on_exchange", "seconds")  # fmt: skip
    return {**{k: r.get(k) for k in keep}, "faults_by_kind": {f["kind"]: f["applied"] for f in r["faults"]},
            "outcomes": {f["kind"]: f["outcome"] for f in r["faults"]}}  # fmt: skip


def daemon_figures(out: Path, fig: dict[str, Any], notes: dict[str, str]) -> None:
    """The whole-daemon fault runs (paper, live) and the kill -9 run: summed over the runs
    that recorded, each note naming the runs and their parts."""
    runs = {k: load(out, k) for k in DAEMON_RUNS}
    got = {k: r for k, r in runs.items() if r is not None}
    if not got:
        for k in ("faults_injected", "candles_lost", "duplicate_orders", "position_mismatches", "crashes", "kills_recovered"):
            notes[k] = "the daemon fault/kill tests did not record it (failed or not run)"
        return
    names = {"daemon_fault_run_paper": "paper fault run", "daemon_fault_run_live": "live fault run",
             "daemon_kill_run": "live kill -9 run"}  # fmt: skip
    each = lambda key: ", ".join(f"{names[k]} {r[key]}" for k, r in got.items())  # noqa: E731
    missing = [names[k] for k in DAEMON_RUNS if k not in got]
    tail = f" (not recorded: {', '.join(missing)})" if missing else ""
    for key in ("faults_injected", "candles_lost", "duplicate_orders", "position_mismatches", "crashes"):
        fig[key] = sum(int(r[key]) for r in got.values())
    fig["crashes"] += sum(int(r["tracebacks"]) for r in got.values())
    notes["faults_injected"] = f"30 symbols, real candles, fast clock, every simulator fault kind: {each('faults_injected')}{tail}"
    notes["candles_lost"] = f"candles table vs source, minute by minute, every symbol, whole window: {each('candles_lost')}{tail}"
    notes["duplicate_orders"] = f"decisions placed twice (exchange and store): {each('duplicate_orders')}{tail}"
    notes["position_mismatches"] = f"after the final reconciliation (paper: store vs its fills): {each('position_mismatches')}{tail}"
    notes["crashes"] = f"daemon exits other than the kills + tracebacks: {each('crashes')}; tracebacks {each('tracebacks')}{tail}"
    kr = got.get("daemon_kill_run")
    if kr is not None:
        fig["kills_recovered"] = kr["kills_recovered"]
        rk = kr.get("retrain_kill") or {}
        cp = ", ".join(str(c.get("point")) for c in kr.get("crash_point_kills") or []) or "none"
        notes["kills_recovered"] = (f"of {kr['kills']} kill -9 in one live run (one during a retrain: training process died "
                                    f"with the daemon: {rk.get('child_died_with_daemon')}; at BOT_CRASH_POINT, between an "
                                    f"order's submission and the persisting of its answer: {cp}); each restart checked: restored "
                                    f"cash/positions/last minute, kill-switch day state, positions/cash/open orders vs the "
                                    f"exchange; problems: {len(kr['restart_problems'])}")  # fmt: skip
    else:
        notes["kills_recovered"] = "the kill -9 test did not record it (failed or not run)"


def table(fig: dict[str, Any], notes: dict[str, str], extra: dict[str, Any]) -> list[str]:
    rows = [
        ("faults injected by kind", fig["faults_injected"]),
        ("candles lost", fig["candles_lost"]),
        ("duplicate orders", fig["duplicate_orders"]),
        ("position mismatches", fig["position_mismatches"]),
        ("crashes (other than kills)", fig["crashes"]),
        ("restarts recovered (kill -9)", fig["kills_recovered"]),
        ("Postgres outages survived", fig["pg_outages_survived"]),
        ("bad configs tried", fig["bad_configs_tried"]),
        ("bad configs rejected clearly", fig["bad_configs_clear_error"]),
        ("secrets found", fig["secrets_found"]),
        ("RSS growth %", fig["rss_growth_pct"]),
    ]
    key_of = dict(zip([r[0] for r in rows], [*KEYS[:7], "bad_configs_tried", "bad_configs_clear_error", "secrets_found",
                                               "rss_growth_pct"], strict=True))  # fmt: skip
    out = ["| figure | value | note |", "|---|---|---|"]
    for name, v in rows:
        k = key_of[name]
        note = notes[k] if k else NOT_YET
        shown = v is None or k in ("bad_configs_tried", "secrets_found", "pg_outages_survived", "rss_growth_pct", *DAEMON_KEYS)
        out.append(f"| {name} | {'—' if v is None else v} | {note if shown else ''} |")
    wk, sd = extra.get("week"), extra.get("systemd")
    if wk is not None:
        out.append(f"| task and fd growth | tasks {wk['task_growth']:+d}, fds {wk['fd_growth']:+d}, threads {wk['thread_growth']:+d} "
                   f"| week run: tasks {wk['tasks'][0]} -> {wk['tasks'][1]}, fds {wk['fds'][0]} -> {wk['fds'][1]}; max lag "
                   f"{wk['max_lag_min']} simulated min, step p99 {wk['step_ms_p99']} ms; tables and queues bounded (candles grow by "
                   "design) |")  # fmt: skip
    else:
        out.append("| task and fd growth | — | the week-long test did not record it (failed or not run) |")
    ku = extra.get("week_keep_up")
    if ku is not None:
        lags = ", ".join(f"{float(k):g}x {v['max_lag_wall_s']} s" for k, v in ku["phases"].items())
        out.append(f"| fastest clock kept up with | {ku['fastest_kept_up']:g}x | 30 symbols, the clock doubled every few "
                   f"simulated hours; worst lag behind the exchange clock in wall seconds: {lags} |")  # fmt: skip
    if sd is not None:
        out.append(f"| systemd restarts (harness) | {sd['restarts']} (crash {sd['crash_restarts']}, watchdog {sd['watchdog_restarts']}) "
                   f"| tests/support/systemd_harness.py on the real unit at {sd['scale']:g}x its timings: kill -9 -> READY in "
                   f"{sd['crash_to_ready_s']} s; stalled loop -> {sd['watchdog_exit_signal']} after {sd['stall_to_watchdog_kill_s']} s "
                   f"(WatchdogSec {sd['watchdog_sec']:g} s) -> READY in {sd['stall_to_ready_s']} s; state restored, no minute lost |")  # fmt: skip
    for run in (extra.get("daemon_runs") or {}).values():
        if run is not None:
            kinds = ", ".join(f"{k} {n}" for k, n in run["faults_by_kind"].items())
            out.append(f"| faults by kind, {run['mode']} run ({run['hours']} h, {run['seconds']} s) | {run['faults_injected']} | {kinds} |")
    fz, br, ld = extra["fuzz_examples_per_property"], extra["bundles_refused"], extra["log_dir_unwritable"]
    if fz is not None:
        out.append(f"| fuzzing (hypothesis) | {fz} examples/property | candle validation, kline events (ws), kline rows via ccxt (REST): no crash, no bad candle released |")
    if br is not None:
        out.append(f"| broken bundles refused | {br['refused_clearly']}/{br['tried']} | engine kept its bundle: {br['engine_kept_previous']} |")
    if ld is not None:
        how = "tmpfs filled (ENOSPC)" if ld["tmpfs"] else "read-only directory (chmod)"
        out.append(f"| log dir unwritable | survived: {ld['survived']} | {how}; candles lost 0; stderr lines with the errno: "
                   f"{ld['stderr_lines_naming_errno']}, Python 'Logging error' blocks: {ld['logging_error_blocks']} |")
    return out


def week_table(week: dict[str, Any] | None) -> list[str]:
    """The week-long run's samples, as the test printed them (a code block)."""
    if not week:
        return []
    return ["## The week, fast (samples)", "",
            f"{week['simulated_days']:g} simulated days, {week['symbols']} symbols at {week['speed']:g}x: {week['wall_s']} s wall "
            f"(start-up {week['startup_s']} s), {week['minutes_stepped']} minutes stepped, {week['trades_opened']} trades "
            f"opened, {week['retrains']} retrain(s), {week['swaps']} hot swap(s). `candles` grows by design (30 rows a "
            "minute: the trainer's history); `orders`/`positions` with the trades; `decisions` at most one row per "
            "symbol and minute, skip rows kept `daemon.decisions_keep_days` (2 in this run, 30 by default); "
            "`equity_snapshots` one row a minute; the log directory is bounded by its rotation.", "", "```", week["table"], "```"]  # fmt: skip


def main() -> int:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        out = Path(tmp)
        rc = run_suite(out)
        fig, notes, extra = figures(out)
    rows = table(fig, notes, extra)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()})"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("\n" + "\n".join(rows))
    print(f"\nsuite exit {rc}, {time.monotonic() - t0:.0f} s, {machine}")
    docs = ROOT / "docs"
    payload = {**fig, "notes": notes, "extra": extra, "suite_exit": rc, "machine": machine, "measured": when,
               "data": "../shared/data/candles_1m (real Binance 1m candles)"}  # fmt: skip
    (docs / "reliability.json").write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    md = ["# Reliability", "",
          f"Written by `make reliability` (scripts/reliability.py) on {when}, {machine}; suite exit {rc}.",
          "Each figure comes from a test that measured it in that run; '—' is not measured yet and says why.", "",
          *rows, "",
          "The fault and kill -9 figures come from tests/reliability/test_daemon.py (outcome of every fault kind in",
          "docs/reliability.json, extra.daemon_runs); the Postgres restarts and stalls from",
          "tests/reliability/test_pg_outage.py; the week from tests/reliability/test_week.py.", "",
          *week_table(extra.get("week")), ""]  # fmt: skip
    (docs / "reliability.md").write_text("\n".join(md))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
