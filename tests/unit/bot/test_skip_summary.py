"""One `risk_skips` line per UTC hour with the counts per reason."""

from __future__ import annotations

import io

import structlog

from bot.live.skip_summary import SkipSummary
from bot.logs.setup import setup_logging
from models.timeutil import HOUR_MS, MINUTE_MS

H0 = 1764504000000  # 2025-11-30 12:00 UTC


def test_one_summary_per_hour_with_counts_and_the_line() -> None:
    stream = io.StringIO()
    setup_logging(None, stream=stream)
    s = SkipSummary(logger=structlog.get_logger("t"))
    for m in range(60):
        ts = H0 + m * MINUTE_MS
        assert s.tick(ts) is None
        s.skip("max_positions", ts)
        if m % 3 == 0:
            s.skip("no_edge", ts)
        if m == 30:
            s.entered(ts)
    out = s.tick(H0 + HOUR_MS)  # the next hour's first minute closes the previous hour
    assert out == {"counts": {"max_positions": 60, "no_edge": 20}, "window_min": 60, "entered": 1, "event_ts": H0 + HOUR_MS}
    assert s.tick(H0 + HOUR_MS + MINUTE_MS) is None and s.flush() is None  # quiet hour: no line
    s.skip("cooldown", H0 + 3 * HOUR_MS)
    assert s.flush()["counts"] == {"cooldown": 1}
    lines = stream.getvalue().splitlines()
    assert lines[0] == "11-30 13:00 SKIPS 1h: 80  max_positions 60, no_edge 20  (1 entered)"
    assert lines[1] == "11-30 16:00 SKIPS 1h: 1  cooldown 1  (0 entered)"
