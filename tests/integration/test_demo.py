"""`make demo` in its short non-interactive mode: simulator + quick bundle + daemon under a
demo directory of its own; trades happen, the demo notice is in the log, everything stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.shared_data import ROOT, shared_data_or_skip

pytestmark = pytest.mark.slow  # trains a bundle and replays 30 symbols: ~1-2 minutes


def test_demo_runs_trades_and_says_it_is_a_demo(tmp_path: Path) -> None:
    shared_data_or_skip()
    home = tmp_path / "demo"
    user_cfg = (ROOT / "config.yaml").read_bytes()
    r = subprocess.run([sys.executable, "scripts/demo.py", "--home", str(home), "--minutes", "0.4", "--no-tail", "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "first trade line" in r.stdout and "stopped (daemon exit 0)" in r.stdout
    log = (home / "logs" / "bot.log").read_text()
    start = [ln for ln in log.splitlines() if " START paper " in ln]
    assert start and start[-1].endswith("demo: trading a model without a validated edge, paper only  [demo]"), start
    untagged = [ln for ln in log.splitlines() if ln[:2].isdigit() and not ln.endswith("  [demo]")]
    assert not untagged, untagged[:5]  # every line of the demo says so (lines, not traceback continuations)
    assert " BUY " in log and "[paper]" in log
    events = [json.loads(x) for x in (home / "logs" / "bot.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "trade_open" for e in events) >= 1
    assert events[-1]["event"] == "daemon_stop" and events[-1]["rc"] == 0
    assert not (home / "var" / "pgdata" / "postmaster.pid").exists(), "the demo's embedded Postgres was left running"
    assert (ROOT / "config.yaml").read_bytes() == user_cfg  # the user's config is never changed
