"""The dashboard page: one HTML document with inline CSS and a small inline script.

No external asset (works offline, on a machine without internet). The first state is embedded
in the page, so it shows everything at once; the script then polls `/api/state` every
`refresh_s` seconds and redraws: status cards, the equity chart (inline SVG built by the
script), open positions, recent trades and decisions, feed health per symbol, model versions.
All times arrive as UTC text from the server (`models.timeutil`); the script only formats
numbers.
"""

from __future__ import annotations

import html
import json
from typing import Any

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
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s === null || s === undefined ? '–' : s)
      .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const num = (x, d = 2) => (x === null || x === undefined) ? '–'
      : Number(x).toLocaleString('en-US', {minimumFractionDigits: d, maximumFractionDigits: d});
  const sgn = (x, d = 2) => (x === null || x === undefined) ? '–' : (x > 0 ? '+' : '') + num(x, d);
  const pct = (x, d = 2) => (x === null || x === undefined) ? '–' : (x > 0 ? '+' : '') + (x * 100).toFixed(d) + '%';
  const price = (x) => (x === null || x === undefined) ? '–' : Number(x).toPrecision(6).replace(/\.?0+$/, '');
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
    $('updated').textContent = `model ${st.model_version || '–'} · updated ${s.now_text} UTC`;
    const notes = [];
    if (s.notice) notes.push(`<div class="notice">${esc(s.notice)}</div>`);
    if (st.watch_only && st.watch_reason) notes.push(`<div class="notice">${esc(st.watch_reason)}</div>`);
    if (s.error) notes.push(`<div class="notice err">${esc(s.error)}</div>`);
    $('notices').innerHTML = notes.join('');
  }

  function cards(s) {
    const a = s.account, st = s.status;
    $('cards').innerHTML = [
      card('Equity', num(a.equity), a.equity === null ? 'no snapshot yet' : `USDT · ${a.ts_short.slice(6)} UTC`, '', 'equity'),
      card("Today's P&L", sgn(a.today_pnl), pct(a.today_pct), tone(a.today_pnl), 'today_pnl'),
      card('Open positions', a.open_positions === null ? '–' : String(a.open_positions),
           `exposure ${a.exposure_pct === null || a.exposure_pct === undefined ? '–' : (a.exposure_pct * 100).toFixed(1) + '%'}`, '', 'open_positions'),
      card('Cash', num(a.cash), 'USDT free', '', 'cash'),
      card('Last minute', st.last_minute_text === '–' ? '–' : st.last_minute_text.slice(11),
           `${st.last_minute_age_text} ago`, '', 'last_minute'),
      card('Decision', st.decision_latency_ms === null || st.decision_latency_ms === undefined ? '–' : num(st.decision_latency_ms, 2) + ' ms',
           `bars processed ${st.bars_processed === undefined ? '–' : Number(st.bars_processed).toLocaleString('en-US')}`, '', 'latency'),
      card('Loop lag', st.loop_lag_ms === null || st.loop_lag_ms === undefined ? '–' : num(st.loop_lag_ms, 1) + ' ms', 'event loop', '', 'loop_lag'),
      card('Memory', st.rss_mb === null || st.rss_mb === undefined ? '–' : num(st.rss_mb, 0) + ' MB', `RSS · up ${st.uptime_text}`, '', 'rss'),
    ].join('');
  }

  function chart(e) {
    const W = 1000, H = 280, L = 64, R = 12, T = 12, B = 26;
    const box = $('chart');
    if (!e.ts.length) { box.innerHTML = '<div class="empty">No equity snapshots yet.</div>'; return; }
    let lo = Math.min(...e.equity), hi = Math.max(...e.equity);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
    const t0 = e.ts[0], t1 = e.ts[e.ts.length - 1] > t0 ? e.ts[e.ts.length - 1] : t0 + 60000;
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
    const pts = e.ts.map((t, i) => `${x(t).toFixed(1)},${y(e.equity[i]).toFixed(1)}`);
    const first = e.equity[0], last = e.equity[e.equity.length - 1];
    const color = last >= first ? '#34d399' : '#f87171';
    let g = '';
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, yy = y(v).toFixed(1);
      g += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
           `<text class="axis" x="${L - 6}" y="${(+yy + 4).toFixed(1)}" text-anchor="end">${num(v, 0)}</text>`;
    }
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
    $('chart-title').textContent = `Equity (USDT), last ${e.hours} h` + (e.from_text ? ` · ${e.from_text} … ${e.to_text} UTC` : '');
  }

  function tables(s) {
    $('positions').innerHTML = table(
      ['symbol', 'qty', 'entry', 'last', 'value', 'unrealised', '%', 'TP', 'SL', 'opened', 'held', 'expires'],
      s.positions.map(p => [esc(p.symbol), price(p.qty), price(p.entry_price), price(p.last_price), num(p.value),
        span(sgn(p.upnl), tone(p.upnl)), span(pct(p.upnl_pct), tone(p.upnl_pct)), price(p.take_profit),
        price(p.stop_loss), esc(p.entry_text), esc(p.held_text), esc(p.expires_text)]),
      'No open positions.');
    $('trades').innerHTML = table(['symbol', 'exit (UTC)', 'entry', 'exit', 'P&L', '%', 'reason'],
      s.trades.map(t => [esc(t.symbol), esc(t.exit_text), price(t.entry_price), price(t.exit_price),
        span(sgn(t.pnl), tone(t.pnl)), span(pct(t.pnl_pct), tone(t.pnl_pct)), esc(t.reason)]),
      'No closed trades yet.', [0, 1, 6]);
    $('decisions').innerHTML = table(['time (UTC)', 'symbol', 'action', 'reason', 'er', 'p', 'size'],
      s.decisions.recent.map(d => [esc(d.time_text), esc(d.symbol), esc(d.action), esc(d.reason),
        d.er === null ? '–' : pct(d.er, 3), d.p === null ? '–' : num(d.p, 2), d.size === null ? '–' : pct(d.size, 1)]),
      'No decisions yet.', [0, 1, 2, 3]);
    const sk = s.decisions.skips_last_hour;
    $('skips').innerHTML = table(['reason', 'skips in the last hour'], sk.map(r => [esc(r.reason), num(r.count, 0)]), 'No skipped entries in the last hour.');
    $('feed').innerHTML = s.feed.length ? '<div class="feed">' + s.feed.map(f =>
      `<div class="chip ${esc(f.health)}" title="last candle ${esc(f.last_text)} UTC"><span>${esc(f.symbol)}</span><span class="age">${esc(f.age_text)}</span></div>`
    ).join('') + '</div>' : '<div class="empty">No symbols.</div>';
    $('models').innerHTML = table(['version', 'status', 'trained on', 'validated PF', 'trades', 'created (UTC)'],
      s.models.map(m => [esc(m.version), esc(m.status), esc(m.trained_text), m.pf === null ? '–' : num(m.pf, 2),
        m.trades === null || m.trades === undefined ? '–' : num(m.trades, 0), esc(m.created_text)]),
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
    script = SCRIPT.replace("__REFRESH_MS__", str(int(refresh_s * 1000)))
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
<section><h2>Feed health (age of the last closed candle)</h2><div id="feed"></div></section>
<section><h2>Skipped entries</h2><div id="skips"></div></section>
</div>
<section><h2>Model versions</h2><div id="models"></div></section>
<footer>Read-only. Refreshes every {refresh_s:g} s from <code>/api/state</code>; Prometheus figures at <code>/metrics</code>. Times are UTC.</footer>
</main>
<script type="application/json" id="initial-state">{_json_for_script(state)}</script>
<script>{script}</script>
</body></html>
"""
