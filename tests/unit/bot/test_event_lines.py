"""The short human lines: one per event kind, the same text in bot.log and on the console, JSON
keeps every field, times as `MM-DD HH:MM` UTC and never epoch milliseconds."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import structlog

from bot.logs.event_lines import EVENTS, render_body
from bot.logs.setup import human_line, setup_logging

T = 1764505860000  # 2025-11-30 12:31 UTC
DAY = 86_400_000

# (event, level, fields, the exact body expected)
CASES = [
    ("daemon_start", "info", dict(mode="paper", model_version="v7", symbols=30),
     "START paper  model v7  30 symbols  trading"),
    ("daemon_start", "info", dict(mode="paper", model_version="v7", symbols=1),
     "START paper  model v7  1 symbol  trading"),
    ("daemon_start", "info", dict(mode="paper", model_version="v7", pf=1.234, symbols=30,
                                  watch_reason="model v7 has no validated edge: PF 0.90 < 1.05, watching only"),
     "START paper  model v7  PF 1.23  30 symbols  WATCH ONLY: model v7 has no validated edge: PF 0.90 < 1.05, watching only"),
    ("daemon_start", "info", dict(mode="paper", symbols=30, demo=True),
     "START paper  no model (watch only)  30 symbols  demo: trading a model without a validated edge, paper only"),
    ("daemon_ready", "info", dict(mode="live", warmup_s=12.34), "READY live  warm-up 12.3s"),
    ("daemon_stop", "info", dict(mode="paper", reason="SIGTERM", uptime_s=11520), "STOP paper  (SIGTERM)  up 3h12m"),
    ("trade_open", "info", dict(symbol="SOLUSDT", qty=1.2, price=98.31, er=0.0021, p=0.64, size_fraction=0.021, mode="paper"),
     "BUY SOLUSDT 1.20 @ 98.31  er +0.21%  p 0.64  size 2.1%  [paper]"),
    ("trade_open", "info", dict(symbol="PEPEUSDT", qty=150000.0, price=0.00001234, mode="live"),
     "BUY PEPEUSDT 150000.00 @ 0.00001234  [live]"),
    ("trade_close", "info", dict(symbol="SOLUSDT", qty=1.2, price=99.1, pnl=0.948, ret=0.008, reason="tp", held_min=42, mode="paper"),
     "SELL SOLUSDT 1.20 @ 99.10  +0.95 USDT (+0.80%)  TP  held 42m  [paper]"),
    ("trade_close", "info", dict(symbol="ETHUSDT", qty=0.5, price=3010.0, pnl=-12.5, ret=-0.0083, reason="sl"),
     "SELL ETHUSDT 0.5000 @ 3010.00  -12.50 USDT (-0.83%)  SL"),
    ("trade_close", "info", dict(symbol="ETHUSDT", qty=0.5, price=3010.0, pnl=1.0, ret=0.0007, reason="timeout", held_min=90),
     "SELL ETHUSDT 0.5000 @ 3010.00  +1.00 USDT (+0.07%)  timeout  held 1h30m"),
    ("risk_skips", "info", dict(counts={"max_positions": 300, "no_edge": 90, "cooldown": 22}, entered=3),
     "SKIPS 1h: 412  max_positions 300, no_edge 90, cooldown 22  (3 entered)"),
    ("kill_switch", "warning", dict(reason="daily_loss", value=-0.031, limit=-0.03),
     "KILL SWITCH daily_loss -3.10% (limit -3.00%): no new entries"),
    ("kill_switch_reset", "info", dict(reason="new UTC day"), "KILL SWITCH reset (new UTC day)"),
    ("protection", "warning", dict(protection="stop_loss_guard", scope="*", since_ms=T, until_ms=T + 30 * 60_000,
                                   stop_losses=3, window_minutes=60),
     "PROTECTION stop-loss guard: every symbol paused until 11-30 13:01 UTC (3 stop-losses within 60 min)"),
    ("protection_cleared", "info", dict(protection="low_profit_lock", scope="SOLUSDT"),
     "PROTECTION cleared: low-profit lock, SOLUSDT"),
    ("train_start", "info", dict(symbols=30, start="2025-05-01T00:00:00+00:00", end=T, source="store"),
     "TRAIN start 30 symbols 2025-05-01..2025-11-30 (store)"),
    ("train_done", "info", dict(version="v8", path="/x", status="candidate", pf=1.234, trades=412, expectancy=0.0005, seconds=312.4),
     "TRAIN done v8  PF 1.23  exp +0.050%  412 trades  candidate  5m12s"),
    ("retrain_done", "info", dict(version="v9", status="champion", window_start=T - 200 * DAY, window_end=T, pf=1.31,
                                  expectancy=0.0004, trades=1200),
     "RETRAIN v9  2025-05-14..2025-11-30  PF 1.31  exp +0.040%  1,200 trades  -> champion"),
    ("retrain_done", "info", dict(version="v10", status="rejected", pf=0.91, trades=300, reason="PF below floor"),
     "RETRAIN v10  PF 0.91  300 trades  -> rejected (PF below floor)"),
    ("retrain_done", "info", dict(version="v11", status="rejected", pf=0.95, expectancy=-0.0002, trades=120,
                                  champion_version="v9", champion_pf=1.2, champion_expectancy=0.0004, reason="worse"),
     "RETRAIN v11  PF 0.95  exp -0.020%  120 trades  vs champion PF 1.20 exp +0.040%  -> rejected (worse)"),
    ("exchange_unreachable", "warning", dict(reason="connection refused 127.0.0.1:9", url="http://127.0.0.1:9/api", down_s=300),
     "EXCHANGE unreachable for 300s (connection refused 127.0.0.1:9): retrying with backoff, nothing traded meanwhile"),
    ("exchange_reachable", "info", dict(down_s=192.4), "EXCHANGE reachable again after 3m12s"),
    ("store_outage", "warning", dict(what="trading records", reason="server not running", error="FileNotFoundError"),
     "STORE unavailable (server not running): trading records held in memory, entries paused"),
    ("store_recovered", "info", dict(down_s=192, held_steps=42, held_candles=1260, dropped_candles=300, refetched_candles=300),
     "STORE back after 3m12s: 42 minutes of trading records and 1,260 candles written late, 300 dropped and re-fetched"),
    ("store_recovered", "info", dict(down_s=8.2, held_steps=0, held_candles=0, dropped_candles=0), "STORE back after 8s"),
    ("retrain_failed", "error", dict(error="MemoryError", detail="trainer child killed"),
     "RETRAIN failed: MemoryError trainer child killed"),
    ("feed_outage", "warning", dict(reason="NetworkError", symbols=30, since_ts=T), "FEED down 30 symbols (NetworkError) since 11-30 12:31: REST meanwhile"),
    ("feed_recovered", "info", dict(down_s=192, filled=42), "FEED back after 3m12s, 42 candles filled"),
    ("feed_outage", "warning", dict(reason="websocket silent 5s", symbols=[f"S{i}USDT" for i in range(30)], since_ts=T),
     "FEED down 30 symbols (websocket silent 5s) since 11-30 12:31: REST meanwhile"),
    ("feed_outage", "warning", dict(reason="NetworkError", symbols=["BTCUSDT", "ETHUSDT"]), "FEED down BTCUSDT, ETHUSDT (NetworkError): REST meanwhile"),
    ("feed_recovered", "info", dict(down_s=4.2, filled=0, symbols=["BTCUSDT"], since_ts=T - 5000), "FEED back after 4s, 0 candles filled"),
    ("backfill_symbol", "info", dict(symbol="ETHUSDT", start=1621023960000, end=T, resumed=True, pages=2801, fetched=2801440,
                                     written=2801440, invalid=0, exchange_gap_minutes=0),
     "BACKFILL ETHUSDT 2021-05-14..2025-11-30  +2,801,440 rows  (resumed)"),
    ("backfill_progress", "info", dict(done=12, total=30, symbol="ETHUSDT"), "BACKFILL 12/30 symbols  ETHUSDT"),
    ("import_symbol", "info", dict(symbol="BTCUSDT", rows_read=10, written=9, duplicates_skipped=1, rejected=0, gaps=2, missing_minutes=5),
     "IMPORT BTCUSDT  +9 rows  1 duplicates  2 gaps (5 min)"),
    ("import_symbol", "info", dict(symbol="BTCUSDT", written=525600, gaps=3, missing_minutes=12, files=12,
                                   sources="12 binance zip (10 ms, 2 us)"),
     "IMPORT BTCUSDT  +525,600 rows  3 gaps (12 min)  from 12 binance zip (10 ms, 2 us)"),
    ("import_refused", "warning", dict(file="BTCUSDT-1m-2024-01.zip", reason="not a complete zip archive", symbol="BTCUSDT"),
     "REFUSED BTCUSDT-1m-2024-01.zip: not a complete zip archive; BTCUSDT not imported"),
    ("import_refused", "warning", dict(file="BTC_USDT-5m.json", reason="5m candles: only 1m candles are imported"),
     "REFUSED BTC_USDT-5m.json: 5m candles: only 1m candles are imported"),
    ("error", "error", dict(where="engine", error="ValueError", detail="boom"), "engine: ValueError: boom"),
    ("error", "error", dict(where="store", error="ConnectionDoesNotExistError", what="feed_persist_failed", symbol="BTCUSDT",
                            detail="connection was closed in the middle of operation"),
     "store: ConnectionDoesNotExistError: connection was closed in the middle of operation"),
    ("feed_rest_fill", "info", dict(symbol="SOLUSDT", start=T - 240_000, end=T, filled=5, gap_minutes=0),
     "FILL SOLUSDT 11-30 12:27..11-30 12:31  5 candles by REST"),
    ("minute_timeout", "warning", dict(ts=T, missing_symbols=["ICPUSDT", "FILUSDT"]),
     "MINUTE 11-30 12:31 closed without 2 symbols: ICPUSDT, FILUSDT"),
    ("minute_late_candle", "warning", dict(symbol="SOLUSDT", ts=T - 60_000, emitted_through=T),
     "LATE SOLUSDT 11-30 12:30 candle after its minute closed"),
    ("exchange_retry", "warning", dict(what="fetch_ohlcv", error="NetworkError", attempt=3, delay_s=2.0),
     "RETRY fetch_ohlcv (NetworkError) attempt 3 in 2.0s"),
    ("train_stage_begin", "info", dict(stage="features", label="features", total=30), "TRAIN features  (30)"),
    ("train_prepared", "info", dict(symbols=30, train_rows=1234567, valid_rows=456789, stride=5),
     "TRAIN data 30 symbols  1,234,567 train rows  456,789 valid rows"),
]  # fmt: skip


@pytest.mark.parametrize("name,level,fields,body", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_event_kind_has_its_short_line(name: str, level: str, fields: dict, body: str) -> None:
    ev = {"event": name, "level": level, "timestamp": "2025-11-30T12:31:07.123Z", **fields}
    assert render_body(ev) == body
    line = human_line(ev)
    tag = {"info": "", "warning": "WARN ", "error": "ERROR "}[level]
    assert line == f"11-30 12:31 {tag}{body}"
    assert not re.search(r"\d{12,}", line), "epoch milliseconds leaked into a human line"
    assert len(line) <= 130


def test_every_registered_event_is_tested() -> None:
    assert set(EVENTS) == {c[0] for c in CASES}


def test_missing_or_bad_fields_fall_back_instead_of_raising() -> None:
    assert render_body({"event": "trade_open", "symbol": "X"}) == "trade_open symbol=X"
    assert render_body({"event": "trade_open", "symbol": "X", "qty": "lots", "price": 1}) == "trade_open symbol=X qty=lots price=1"
    assert render_body({"event": "something_else", "text": "hello"}) == "hello"
    assert render_body({"event": "something_else", "a": 1.5, "b": "two words"}) == "something_else a=1.5 b='two words'"


def test_unregistered_events_never_show_epoch_ms() -> None:
    body = render_body({"event": "feed_started", "symbols": 30, "server_now": T, "lag_minutes": 3})
    assert body == "feed_started symbols=30 server_now=11-30_12:31 lag_minutes=3"


def test_event_time_wins_over_log_time() -> None:
    ev = {"event": "trade_open", "timestamp": "2026-01-02T03:04:00Z", "event_ts": T, "symbol": "A", "qty": 1, "price": 2}
    assert human_line(ev).startswith("11-30 12:31 BUY A")
    ev = {"event": "trade_close", "timestamp": "2026-01-02T03:04:00Z", "ts": T + 60_000, "symbol": "A", "qty": 1,
          "price": 2, "pnl": 0.1, "ret": 0.001, "reason": "sl"}  # fmt: skip
    assert human_line(ev) == "11-30 12:32 SELL A 1.00 @ 2.00  +0.10 USDT (+0.10%)  SL"
    late = {"event": "minute_late_candle", "timestamp": "2026-01-02T03:04:00Z", "symbol": "A", "ts": T}
    assert human_line(late).startswith("01-02 03:04 LATE A 11-30 12:31")  # its ts is not the line's time


def test_same_line_in_file_and_console_json_keeps_all_fields(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(tmp_path, stream=stream)
    log = structlog.get_logger("t")
    for name, level, fields, _body in CASES:
        getattr(log, level)(name, **fields)
    for h in logging.getLogger().handlers:
        h.flush()
    console = stream.getvalue().splitlines()
    file_lines = (tmp_path / "bot.log").read_text().splitlines()
    assert console == file_lines and len(console) == len(CASES)
    for line, (_n, _l, _f, body) in zip(console, CASES, strict=True):
        assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d (WARN |ERROR )?" + re.escape(body), line), line
    records = [json.loads(x) for x in (tmp_path / "bot.jsonl").read_text().splitlines()]
    for rec, (name, level, fields, _body) in zip(records, CASES, strict=True):
        assert rec["event"] == name and rec["level"] == level
        for k, v in fields.items():
            assert rec[k] == (list(v) if isinstance(v, tuple) else v)
        # the line can be rebuilt from the JSON record alone (that is what `bot tail` does)
        assert human_line(rec) in console


def test_an_error_the_daemon_survives_is_one_line_even_with_a_traceback(tmp_path: Path) -> None:
    """`bot.logs.error_lines`: one `ERROR where: Type: detail` line in bot.log; the JSON log keeps the
    traceback and the kind. A streak of failures (a store that is down) is one error line,
    debug lines for the repeats and one line when it works again."""
    from bot.logs.error_lines import ErrorStreak, log_survived

    setup_logging(tmp_path, console=False)
    log = structlog.get_logger("t")
    try:
        raise OSError("disk on fire")
    except OSError as e:
        log_survived(log, "feed websocket", e, what="feed_ws_unexpected_error", exc_info=True)
    streak = ErrorStreak("store heartbeat", "heartbeat_failed", log)
    for k in range(5):
        streak.failed(ConnectionError(f"refused {k}"))
    streak.ok()
    streak.ok()  # nothing more to say
    for h in logging.getLogger().handlers:
        h.flush()
    lines = (tmp_path / "bot.log").read_text().splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d ERROR feed websocket: OSError: disk on fire", lines[0]), lines
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d ERROR store heartbeat: ConnectionError: refused 0", lines[1]), lines
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d store heartbeat: working again after 5 failure\(s\) in \d+s", lines[2]), lines
    records = [json.loads(x) for x in (tmp_path / "bot.jsonl").read_text().splitlines()]
    first = records[0]
    assert first["event"] == "error" and first["what"] == "feed_ws_unexpected_error" and "Traceback" in first["exception"]
    assert [r["event"] for r in records[1:]] == ["error", "error_cleared"]  # the repeats were debug (below the level)


def test_a_line_tag_from_the_config_ends_every_line_and_survives_into_the_json(tmp_path: Path) -> None:
    """`logging.line_tag` (make demo sets `demo`): every human line ends with `[demo]`, in bot.log
    and on the console alike, and `bot tail` (which renders from the JSON log) shows it too."""
    from bot.config import Config
    from bot.logs.setup import setup_from_config

    cfg = Config.model_validate({"logging": {"line_tag": "demo", "console": False}, "paths": {"logs_dir": str(tmp_path)}})
    setup_from_config(cfg)
    log = structlog.get_logger("t")
    for name, level, fields, _body in CASES:
        getattr(log, level)(name, **fields)
    logging.getLogger("some.library").warning("a stdlib record")
    for h in logging.getLogger().handlers:
        h.flush()
    lines = (tmp_path / "bot.log").read_text().splitlines()
    assert len(lines) == len(CASES) + 1
    for line, (_n, _l, _f, body) in zip(lines, CASES, strict=False):
        assert line.endswith(f"{body}  [demo]"), line
    assert lines[-1].endswith("a stdlib record  [demo]"), lines[-1]
    records = [json.loads(x) for x in (tmp_path / "bot.jsonl").read_text().splitlines()]
    assert all(r["line_tag"] == "demo" for r in records)
    assert [human_line(r) for r in records[:-1]] == lines[:-1]  # what `bot tail` prints
    setup_logging(tmp_path / "plain", console=False)  # the tag is not sticky
    structlog.get_logger("t").info("daemon_ready", mode="paper")
    for h in logging.getLogger().handlers:
        h.flush()
    assert (tmp_path / "plain" / "bot.log").read_text().strip().endswith("READY paper")
    with pytest.raises(ValueError, match="line_tag"):
        Config.model_validate({"logging": {"line_tag": "two words"}})
