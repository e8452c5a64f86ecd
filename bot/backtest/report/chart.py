"""`equity.png`: the account's equity and drawdown, with BTC buy-and-hold for reference.

matplotlib is imported inside `equity_png` (Agg canvas, no pyplot and its global state), so
importing `bot.backtest.report` costs the daemon nothing; only a backtest that writes a report pays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bot.backtest.report.metrics import drawdown

STRATEGY = "#2563eb"
BENCH = "#f59e0b"
DD = "#dc2626"
MAX_POINTS = 4000


def envelope(ts: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points that keep each bucket's min and max (a 6-week minute curve
    has 60k points; a plain stride would hide the drawdown's trough)."""
    n = len(y)
    if n <= max_points:
        return ts, y
    per = int(np.ceil(n / (max_points // 2)))
    m = n // per * per
    yb = y[:m].reshape(-1, per)
    base = np.arange(0, m, per)
    i_min = base + yb.argmin(axis=1)
    i_max = base + yb.argmax(axis=1)
    idx = np.unique(np.concatenate([i_min, i_max, np.arange(m, n), [0, n - 1]]))
    return ts[idx], y[idx]


def _dates(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[ms]")


def equity_png(
    path: Path,
    ts: np.ndarray,
    equity: np.ndarray,
    benchmark: tuple[np.ndarray, np.ndarray] | None,
    *,
    title: str = "",
) -> None:
    """Write the two-panel picture (equity over drawdown) to `path`.

    `benchmark` is (ts, equity) of the buy-and-hold curve already scaled to the initial
    equity, or None. An empty curve still gives a picture that says so.
    """
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no pyplot, no global backend switch
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1.25])
    ax = fig.add_subplot(gs[0])
    axd = fig.add_subplot(gs[1], sharex=ax)
    for a in (ax, axd):
        a.grid(True, color="#e5e7eb", linewidth=0.8)
        a.set_axisbelow(True)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
        a.spines["left"].set_color("#9ca3af")
        a.spines["bottom"].set_color("#9ca3af")
        a.tick_params(colors="#374151", labelsize=9)
    if title:
        ax.set_title(title, loc="left", fontsize=12, color="#111827")

    if len(equity) == 0:
        ax.text(0.5, 0.5, "no equity recorded", ha="center", va="center", transform=ax.transAxes, fontsize=14, color="#6b7280")
        axd.text(0.5, 0.5, "no drawdown", ha="center", va="center", transform=axd.transAxes, color="#6b7280")
        fig.savefig(path, facecolor="white")
        return

    x, y = envelope(np.asarray(ts), np.asarray(equity, dtype=np.float64))
    ax.plot(_dates(x), y, color=STRATEGY, linewidth=1.6, label="strategy equity")
    ax.axhline(float(equity[0]), color="#9ca3af", linewidth=0.8, linestyle=":")
    if benchmark is not None and len(benchmark[0]) > 1:
        bx, by = envelope(np.asarray(benchmark[0]), np.asarray(benchmark[1], dtype=np.float64))
        ax.plot(_dates(bx), by, color=BENCH, linewidth=1.5, label="BTC buy-and-hold")
        bdd = drawdown(np.asarray(benchmark[1], dtype=np.float64))
        bdx, bdy = envelope(np.asarray(benchmark[0]), bdd)
        axd.plot(_dates(bdx), -bdy * 100, color=BENCH, linewidth=0.9, alpha=0.7, label="BTC buy-and-hold")
    ax.set_ylabel("equity (USDT)", color="#374151")
    ax.legend(loc="upper left", frameon=False, fontsize=9)

    dd = drawdown(np.asarray(equity, dtype=np.float64))
    dx, dy = envelope(np.asarray(ts), dd)
    axd.fill_between(_dates(dx), -dy * 100, 0, color=DD, alpha=0.25, linewidth=0)
    axd.plot(_dates(dx), -dy * 100, color=DD, linewidth=1.0, label="strategy drawdown")
    axd.set_ylabel("drawdown (%)", color="#374151")
    axd.legend(loc="lower left", frameon=False, fontsize=8, ncols=2)

    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    axd.xaxis.set_major_locator(loc)
    axd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.tick_params(labelbottom=False)
    axd.set_xlabel("UTC", color="#6b7280", fontsize=9)
    fig.savefig(path, facecolor="white")
