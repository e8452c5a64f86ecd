"""The local dashboard of the daemon: one read-only page, its JSON, and Prometheus `/metrics`.

- `bot.ops.dashboard.config.DashboardConfig`: the `dashboard:` config section.
- `bot.ops.dashboard.metrics.DaemonMetrics`: the registry of operator figures the daemon updates
  (bars processed, decision latency, feed lag, equity, open positions, loop lag, RSS).
- `bot.ops.dashboard.state`: the store reads behind the page (asyncpg, read-only).
- `bot.ops.dashboard.server.start_dashboard(app_state, cfg) -> runner`: serves it on loopback.

This package's `__init__` imports nothing heavy: `bot.config` imports the config section from
here, and aiohttp's server and prometheus_client load only when the daemon asks for them.
"""

from typing import Any

_LAZY = {
    "start_dashboard": "bot.ops.dashboard.server",
    "DashboardState": "bot.ops.dashboard.state",
    "DaemonMetrics": "bot.ops.dashboard.metrics",
}


def __getattr__(name: str) -> Any:
    """`from bot.ops.dashboard import start_dashboard` works, loading the server only then."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bot.ops.dashboard' has no attribute {name!r}")
