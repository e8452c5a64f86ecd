"""The dashboard's HTTP server: aiohttp on loopback, GET only.

    /            the page (`bot.ops.dashboard.page`), with the current state embedded
    /api/state   the same state as JSON (the page polls it)
    /metrics     Prometheus text exposition of `DaemonMetrics` (with the read model's figures of that moment)
    /healthz     "ok"
    POST /api/control  the operator's commands, behind a token (`bot.ops.control.dashboard`; in the daemon)

`start_dashboard(app_state, cfg)` runs it inside the daemon's event loop and returns the
`aiohttp.web.AppRunner` (stop it with `await runner.cleanup()`), or None when the dashboard is
disabled or its port cannot be bound: a dashboard problem is logged in one line and never stops
the daemon. A failed store read answers 503 with the reason; the page keeps its last data and
says so.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from bot.logs.error_lines import ErrorStreak
from bot.ops.control.dashboard import CONTROL_KEY as CONTROL
from bot.ops.control.dashboard import add_routes, with_panel
from bot.ops.dashboard.config import DashboardConfig
from bot.ops.dashboard.metrics import DaemonMetrics, LoopLagMonitor
from bot.ops.dashboard.page import render_page
from bot.ops.dashboard.state import DashboardState, read_state
from bot.ops.read_model import to_json
from bot.runtime.aio import wait_for

if TYPE_CHECKING:
    from bot.config import Config

log = structlog.get_logger("bot.ops.dashboard")

READ_TIMEOUT_S = 15.0
METRICS_READ_TIMEOUT_S = 5.0  # inside a scraper's usual 10 s timeout: a slow store costs the read model's figures, not the scrape
_READ_ERRORS = ErrorStreak("dashboard store read", "dashboard_read_failed", log)
STATE_KEY: web.AppKey[DashboardState] = web.AppKey("state", DashboardState)
CFG_KEY: web.AppKey[DashboardConfig] = web.AppKey("cfg", DashboardConfig)
MONITOR_KEY: web.AppKey[Any] = web.AppKey("loop_lag_monitor", object)


async def _state_or_error(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    live = request.app[STATE_KEY].live
    details = live() if live is not None else {}
    if details.get("store_up") is False:  # the daemon knows: do not wait for a stalled server
        why = f"the store is unavailable (for {details.get('store_down_s', 0):.0f}s); the daemon holds its writes and retries"
        return None, why
    try:
        # bounded: a stalled database must not hang the page (the daemon's outage handling: bot.store.outage)
        state = to_json(await wait_for(read_state(request.app[STATE_KEY]), READ_TIMEOUT_S))
    except Exception as e:  # noqa: BLE001 - the page reports it; the daemon goes on
        _READ_ERRORS.failed(e)
        return None, f"{type(e).__name__}: {e}"
    _READ_ERRORS.ok()
    return state, None


async def page(request: web.Request) -> web.Response:
    state, err = await _state_or_error(request)
    if state is None:
        return web.Response(status=503, text=f"dashboard: cannot read the store: {err}\n")
    cfg = request.app[CFG_KEY]
    st = request.app[STATE_KEY]
    body = render_page(state, refresh_s=cfg.refresh_s, title=f"cryptobot · {st.mode}")
    if CONTROL in request.app:
        body = with_panel(body)
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


async def api_state(request: web.Request) -> web.Response:
    state, err = await _state_or_error(request)
    if state is None:
        return web.json_response({"error": err}, status=503)
    return web.Response(text=json.dumps(state, allow_nan=False), content_type="application/json",
                        headers={"Cache-Control": "no-store"})  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    st = request.app[STATE_KEY]
    m: DaemonMetrics | None = st.metrics
    if m is None:
        return web.Response(status=404, text="no metrics registry in this process\n")
    view = None
    details = st.live() if st.live is not None else {}
    if details.get("store_up") is not False:
        try:  # the figures the page shows, from the same read model (bounded, as the page's read)
            view = await wait_for(st.read_model().view(), METRICS_READ_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a scrape still gets the in-process figures
            _READ_ERRORS.failed(e)
    m.observe(view)
    resp = web.Response(body=m.render())
    resp.headers["Content-Type"] = m.content_type
    return resp


#: At stop, how long a request in flight may finish (aiohttp waits 60 s by default).
SHUTDOWN_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(app_state: DashboardState, cfg: DashboardConfig, control: tuple[Any, str] | None = None) -> web.Application:
    """The aiohttp application (no socket yet); tests may serve it with aiohttp's test server.
    `control`: (the daemon's controller, the token) for `POST /api/control`."""
    app = web.Application()
    if control is not None:
        add_routes(app, *control)
    app_state.equity_hours = cfg.equity_hours or None
    app[STATE_KEY] = app_state
    app[CFG_KEY] = cfg
    app.router.add_get("/", page)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)

    async def _monitor(app: web.Application):  # the loop-lag sampler lives as long as the app
        mon = LoopLagMonitor(app_state.metrics) if app_state.metrics is not None else None
        if mon is not None:
            mon.start()
        yield
        if mon is not None:
            await mon.stop()

    app.cleanup_ctx.append(_monitor)
    return app


async def start_dashboard(app_state: DashboardState, cfg: Config | DashboardConfig,
                          control: tuple[Any, str] | None = None) -> web.AppRunner | None:
    """Serve the dashboard on `cfg.dashboard` (a full `Config`) or `cfg` (a `DashboardConfig`).

    Returns the started runner, or None when disabled or when the port cannot be bound.
    """
    dcfg: DashboardConfig = getattr(cfg, "dashboard", cfg)
    if not dcfg.enabled:
        return None
    runner = web.AppRunner(make_app(app_state, dcfg, control), access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S)  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, dcfg.host, dcfg.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        log.error("dashboard_unavailable", host=dcfg.host, port=dcfg.port, error=str(e),
                  text=f"dashboard: cannot listen on {dcfg.host}:{dcfg.port} ({e.strerror or e}); "
                       "running without it (set dashboard.port or dashboard.enabled: false)")  # fmt: skip
        return None
    log.info("dashboard_up", url=f"http://{dcfg.host}:{dcfg.port}/",
             text=f"dashboard on http://{dcfg.host}:{dcfg.port}/ (metrics at /metrics)")  # fmt: skip
    return runner
