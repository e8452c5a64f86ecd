"""Disk full / unwritable log directory while the daemon runs (issue 15).

`bot run` (no model: it collects candles from the exchange simulator into a real Postgres)
writes its logs to a tiny tmpfs; mid-run the tmpfs is filled to the last byte (ENOSPC) and stays full through the stop. (Remounting it read-only is refused while the log files are open, so
the read-only case runs where mount is not available: a chmod'ed directory, without root.) The daemon must keep running, keep every candle (the store equals
the exchange minute by minute), stop cleanly on SIGTERM, and say what is wrong on stderr.
Without root (no mount) the directory is made read-only with chmod instead, and said so.
An unwritable log directory at start is refused by the config check (tests/support/bad_configs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from tests.support.daemon_ops import APR21_0000, Lines, free_port
from tests.support.pg import TEMPLATE_DB
from tests.support.reliability_figures import record
from tests.support.shared_data import DATA_DIR, ROOT

pytestmark = pytest.mark.slow
SYMS = ["BTCUSDT", "ETHUSDT"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def _fill(path: Path) -> None:
    """Write until the file system is full (ENOSPC)."""
    with contextlib.suppress(OSError), open(path / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    for name in ("bot.jsonl", "bot.log"):  # and the slack of the log files' last pages (empty lines)
        with contextlib.suppress(OSError), open(path / name, "ab", buffering=0) as f:
            while True:
                f.write(b"\n")


@pytest.fixture(scope="module")
def scenario(pg_server: Any) -> Iterator[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="bot-logfull-", dir="/tmp"))
    os.chmod(home, 0o755)
    logs = home / "logs"
    logs.mkdir()
    tmpfs = _mount_tmpfs(logs, "256k")
    dbname = "t_" + uuid.uuid4().hex[:12]
    pg_server.create_database(dbname, template=TEMPLATE_DB)
    dsn = pg_server.dsn(dbname)
    port = free_port()
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": SYMS, "database": {"dsn": dsn},
        "paths": {"data_dir": f"{home}/var", "models_dir": f"{home}/var/models", "logs_dir": str(logs)},
        "exchange": {"urls": {"public": f"http://127.0.0.1:{port}/api/v3", "private": f"http://127.0.0.1:{port}/api/v3",
                              "ws": f"ws://127.0.0.1:{port}/stream/ws"},
                     "rate_limit_ms": 0, "timeout_ms": 2000, "retry_base_s": 0.1, "retry_max_s": 0.5},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2},
        "dashboard": {"enabled": False}, "logging": {"level": "debug"},  # debug: many lines to fail to write
    }))  # fmt: skip
    book = CandleBook.from_directory(DATA_DIR, SYMS)
    sim = ExchangeSimulator(book, SimSettings(speed=60, start_ms=APR21_0000, update_interval_s=0.2))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(sim.start(port=port), loop).result(30)
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(cfg), "run", "--no-train"], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    lines = Lines(proc)
    out: dict[str, Any] = {"tmpfs": tmpfs, "logs": logs, "lines": lines}
    try:
        lines.wait_for("FEED websocket up", timeout=120)
        time.sleep(3)
        if tmpfs:
            _fill(logs)  # to the last byte, the log files' last pages included
            out["full_at"] = len(lines.lines)
            time.sleep(6)  # it goes on trading/collecting with nowhere to log
            out["alive_full"] = proc.poll() is None
            # It stays full through the stop, whose lines cannot be written either. (A read-only
            # remount is refused while the log files are open, "mount point is busy": the
            # read-only case is the chmod one, where mount is not available.)
        else:
            os.chmod(logs, 0o555)
            for f in logs.iterdir():
                os.chmod(f, 0o444)
            out["alive_full"] = None
        time.sleep(8)
        out["alive_ro"] = proc.poll() is None
        proc.send_signal(15)
        out["rc"] = proc.wait(60)
        time.sleep(0.2)
        out["stderr"] = list(lines.lines)
        out["exchange_now"] = sim.clock.now_ms()

        async def store() -> dict[str, list[int]]:
            conn = await asyncpg.connect(dsn)
            try:
                return {s: [r["ts"] for r in await conn.fetch("SELECT ts FROM candles WHERE symbol = $1 ORDER BY ts", s)]
                        for s in SYMS}  # fmt: skip
            finally:
                await conn.close()

        out["store"] = asyncio.run(store())
        out["book"] = book
        yield out
    finally:
        if proc.poll() is None:
            proc.kill()
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if tmpfs:
            subprocess.run(["umount", "-l", str(logs)], check=False)
        else:
            os.chmod(logs, 0o755)
        pg_server.drop_database(dbname)
        shutil.rmtree(home, ignore_errors=True)


def test_daemon_survives_a_full_then_read_only_log_dir_and_loses_no_candle(scenario: dict[str, Any]) -> None:
    s = scenario
    assert s["tmpfs"] or os.geteuid() != 0, "root but no tmpfs: the disk-full case did not run"
    if s["tmpfs"]:
        assert s["alive_full"], "the daemon died when the log file system filled up"
    assert s["alive_ro"], "the daemon died when its log directory could not be written"
    assert s["rc"] == 0, "\n".join(s["stderr"][-40:])
    assert any(" STOP paper" in line for line in s["stderr"])  # the console still works (the daemon_stop line)
    book: CandleBook = s["book"]
    for sym, got in s["store"].items():
        assert len(got) >= 10, (sym, len(got))
        want = [int(t) for t in book.range(sym, got[0], got[-1]).ts]
        assert got == want, f"{sym}: candles lost or invented while the logs could not be written"
    errs = [line for line in s["stderr"] if "Errno 28" in line or "Errno 30" in line or "Permission denied" in line]
    record("log_dir_unwritable", {"tmpfs": s["tmpfs"], "survived": True, "stderr_lines_naming_errno": len(errs),
                                  "logging_error_blocks": sum("--- Logging error ---" in x for x in s["stderr"])})  # fmt: skip
    assert errs, "nothing on stderr says the log could not be written"


def test_log_write_failure_is_said_in_one_line_naming_path_and_errno(scenario: dict[str, Any]) -> None:
    s = scenario
    logs = str(s["logs"])
    clear = [line for line in s["stderr"] if logs in line and re.search(r"ENOSPC|EROFS|EACCES|Errno (28|30|13)", line)]
    assert clear, "no line names the log path and the errno"
    assert not any("--- Logging error ---" in line or "Traceback" in line for line in s["stderr"])
