"""The dashboard page: one HTML document with inline CSS and a small inline script.

No external asset (works offline, on a machine without internet). The first state is embedded
in the page, so it shows everything at once; the script then polls `/api/state` every
`refresh_s` seconds and redraws: status cards, the equity chart (inline SVG built by the
script), open positions, recent trades and decisions, feed health per symbol, model versions.
Every figure arrives as text made on the server (`models.textfmt`, `models.timeutil`, by
`bot.ops.dashboard.state`) next to its value; the script formats nothing: it places the texts,
colours a figure by the sign of its value and draws the chart from the values.
"""

from __future__ import annotations

import html
import json
from typing import Any

from models.textfmt import MISSING

CSS = """
:root { --bg:#0f172a; --panel:#111c33; --line:#1e2b47; --ink:#e5e7eb; --muted:#94a3b8; --pos:#34d399;
        --neg:#f87171; --accent:#60a5fa; --warn:#fbbf24; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Roboto, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 20px 40px; }
header { display:flex; align-items:baseline; gap:14px; flex-wrap:wrap; }
header h1 { font-size: 20px; margin: 0; }
.pill { margin-right: 6px; padding: 2px 10px; border-radius: 999px; font-size: 12.5px; font-weight: 600; border: 1px solid; }
.pill.running, .pill.trading { color: var(--pos); border-color: #065f46; background: #052e2b; }
.pill.stale, .pill.watch { color: var(--warn); border-color: #78350f; background: #2a1d05; }
.pill.stopped, .pill.unknown, .pill.down { color: var(--neg); border-color: #7f1d1d; background: #2a0b0b; }
.pill.mode { color: var(--accent); border-color: #1e3a8a; background: #0b1a3a; }
header .sub { color: var(--muted); font-size: 12.5px; margin-left: auto; }
.notice { margin: 12px 0 0; padding: 9px 14px; border-radius: 8px; background: #2a1d05; color: var(--warn);
          border: 1px solid #78350f; }
.notice.err { background:#2a0b0b; color: var(--neg); border-color:#7f1d1d; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 10px; margin: 14px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px; }
.card .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .05em; }
.card .value { font-size: 21px; font-weight: 650; font-variant-numeric: tabular-nums; margin-top: 2px; }
.card .note { color: var(--muted); font-size: 11.5px; }
.pos { color: var(--pos); } .neg { color: var(--neg); } .muted { color: var(--muted); }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; margin: 12px 0; }
section h2 { font-size: 14px; margin: 0 0 8px; color: #cbd5e1; font-weight: 600; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.grid2 > section { margin: 0; }
@media (max-width: 980px) { .grid2 { grid-template-columns: 1fr; } }
table { width: 100%; border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
th:first-child, td:first-child, .l { text-align: left; }
.empty { color: var(--muted); padding: 8px 0; }
#chart svg { width: 100%; height: 280px; display:block; }
#chart .axis { fill: var(--muted); font-size: 11px; }
#chart .grid { stroke: var(--line); stroke-width: 1; }
.feed { display:grid; grid-template-columns: repeat(auto-fill, minmax(132px, 1fr)); gap: 6px; }
.chip { border-radius: 7px; padding: 5px 8px; font-size: 12px; border: 1px solid var(--line); display:flex; justify-content:space-between; }
.chip.ok { background:#052e2b; border-color:#065f46; } .chip.late { background:#2a1d05; border-color:#78350f; }
.chip.stale, .chip.none { background:#2a0b0b; border-color:#7f1d1d; }
.chip .age { color: var(--muted); }
footer { color: var(--muted); font-size: 11.5px; margin-top: 14px; }
"""

SCRIPT = r"""
(function () {
  const REFRESH_MS = __REFRESH_MS__;
  const MISSING = __MISSING__;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s === null || s === undefined ? MISSING : s)
      .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const tone = (x) => (x === null || x === undefined || x === 0) ? '' : (x > 0 ? 'pos' : 'neg');

  function card(label, value, note, cls, key) {
    return `<div class="card" data-metric="${key}"><div class="label">${esc(label)}</div>` +
           `<div class="value ${cls || ''}">${esc(value)}</div><div class="note">${esc(note || '')}</div></div>`;
  }
  function table(head, rows, empty, left) {
    if (!rows.length) return `<div class="empty">${esc(empty)}</div>`;
    left = left || [0];
    const th = head.map((h, i) => `<th class="${left.includes(i) ? 'l' : ''}">${esc(h)}</th>`).join('');
    const tr = rows.map(r => '<tr>' + r.map((c, i) => `<td class="${left.includes(i) ? 'l' : ''}">${c}</td>`).join('') + '</tr>').join('');
    return `<table><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
  }
  const span = (text, cls) => `<span class="${cls}">${esc(text)}</span>`;

  function header(s, st) {
    const stateCls = st.state || 'unknown';
    let trade = '';
    if (st.watch_only === true) trade = '<span class="pill watch">watch-only</span>';
    else if (st.watch_only === false) trade = '<span class="pill trading">trading</span>';
    $('pills').innerHTML = `<span class="pill mode">${esc(st.mode)}</span>` +
      `<span class="pill ${esc(stateCls)}" id="daemon-state">${esc(st.state_text)}</span>${trade}`;
    $('updated').textContent = `model ${st.model_version || MISSING} · updated ${s.now_text} UTC`;
    const notes = [];
    if (s.notice) notes.push(`<div class="notice">${esc(s.notice)}</div>`);
    if (st.watch_only && st.watch_reason) notes.push(`<div class="notice">${esc(st.watch_reason)}</div>`);
    if (st.paused_text) notes.push(`<div class="notice">${esc(st.paused_text)}</div>`);
    if (st.kill_switch) notes.push(`<div class="notice err">kill switch tripped (${esc(st.kill_switch)}): no new entries</div>`);
    for (const p of st.protections || []) notes.push(`<div class="notice protection" data-protection="${esc(p.protection)}">${esc(p.text)}</div>`);
    if (s.error) notes.push(`<div class="notice err">${esc(s.error)}</div>`);
    $('notices').innerHTML = notes.join('');
  }

  function cards(s) {
    const a = s.account, st = s.status;
    $('cards').innerHTML = [
      card('Equity', a.equity_text, a.equity_note, '', 'equity'),
      card("Today's P&L", a.today_pnl_text, a.today_note, tone(a.today_pnl), 'today_pnl'),
      card('Open positions', String(a.open_positions), a.exposure_text, '', 'open_positions'),
      card('Cash', a.cash_text, 'USDT free', '', 'cash'),
      card('Last minute', st.last_minute_hhmm, st.last_minute_note, '', 'last_minute'),
      card('Decision', st.latency_text, `bars processed ${st.bars_text}`, '', 'latency'),
      card('Loop lag', st.loop_lag_text, 'event loop', '', 'loop_lag'),
      card('Memory', st.rss_text, `RSS · up ${st.uptime_text}`, '', 'rss'),
    ].join('');
  }

  function chart(e) {
    const W = 1000, H = 280, L = 64, R = 12, T = 12, B = 26;
    const box = $('chart');
    $('chart-title').textContent = e.title_text;
    if (!e.ts.length) { box.innerHTML = '<div class="empty">No equity snapshots yet.</div>'; return; }
    const lo = e.lo, hi = e.hi;
    const t0 = e.ts[0], t1 = e.ts[e.ts.length - 1] > t0 ? e.ts[e.ts.length - 1] : t0 + 60000;
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
    const pts = e.ts.map((t, i) => `${x(t).toFixed(1)},${y(e.equity[i]).toFixed(1)}`);
    const first = e.equity[0], last = e.equity[e.equity.length - 1];
    const color = last >= first ? '#34d399' : '#f87171';
    let g = '';
    (e.y_ticks || []).forEach((tk) => {
      const yy = y(tk.v).toFixed(1);
      g += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
           `<text class="axis" x="${L - 6}" y="${(+yy + 4).toFixed(1)}" text-anchor="end">${esc(tk.text)}</text>`;
    });
    (e.ticks || []).forEach((tk, i, arr) => {
      const xx = x(tk.ts).toFixed(1);
      const anchor = i === 0 ? 'start' : (i === arr.length - 1 ? 'end' : 'middle');
      g += `<text class="axis" x="${xx}" y="${H - 6}" text-anchor="${anchor}">${esc(tk.text)}</text>`;
    });
    const area = `M${x(t0).toFixed(1)},${H - B} L${pts.join(' L')} L${x(e.ts[e.ts.length - 1]).toFixed(1)},${H - B} Z`;
    box.innerHTML = `<svg id="equity-svg" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="equity">` +
      `<defs><linearGradient id="fill" x1="0" x2="0" y1="0" y2="1"><stop offset="0" stop-color="${color}" stop-opacity="0.35"/>` +
      `<stop offset="1" stop-color="${color}" stop-opacity="0.02"/></linearGradient></defs>${g}` +
      `<path d="${area}" fill="url(#fill)" stroke="none"/>` +
      `<polyline id="equity-line" points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2" vector-effect="non-scaling-stroke"/></svg>`;
  }

  function tables(s) {
    $('positions').innerHTML = table(
      ['symbol', 'qty', 'entry', 'last', 'value', 'unrealised', '%', 'TP', 'SL', 'opened', 'held', 'expires'],
      s.positions.map(p => [esc(p.symbol), esc(p.qty_text), esc(p.entry_price_text), esc(p.last_price_text), esc(p.value_text),
        span(p.upnl_text, tone(p.upnl)), span(p.upnl_pct_text, tone(p.upnl_pct)), esc(p.take_profit_text),
        esc(p.stop_loss_text), esc(p.entry_text), esc(p.held_text), esc(p.expires_text)]),
      'No open positions.');
    $('trades').innerHTML = table(['symbol', 'exit (UTC)', 'entry', 'exit', 'P&L', '%', 'held', 'reason'],
      s.trades.map(t => [esc(t.symbol), esc(t.exit_text), esc(t.entry_price_text), esc(t.exit_price_text),
        span(t.pnl_text, tone(t.pnl)), span(t.pnl_pct_text, tone(t.pnl_pct)), esc(t.held_text), esc(t.reason)]),
      'No closed trades yet.', [0, 1, 7]);
    $('decisions').innerHTML = table(['time (UTC)', 'symbol', 'action', 'reason', 'er', 'p', 'size'],
      s.decisions.recent.map(d => [esc(d.time_text), esc(d.symbol), esc(d.action), esc(d.reason),
        esc(d.er_text), esc(d.p_text), esc(d.size_text)]),
      'No decisions yet.', [0, 1, 2, 3]);
    const sk = s.decisions.skips_last_hour;
    $('skips').innerHTML = table(['reason', 'skips in the last hour'], sk.map(r => [esc(r.reason), esc(r.count_text)]),
      'No skipped entries in the last hour.');
    $('feed').innerHTML = s.feed.length ? '<div class="feed">' + s.feed.map(f =>
      `<div class="chip ${esc(f.health)}" title="last candle ${esc(f.last_text)} UTC"><span>${esc(f.symbol)}</span><span class="age">${esc(f.age_text)}</span></div>`
    ).join('') + '</div>' : '<div class="empty">No symbols.</div>';
    $('models').innerHTML = table(['version', 'status', 'trained on', 'validated PF', 'trades', 'created (UTC)'],
      s.models.map(m => [esc(m.version), esc(m.status), esc(m.trained_text), esc(m.pf_text), esc(m.trades_text), esc(m.created_text)]),
      'No model recorded yet.', [0, 1, 2]);
  }

  function render(s) {
    try { header(s, s.status); cards(s); chart(s.equity); tables(s); document.body.dataset.rendered = s.now_ms; }
    catch (err) { $('notices').innerHTML = `<div class="notice err">page error: ${esc(err)}</div>`; }
  }

  let last = JSON.parse(document.getElementById('initial-state').textContent);
  render(last);
  async function poll() {
    try {
      const r = await fetch('api/state', {cache: 'no-store'});
      if (!r.ok) throw new Error('HTTP ' + r.status);
      last = await r.json();
      render(last);
    } catch (err) {
      last.error = `cannot reach the daemon (${err.message}); showing data of ${last.now_text} UTC`;
      render(last);
    }
  }
  setInterval(poll, REFRESH_MS);
})();
"""


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside a <script> element (no '</script>' or '<!--' can close it)."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(state: dict[str, Any], *, refresh_s: float, title: str = "cryptobot") -> str:
    """The page with `state` embedded as its first data."""
    script = SCRIPT.replace("__REFRESH_MS__", str(int(refresh_s * 1000))).replace("__MISSING__", json.dumps(MISSING))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · dashboard</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{html.escape(title)}</h1><span id="pills"></span><span class="sub" id="updated"></span></header>
<div id="notices"></div>
<div class="cards" id="cards"></div>
<section><h2 id="chart-title">Equity (USDT)</h2><div id="chart"></div></section>
<section><h2>Open positions</h2><div id="positions"></div></section>
<div class="grid2">
<section><h2>Recent trades</h2><div id="trades"></div></section>
<section><h2>Recent decisions</h2><div id="decisions"></div></section>
</div>
<div class="grid2">
<section><h2>Feed health (how far each symbol's last candle is behind the last minute)</h2><div id="feed"></div></section>
<section><h2>Skipped entries</h2><div id="skips"></div></section>
</div>
<section><h2>Model versions</h2><div id="models"></div></section>
<footer>Read-only. Refreshes every {refresh_s:g} s from <code>/api/state</code>; Prometheus figures at <code>/metrics</code>. Times are UTC; today, ages and "held" are on the exchange's clock (the last processed minute).</footer>
</main>
<script type="application/json" id="initial-state">{_json_for_script(state)}</script>
<script>{script}</script>
</body></html>
"""
