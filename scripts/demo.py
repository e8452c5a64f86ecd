"""`make demo`: the whole system on a machine with no exchange access, in a few minutes.

1. the exchange simulator (bot/exchange_sim) replays the real 1m candles of ../shared/data for the
   30 symbols of symbols30.txt, on a local port, first held still, then fast (`--speed`,
   exchange minutes per wall second x 60);
2. a quick bundle is trained from those CSV files if var/demo has none (5 symbols, 9 days,
   1 fold, no Optuna, no leakage audit, small trees: about a minute here), recorded in the
   demo's own store and promoted;
3. `bot run` (paper mode, the dashboard on 127.0.0.1) trades against the simulator: it back-fills
   the warm-up from it, warms the features, and streams;
4. `bot tail -f` shows the human lines until Ctrl-C (or `--minutes N`), then everything stops
   cleanly: tail, daemon (which stops its embedded Postgres), simulator.

Everything lives under var/demo/ (its own config.yaml, data dir with the embedded Postgres,
models, logs); the user's config.yaml is never read or changed. The quick bundle has no
validated edge: the demo's config lowers the engine's no-edge floor and trades on a zero-cost
(maker-fee-like) account so that trades happen, and `BOT_DEMO=1` makes the daemon's start line
and the dashboard say "demo: trading a model without a validated edge, paper only"; the demo's
config sets `logging.line_tag: demo`, so every other line (bot.log, console, Telegram, `bot
tail`) ends with `[demo]`.

    python scripts/demo.py [--minutes N] [--no-tail] [--speed 600] [--port 8787] [--fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bot.runtime.aio import wait_for

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CANDLES = SHARED / "candles_1m"
DEMO = ROOT / "var" / "demo"
TRAIN_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "XRPUSDT"]
TRAIN_FROM, TRAIN_TO = "2021-04-02", "2021-04-11"  # the quick bundle's data
START = "2021-04-11T01:00"  # the simulator's clock starts an hour after it (no look-ahead)
NOTICE = "demo: trading a model without a validated edge, paper only"


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def symbols30() -> list[str]:
    return (SHARED / "symbols30.txt").read_text().split()


def write_config(urls: dict[str, str], port: int) -> Path:
    cfg = DEMO / "config.yaml"
    DEMO.mkdir(parents=True, exist_ok=True)
    cfg.write_text("# make demo's own config (rewritten on each run; your config.yaml is not used)\n" + yaml.safe_dump({
        "symbols": symbols30(),
        "exchange": {"urls": urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.2, "retry_max_s": 2.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 10.0},
        # demo: the quick bundle has no validated edge; lower the floor (paper only) ...
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        # ... and a zero-cost account, so that its er is often positive and trades happen
        "costs": {"fee_rate": 0.0, "slippage_bps": 0.0},
        "risk": {"cooldown_after_stop_minutes": 0},
        "train": {"threads": 1, "folds": 1, "fold_days": 2, "regime_fit_days": 3, "row_stride": 3,
                  "meta_min_samples": 30, "er_threshold": -0.002, "seed_metric_threshold": -0.002, "audit": False,
                  "meta_threshold": 0.45, "optuna_trials": 0,
                  "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50},
                  "catboost": {"iterations": 25, "max_rows": 2000}},
        "paths": {"data_dir": str(DEMO / "var"), "models_dir": str(DEMO / "models"), "logs_dir": str(DEMO / "logs")},
        "logging": {"console": False, "line_tag": "demo"},  # every line of the demo ends with [demo]
        "dashboard": {"enabled": True, "port": port},
    }, sort_keys=False))  # fmt: skip
    return cfg


def bot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "BOT_DEMO": "1"})  # fmt: skip


def ensure_bundle(cfg: Path) -> None:
    """Train the quick bundle (recorded in the demo's store) and promote it, unless one exists."""
    r = bot(cfg, "models", "list")
    if "champion" in r.stdout:
        say("quick bundle already trained (var/demo/models): reusing it")
        return
    say(f"training a quick bundle: {len(TRAIN_SYMBOLS)} symbols, {TRAIN_FROM}..{TRAIN_TO}, 1 fold, no Optuna, "
        "no audit (about a minute) ...")  # fmt: skip
    t0 = time.monotonic()
    out = DEMO / "train.json"
    r = bot(cfg, "train", "--candles", str(CANDLES), "--from", TRAIN_FROM, "--to", TRAIN_TO,
            "--symbols", ",".join(TRAIN_SYMBOLS), "--json", str(out))  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"[demo] training failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    version = json.loads(out.read_text())["version"]
    r = bot(cfg, "models", "promote", version, "--force")
    if r.returncode != 0:
        raise SystemExit(f"[demo] promoting {version} failed:\n{r.stdout}\n{r.stderr}")
    say(f"bundle {version} trained in {time.monotonic() - t0:.0f}s and promoted ({NOTICE})")


def free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def events(log: Path, after: int = 0) -> list[dict]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines()[after:]:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


async def wait_event(log: Path, name: str, proc: asyncio.subprocess.Process, timeout: float, after: int = 0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events(log, after):
            if e.get("event") == name:
                return e
        if proc.returncode is not None:
            raise SystemExit(f"[demo] the daemon exited ({proc.returncode}); see {DEMO / 'logs' / 'bot.log'}")
        await asyncio.sleep(0.3)
    raise SystemExit(f"[demo] no {name} within {timeout:.0f}s; see {DEMO / 'logs' / 'bot.log'}")


async def stop_proc(p: asyncio.subprocess.Process | None, timeout: float = 90) -> None:
    if p is None or p.returncode is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        await wait_for(p.wait(), timeout)
    except TimeoutError:
        p.kill()
        await p.wait()


async def main(args: argparse.Namespace) -> int:
    global DEMO
    if args.home:
        DEMO = Path(args.home).resolve()
    from bot.exchange_sim.replay import CandleBook
    from bot.exchange_sim.server import ExchangeSimulator, SimSettings
    from models.timeutil import parse_time

    if not CANDLES.is_dir():
        raise SystemExit(f"[demo] needs the candles in {CANDLES} (../shared/data beside the repo)")
    if args.fresh and DEMO.exists():
        import shutil

        shutil.rmtree(DEMO)
    t0 = time.monotonic()
    say(f"everything lives in {DEMO} (own config, embedded Postgres, models, logs); your config.yaml is not touched")
    say("loading the real candles of the 30 symbols for the exchange simulator ...")
    book = CandleBook.from_directory(CANDLES, symbols30())
    # a second run continues where the last one stopped (the store resumes there: crash-only)
    clock_file = DEMO / "sim_clock_ms"
    start_ms = parse_time(START)
    if clock_file.exists():
        start_ms = max(start_ms, int(clock_file.read_text()) // 60_000 * 60_000)
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start_ms, update_interval_s=0.5))
    await sim.start()
    port = free_port(args.port)
    cfg = write_config(sim.urls, port)
    from models.timeutil import fmt_ts

    say(f"exchange simulator on {sim.urls['public']} (clock held at {fmt_ts(start_ms)} UTC)")
    daemon: asyncio.subprocess.Process | None = None
    tail: asyncio.subprocess.Process | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = DEMO / "logs" / "bot.jsonl"
    try:
        await asyncio.to_thread(ensure_bundle, cfg)
        if stop.is_set():
            return 1
        n0 = len(events(log))
        env = {**os.environ, "BOT_DEMO": "1"}
        # own session: Ctrl-C reaches this script only, which stops the children in order
        daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "run", "--no-train",
                                                      cwd=ROOT, env=env, start_new_session=True,
                                                      stdout=asyncio.subprocess.DEVNULL,
                                                      stderr=open(DEMO / "daemon.stderr", "ab"))  # noqa: SIM115  # fmt: skip
        say(f"daemon started (paper mode); dashboard on http://127.0.0.1:{port}/ ; warming up ...")
        await wait_event(log, "daemon_start", daemon, timeout=300, after=n0)
        sim.clock.set(speed=args.speed)
        say(f"warm-up done after {time.monotonic() - t0:.0f}s; the simulator now runs {args.speed:g}x ({args.speed / 60:g} "
            f"exchange minutes per second). {NOTICE}. Ctrl-C stops everything.")  # fmt: skip
        if not args.no_tail:
            tail = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "tail", "-f",
                                                        "-n", "20", cwd=ROOT, env=env, start_new_session=True)  # fmt: skip
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(daemon.wait())]
        if args.minutes:
            waiters.append(asyncio.ensure_future(asyncio.sleep(args.minutes * 60)))
        first = asyncio.ensure_future(_first_trade(log, n0, t0))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        for w in waiters:
            w.cancel()
    finally:
        say("stopping: tail, daemon (and its embedded Postgres), simulator ...")
        await stop_proc(tail, 10)
        await stop_proc(daemon)
        if daemon is not None:
            clock_file.write_text(f"{sim.clock.now_ms()}\n")
        await sim.stop()
    rc = daemon.returncode if daemon is not None else 1
    say(f"stopped (daemon exit {rc}). Logs: {DEMO / 'logs'}; again: make demo")
    return 0 if rc == 0 else 1


async def _first_trade(log: Path, after: int, t0: float) -> None:
    while True:
        for e in events(log, after):
            if e.get("event") == "trade_open":
                say(f"first trade line {time.monotonic() - t0:.0f}s after `make demo` started")
                (DEMO / "first_trade_s").write_text(f"{time.monotonic() - t0:.1f}\n")
                return
        await asyncio.sleep(0.5)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, help="stop by itself after N wall minutes (default: until Ctrl-C)")
    p.add_argument("--no-tail", action="store_true", help="do not run `bot tail -f` (tests, scripts)")
    p.add_argument("--speed", type=float, default=600.0, help="simulator speed (x real time; 600 = 10 exchange minutes/s)")
    p.add_argument("--port", type=int, default=8787, help="dashboard port (a free one if taken)")
    p.add_argument("--home", help="demo directory (default var/demo)")
    p.add_argument("--fresh", action="store_true", help="delete var/demo first (retrain the quick bundle)")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
