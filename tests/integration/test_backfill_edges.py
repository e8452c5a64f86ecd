"""Backfill as a new user meets it: a symbol the exchange does not list is skipped and the
others go on; a store whose data ends after the exchange's clock is reported in dates."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from bot.config import Config
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.history.backfill import backfill
from bot.marketdata.exchange import build_exchange, unlisted_symbols
from bot.store.db import Store
from models.candles import Candles
from tests.support.shared_data import DATA_DIR, ROOT

APR21_0000 = 1618963200000


@pytest.fixture(scope="module")
def book2() -> CandleBook:
    return CandleBook.from_directory(DATA_DIR, ["BTCUSDT", "ETHUSDT"])


async def test_unlisted_symbol_is_skipped_and_the_others_backfilled(db_dsn, book2):
    sim = ExchangeSimulator(book2, SimSettings(speed=0, start_ms=APR21_0000 + 30_000))
    await sim.start()
    cfg = Config.model_validate({"symbols": ["BTCUSDT", "NOPEUSDT", "ETHUSDT"],
                                 "exchange": {"urls": sim.urls, "rate_limit_ms": 0}})  # fmt: skip
    ex = build_exchange(cfg)
    store = await Store.connect(db_dsn)
    try:
        reports = await backfill(ex, store, cfg.symbols, days=0.1)
        assert unlisted_symbols(ex, cfg.symbols) == ["NOPEUSDT"]
        by = {r.symbol: r for r in reports}
        assert by["NOPEUSDT"].skipped == "the exchange does not list it" and by["NOPEUSDT"].written == 0
        for s in ("BTCUSDT", "ETHUSDT"):
            assert by[s].skipped is None and by[s].written == 144  # 0.1 day of minutes
            assert len(await store.read_candles(s)) == 144
    finally:
        await ex.close()
        await store.close()
        await sim.stop()


def test_backfill_cli_store_ahead_of_the_exchange_says_so_in_dates(db_dsn, book2, tmp_path):
    """History imported up to 05-14, simulator replaying 04-21: nothing to fetch, said in dates."""
    import asyncio

    later = APR21_0000 + 23 * 86_400_000  # 2021-05-14 00:00

    async def seed() -> None:
        store = await Store.connect(db_dsn)
        try:
            one = np.array([100.0])
            await store.write_candles("BTCUSDT", Candles(np.array([later]), one, one, one, one, one))
        finally:
            await store.close()

    async def main() -> subprocess.CompletedProcess[str]:
        await seed()
        sim = ExchangeSimulator(book2, SimSettings(speed=0, start_ms=APR21_0000 + 30_000))
        await sim.start()
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump({
            "symbols": ["BTCUSDT", "ETHUSDT", "NOPEUSDT"], "database": {"dsn": db_dsn},
            "exchange": {"urls": sim.urls, "rate_limit_ms": 0},
            "paths": {"data_dir": str(tmp_path / "var"), "logs_dir": str(tmp_path / "logs")},
        }))  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(cfg), "backfill", "--days", "0.1",
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            out, err = await proc.communicate()
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())
        finally:
            await sim.stop()

    res = asyncio.run(main())
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert "BTCUSDT skipped: the store's data ends 2021-05-14 00:00, later than the exchange's clock (2021-04-21 00:00)" in text
    assert "NOPEUSDT skipped: the exchange does not list it" in text
    assert re.search(r"ETHUSDT\W+2021-04-20 21:36\W+\W+1\W+144\W+144", text), text  # ETH backfilled as usual
    # No epoch milliseconds in what a person reads (console, human log); the JSON log keeps them.
    human = text + (tmp_path / "logs" / "bot.log").read_text()
    assert not re.search(r"\b1[0-9]{12}\b", human), human
    events = [json.loads(x) for x in (tmp_path / "logs" / "bot.jsonl").read_text().splitlines()]
    assert any(e["event"] == "backfill_store_ahead" and e["symbol"] == "BTCUSDT" for e in events)
