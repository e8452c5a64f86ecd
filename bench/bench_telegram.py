"""What the Telegram push costs the daemon: import RSS and the time of one log call.

1. RSS: a fresh interpreter imports what the daemon imports (`bot.live.daemon`, `bot.logs.setup`,
   `ccxt.pro`), then the Telegram client (`telegram.Bot` + `HTTPXRequest`, python-telegram-bot).
   Baseline: the same process before the client import. Median of 3 fresh processes. aiogram,
   the other maintained async client, is measured the same way when it is installed (it is not
   a dependency: it measured +122 MB / ~5 s on this machine, which is why it was not chosen).
2. Emit: `log.info("trade_open", ...)` through the real logging setup (JSON file + human file)
   with the push's `LineBuffer` attached, against the same calls without it, interleaved.
No data set: synthetic events.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time

from bench.harness import figure, record

PROBE = """
import json, sys, time, psutil
def rss(): return psutil.Process().memory_info().rss / 2**20
import bot.live.daemon, bot.logs.setup, ccxt.pro
before = rss(); t0 = time.perf_counter()
if sys.argv[1] == "ptb":
    from telegram import Bot
    from telegram.request import HTTPXRequest
else:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
print(json.dumps({"before": before, "after": rss(), "import_s": time.perf_counter() - t0}))
"""


def probe(lib: str) -> dict[str, float] | None:
    runs = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", PROBE, lib], capture_output=True, text=True)
        if r.returncode != 0:
            return None
        runs.append(json.loads(r.stdout))
    return {k: statistics.median(x[k] for x in runs) for k in runs[0]}


def emit_latency(n: int = 5000) -> tuple[float, float]:
    import logging

    import structlog

    from bot.logs.setup import add_human_handler, setup_logging
    from bot.ops.chat.push import LineBuffer

    d = tempfile.mkdtemp(prefix="bench-tg-")
    setup_logging(d, console=False)
    log = structlog.get_logger("bench")
    buf = LineBuffer(max_pending=10**9)
    with_buf, without = [], []
    for rnd in range(10):
        attached = rnd % 2 == 0
        if attached:
            add_human_handler(buf)
        t0 = time.perf_counter()
        for i in range(n // 10):
            log.info("trade_open", symbol="SOLUSDT", qty=1.2, price=98.31 + i, er=0.0021, p=0.64, size_fraction=0.021, mode="paper")
        (with_buf if attached else without).append((time.perf_counter() - t0) / (n // 10))
        logging.getLogger().removeHandler(buf)
    return statistics.median(with_buf), statistics.median(without)


def main() -> None:
    figs = []
    ptb = probe("ptb")
    assert ptb is not None, "python-telegram-bot is a dependency: it must import"
    figs.append(figure("telegram_client_import_rss", ptb["after"], "MB", baseline=ptb["before"], higher_is_better=False,
                       data="daemon imports (bot.live.daemon, bot.logs.setup, ccxt.pro) then python-telegram-bot; median of 3 processes",
                       note=f"+{ptb['after'] - ptb['before']:.1f} MB, import {ptb['import_s'] * 1000:.0f} ms"))  # fmt: skip
    aio = probe("aiogram")
    if aio is not None:
        figs.append(figure("telegram_aiogram_import_rss", aio["after"], "MB", baseline=aio["before"], higher_is_better=False,
                           data="same, with aiogram instead (not a dependency)",
                           note=f"+{aio['after'] - aio['before']:.1f} MB, import {aio['import_s'] * 1000:.0f} ms"))  # fmt: skip
    w, wo = emit_latency()
    figs.append(figure("telegram_emit_log_call", w * 1e6, "us", baseline=wo * 1e6, higher_is_better=False,
                       data="synthetic trade_open events, JSON + human file handlers; baseline without the push handler"))  # fmt: skip
    record(figs)


if __name__ == "__main__":
    main()
