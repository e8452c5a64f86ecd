"""Log rendering: JSON lines + short human lines, with secrets masked everywhere."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import structlog

from bot.logs.setup import MASK, register_secret, setup_logging


def test_json_and_human_lines_and_redaction(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(tmp_path, stream=stream)
    register_secret("s3cr3t-token-value")
    log = structlog.get_logger("t")
    log.info("order_filled", text="BUY SOLUSDT 1.2 @ 98.31  er=+0.21% p=0.64  size=2.1%", symbol="SOLUSDT")
    log.warning("feed_retry", attempt=3, url="https://x/api?signature=abc&k=s3cr3t-token-value")
    log.info("auth", api_secret="plain-secret-here")
    try:
        raise RuntimeError("boom with s3cr3t-token-value inside")
    except RuntimeError:
        log.exception("crashed")
    logging.getLogger().handlers[0].flush()

    human = stream.getvalue().splitlines()
    assert human[0].endswith("BUY SOLUSDT 1.2 @ 98.31  er=+0.21% p=0.64  size=2.1%")
    assert len(human[0]) < 80
    assert "WARN feed_retry attempt=3" in human[1]
    records = [json.loads(line) for line in (tmp_path / "bot.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["order_filled", "feed_retry", "auth", "crashed"]
    assert records[0]["symbol"] == "SOLUSDT" and records[0]["level"] == "info"
    everything = stream.getvalue() + (tmp_path / "bot.jsonl").read_text() + (tmp_path / "bot.log").read_text()
    assert "s3cr3t-token-value" not in everything and "plain-secret-here" not in everything
    assert MASK in records[2]["api_secret"] and "Traceback" in records[3]["exception"]
