"""`report.html`: one self-contained page a person reads top to bottom.

No external asset of any kind (inline CSS, the picture as a base64 data URI, no script), so the
file can be mailed, archived or opened offline. Every time is shown as a UTC date through
`models.timeutil`; every value comes from the metrics dict `bot.backtest.report.metrics` computed, so
the page and `metrics.json` cannot disagree.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from bot.engine.records import ClosedTrade
from models import textfmt
from models.timeutil import MINUTE_MS, fmt_date, fmt_short, fmt_span, fmt_ts
from risk.reasons import PROTECTION_LABELS

WORST_N = 10

CSS = """
:root { --bg:#f3f4f6; --card:#fff; --ink:#111827; --muted:#6b7280; --line:#e5e7eb;
        --pos:#047857; --neg:#b91c1c; --accent:#2563eb; --warn-bg:#fef3c7; --warn:#92400e; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Roboto, sans-serif; }
main { max-width: 1220px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
header .sub { color: var(--muted); font-size: 14px; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:13px; font-weight:600;
         vertical-align: middle; margin-left: 8px; }
.badge.insample { background: var(--warn-bg); color: var(--warn); border:1px solid #fcd34d; }
.badge.oos { background:#dcfce7; color:#166534; border:1px solid #86efac; }
.banner { margin: 16px 0 0; padding: 12px 16px; border-radius: 10px; font-size: 14px; }
.banner.warn { background: var(--warn-bg); color: var(--warn); border: 1px solid #fcd34d; }
.banner.info { background: #e0e7ff; color: #1e3a8a; border: 1px solid #a5b4fc; }
.cards { display:grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin: 20px 0; }
@media (max-width: 1000px) { .cards { grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); } }
.card { background: var(--card); border-radius: 12px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.06);
        border: 1px solid var(--line); }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 26px; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12.5px; }
.pos { color: var(--pos); } .neg { color: var(--neg); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 18px 20px;
          margin: 16px 0; box-shadow: 0 1px 2px rgba(0,0,0,.05); }
section h2 { margin: 0 0 12px; font-size: 17px; }
section p.hint { color: var(--muted); font-size: 13px; margin: -6px 0 12px; }
figure { margin: 0; } figure img { width: 100%; height: auto; display: block; border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em;
     background: #f9fafb; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
tbody tr:hover { background: #eef2ff; }
table.kv td:first-child { color: var(--muted); width: 38%; }
table.kv td { text-align: left; white-space: normal; }
#skips td:last-child { width: 32%; }
.tag { color: var(--muted); font-size: 11.5px; margin-left: 6px; }
p.after { color: var(--muted); font-size: 13px; margin: 10px 0 0; }
.bar { height: 8px; background: #c7d2fe; border-radius: 4px; min-width: 2px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; }
footer dl { display:grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
footer dt { font-weight: 600; color: #374151; } footer dd { margin: 0; }
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: float | None, digits: int = 2, sign: bool = True) -> str:
    return textfmt.pct(x, sign=sign, digits=digits)


def num(x: float | None, digits: int = 2) -> str:
    return textfmt.fixed(x, digits)


def money(x: float | None, digits: int = 2) -> str:
    return textfmt.fixed(x, digits)


def signed_money(x: float | None) -> str:
    return textfmt.money(x)


def tone(x: float | None) -> str:
    """CSS class of a signed figure."""
    if x is None or x == 0:
        return ""
    return "pos" if x > 0 else "neg"


def pf_text(block: Mapping[str, Any]) -> str:
    """Profit factor; '∞' for trades without a loss, `MISSING` without trades."""
    if block.get("profit_factor") is not None:
        return textfmt.pf(block["profit_factor"])
    if block.get("trades") and block.get("avg_loss") is None:
        return textfmt.pf(float("inf"))
    return textfmt.MISSING


def hold_text(minutes: float | None) -> str:
    return textfmt.duration(None if minutes is None else minutes * 60)


def card(label: str, value: str, note: str = "", cls: str = "", key: str = "") -> str:
    data = f' data-metric="{esc(key)}"' if key else ""
    return (f'<div class="card"{data}><div class="label">{esc(label)}</div>'
            f'<div class="value {cls}">{esc(value)}</div><div class="note">{esc(note)}</div></div>')  # fmt: skip


def table(head: Sequence[str] | None, rows: Sequence[Sequence[str]], *, left: Sequence[int] = (0,), raw: bool = False,
          cls: str = "") -> str:
    """An HTML table; cells are escaped unless `raw` (for cells already built from escaped parts)."""
    th = "".join(f'<th class="{"l" if i in left else ""}">{esc(h)}</th>' for i, h in enumerate(head or ()))
    body = []
    for r in rows:
        tds = "".join(
            f'<td class="{"l" if i in left else ""}">{c if raw else esc(c)}</td>' for i, c in enumerate(r)
        )
        body.append(f"<tr>{tds}</tr>")
    thead = f"<thead><tr>{th}</tr></thead>" if head else ""
    return f'<table class="{cls}">{thead}<tbody>{"".join(body)}</tbody></table>'


def span(text: str, cls: str) -> str:
    return f'<span class="{cls}">{esc(text)}</span>' if cls else esc(text)


def _window_text(lo: Any, hi: Any) -> str:
    if lo is None or hi is None:
        return textfmt.MISSING
    return fmt_span(int(lo), int(hi)) + " UTC"


def summary_cards(m: Mapping[str, Any]) -> str:
    tr = m["overall"]["trades"]
    pf = m["overall"]["portfolio"]
    bm = m.get("benchmark") or {}
    n = tr["trades"]
    ci = tr.get("expectancy_ci95")
    exp_note = f"95% CI {pct(ci[0], 3)} … {pct(ci[1], 3)}" if ci else "too few trades for an interval"
    if tr.get("expectancy_t") is not None:
        exp_note += f" · t {tr['expectancy_t']:.2f}"
    dd_note = ""
    if pf.get("max_drawdown_quote"):
        dd_note = f"{money(pf['max_drawdown_quote'])} USDT, {fmt_short(pf['max_drawdown_peak_ts'])} → {fmt_short(pf['max_drawdown_trough_ts'])} UTC"
    bm_ret = bm.get("total_return")
    excess = None if bm_ret is None or pf.get("total_return") is None else pf["total_return"] - bm_ret
    cards = [
        card("Net return", pct(pf.get("total_return")), f"{money(pf.get('initial_equity'))} → {money(pf.get('final_equity'))} USDT",
             tone(pf.get("total_return")), "total_return"),
        card("BTC buy-and-hold", pct(bm_ret), "same window and equity, no costs" if excess is None else f"strategy {excess * 100:+.2f} pp against it",
             tone(bm_ret), "benchmark_return"),
        card("Trades", f"{n:,}", f"win rate {pct(tr.get('win_rate'), 1, sign=False)}" if n else "no trades", "", "trades"),
        card("Profit factor", pf_text(tr), f"on quote P&L {num(tr.get('profit_factor_pnl'))}" if n else "no trades",
             "" if tr.get("profit_factor") is None else tone(tr["profit_factor"] - 1.0), "profit_factor"),
        card("Expectancy / trade", pct(tr.get("expectancy"), 3), exp_note, tone(tr.get("expectancy")), "expectancy"),
        card("Max drawdown", pct(pf.get("max_drawdown"), 2, sign=False), dd_note or "of the portfolio equity",
             "neg" if pf.get("max_drawdown") else "", "max_drawdown"),
        card("Sharpe (daily)", num(pf.get("sharpe_daily")), f"Sortino {num(pf.get('sortino_daily'))} · annualised √365",
             tone(pf.get("sharpe_daily")), "sharpe"),
        card("Annualised return", pct(pf.get("annualised_return"), 1), f"over {num(pf.get('days'), 1)} days, compounded",
             tone(pf.get("annualised_return")), "annualised_return"),
        card("Fees paid", f"{money(pf.get('fees_paid'))}", f"USDT · turnover {num(pf.get('turnover'), 1)}× equity", "", "fees_paid"),
        card("Exposure", pct(pf.get("exposure"), 1, sign=False), f"in market {pct(pf.get('time_in_market'), 1, sign=False)} of the time",
             "", "exposure"),
    ]  # fmt: skip
    return f'<div class="cards">{"".join(cards)}</div>'


def about_table(m: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    from models.trading.costs import Costs

    fee = meta.get("fee_rate")
    slip = meta.get("slippage_bps")
    cost_rows: list[tuple[str, str]] = []
    if fee is not None and slip is not None:
        rt = Costs(fee_rate=float(fee), slippage=float(slip) / 10_000.0).round_trip
        cost_rows = [("Fee per side", pct(float(fee), 3, sign=False)), ("Slippage per side", f"{float(slip):g} bps"),
                     ("Round trip (flat trade)", pct(-rt, 3))]  # fmt: skip
    syms = list(meta.get("symbols") or m.get("per_symbol", {}).keys())
    sym_text = f"{len(syms)}: " + ", ".join(syms) if syms else textfmt.MISSING
    rows = [
        ("Model bundle", str(meta.get("bundle_version") or textfmt.MISSING)),
        ("Trained on", _window_text(meta.get("trained_from_ts"), meta.get("trained_to_ts"))),
        ("Tested on", _window_text((m.get("window") or {}).get("from_ts"), (m.get("window") or {}).get("to_ts"))),
        ("In-sample", "yes: the tested window overlaps the training data" if meta.get("in_sample") else "no"),
        ("Initial equity", f"{money(meta.get('initial_equity'))} USDT"),
        *cost_rows,
        ("Symbols", sym_text),
        ("Equity snapshots", f"{m['overall']['portfolio'].get('snapshots', 0):,}"),
    ]
    return table(None, rows, cls="kv")


def symbol_table(m: Mapping[str, Any]) -> str:
    per = m.get("per_symbol") or {}
    order = sorted(per, key=lambda s: (per[s]["trades"] == 0, -(per[s]["net_pnl"] or 0.0), s))
    rows = []
    for s in order:
        b = per[s]
        rows.append([
            esc(s), f"{b['trades']:,}", esc(pct(b.get("win_rate"), 1, sign=False)), esc(pf_text(b)),
            span(pct(b.get("expectancy"), 3), tone(b.get("expectancy"))),
            span(signed_money(b.get("net_pnl")), tone(b.get("net_pnl"))), esc(money(b.get("fees_paid"))),
            esc(hold_text(b.get("avg_hold_minutes"))), esc(pct(b.get("exposure"), 1, sign=False)),
            esc(pct(b.get("max_drawdown"), 2, sign=False)),
        ])  # fmt: skip
    if not rows:
        return '<p class="hint">No symbols.</p>'
    head = ["symbol", "trades", "win", "PF", "expectancy", "net P&L", "fees", "avg hold", "exposure", "max DD (realised)"]
    return table(head, rows, raw=True)


def worst_table(trades: Sequence[ClosedTrade]) -> str:
    if not trades:
        return '<p class="hint">No trades.</p>'
    worst = sorted(trades, key=lambda t: (t.pnl, t.ret, t.exit_ts))[:WORST_N]
    rows = [[
        esc(t.symbol), esc(fmt_ts(t.entry_ts)), esc(fmt_ts(t.exit_ts)), esc(hold_text((t.exit_ts - t.entry_ts) / MINUTE_MS)),
        esc(f"{t.entry_price:.6g}"), esc(f"{t.exit_price:.6g}"), span(pct(t.ret, 2), tone(t.ret)),
        span(signed_money(t.pnl), tone(t.pnl)), esc(money(t.fees)), esc(t.exit_reason),
    ] for t in worst]  # fmt: skip
    head = ["symbol", "entry (UTC)", "exit (UTC)", "held", "entry px", "exit px", "return", "P&L", "fees", "exit"]
    return table(head, rows, raw=True, left=(0, 1, 2, 9))


def skips_table(m: Mapping[str, Any]) -> str:
    counts: Mapping[str, int] = (m.get("skips") or {}).get("counts") or {}
    total = sum(counts.values())
    if not total:
        return '<p class="hint">No entry candidate was skipped.</p>'
    top = max(counts.values())
    counts = {k: v for k, v in counts.items() if v}
    rows = [[
        esc(k.replace("_", " ")) + (' <span class="tag">protection</span>' if k in PROTECTION_LABELS else ""),
        f"{v:,}", esc(pct(v / total, 1, sign=False)),
        f'<div class="bar" style="width:{max(1.0, 100.0 * v / top):.1f}%"></div>',
    ] for k, v in counts.items()]  # fmt: skip
    rows.append(["<b>total</b>", f"<b>{total:,}</b>", "100%", ""])
    out = table(["reason", "count", "share", ""], rows, raw=True)
    blocked = sum(counts.get(k, 0) for k in PROTECTION_LABELS)
    if blocked:
        out += (f'<p class="after" data-metric="protections">{blocked:,} of them blocked by the protections (entries paused '
                "after the bot's own recent losses: risk.stop_loss_guard, risk.low_profit_lock, risk.drawdown_lookback).</p>")
    return out


def weeks_table(m: Mapping[str, Any]) -> str:
    weeks = m.get("per_week") or {}
    if not weeks:
        return '<p class="hint">No weeks.</p>'
    rows = [[
        esc(w), esc(f"{fmt_date(b['from_ts'])} … {fmt_date(b['to_ts'] - 1)}"), f"{b['trades']:,}", esc(pct(b.get("win_rate"), 1, sign=False)),
        esc(pf_text(b)), span(signed_money(b.get("net_pnl")), tone(b.get("net_pnl"))), esc(money(b.get("fees_paid"))),
        span(pct(b.get("return")), tone(b.get("return"))), esc(pct(b.get("max_drawdown"), 2, sign=False)),
    ] for w, b in weeks.items()]  # fmt: skip
    head = ["ISO week", "days", "trades", "win", "PF", "net P&L", "fees", "return", "max DD"]
    return table(head, rows, raw=True, left=(0, 1))


def render_html(metrics: Mapping[str, Any], trades: Sequence[ClosedTrade], meta: Mapping[str, Any], png: bytes) -> str:
    """The whole page as one string."""
    in_sample = bool(meta.get("in_sample"))
    base_title = str(meta.get("title") or "Backtest report")
    title = f"{base_title} (in-sample)" if in_sample and "in-sample" not in base_title.lower() else base_title
    win = metrics.get("window") or {}
    n_sym = len(meta.get("symbols") or metrics.get("per_symbol") or {})
    sub = " · ".join(x for x in [
        f"tested {_window_text(win.get('from_ts'), win.get('to_ts'))}",
        f"{n_sym} symbol{'s' if n_sym != 1 else ''}",
        f"model {meta['bundle_version']}" if meta.get("bundle_version") else "",
    ] if x)  # fmt: skip
    badge = ('<span class="badge insample">in-sample</span>' if in_sample
             else '<span class="badge oos">out-of-sample</span>')  # fmt: skip
    banners = []
    if in_sample:
        banners.append(
            '<div class="banner warn"><b>In-sample backtest.</b> The tested window overlaps the data this '
            f"model was trained on ({esc(_window_text(meta.get('trained_from_ts'), meta.get('trained_to_ts')))}); "
            "these figures overstate what it would do on data it has not seen.</div>"
        )
    n_trades = metrics["overall"]["trades"]["trades"]
    if n_trades == 0:
        skipped = (metrics.get("skips") or {}).get("total", 0)
        banners.append(
            '<div class="banner info" data-metric="no-trades"><b>No trades in this window.</b> '
            f"The engine skipped {skipped:,} entry candidate{'s' if skipped != 1 else ''} (reasons below); "
            f"trade figures are undefined and shown as \"{textfmt.MISSING}\".</div>"
        )
    img = base64.b64encode(png).decode("ascii")
    caption = ("Portfolio equity marked to market each step (blue) against BTC bought and held with the same initial "
               "equity (amber); below, the drawdown from the running peak. Times are UTC."
               if metrics.get("benchmark") else
               "Portfolio equity marked to market each step; below, the drawdown from the running peak "
               "(no BTC prices were given for a buy-and-hold reference). Times are UTC.")  # fmt: skip
    notes = metrics["overall"]["portfolio"].get("notes", {})
    defs = "".join(f"<dt>{esc(k.replace('_', ' '))}</dt><dd>{esc(v)}</dd>" for k, v in notes.items())
    defs += (f"<dt>trade figures</dt><dd>{esc(metrics['overall']['trades']['basis'])}</dd>"
             "<dt>profit factor</dt><dd>sum of winning returns / sum of losing returns (∞ without a loss); "
             "'on quote P&amp;L' uses the trades' P&amp;L in USDT instead</dd>"
             "<dt>per-symbol max DD</dt><dd>drawdown of the symbol's realised P&amp;L added to the initial equity at exits</dd>")  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{esc(title)} {badge}</h1><div class="sub">{esc(sub)}</div></header>
{"".join(banners)}
{summary_cards(metrics)}
<section id="equity"><h2>Equity and drawdown</h2>
<figure><img id="equity-chart" alt="equity and drawdown of the portfolio, with BTC buy-and-hold" src="data:image/png;base64,{img}">
<figcaption>{caption}</figcaption></figure></section>
<div class="grid2">
<section id="about"><h2>This run</h2>{about_table(metrics, meta)}</section>
<section id="skips"><h2>Skipped entries, by reason</h2>
<p class="hint">Entry candidates the risk manager or the engine did not take.</p>{skips_table(metrics)}</section>
</div>
<section id="symbols"><h2>Per symbol</h2>{symbol_table(metrics)}</section>
<section id="worst"><h2>Worst {str(min(WORST_N, len(trades))) + " " if trades else ""}trades</h2>{worst_table(trades)}</section>
<section id="weeks"><h2>Per ISO week</h2><p class="hint">Trades by the week of their exit; return and drawdown of the portfolio equity within the week.</p>
{weeks_table(metrics)}</section>
<footer><h2 style="font-size:14px;color:#374151">How these figures are defined</h2><dl>{defs}</dl></footer>
</main></body></html>
"""
