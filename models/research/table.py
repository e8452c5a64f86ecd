"""The research report: one markdown table of every configuration tried, the signal
diagnostics per trained variant and fold, the choice and its outer-block figures (+ JSON)."""

from __future__ import annotations

from typing import Any

from models.textfmt import MISSING, fixed, pct
from models.timeutil import fmt_ts


def _p(x: float | None, d: int = 3) -> str:
    return pct(x, digits=d)


def _f(x: float | None, d: int = 2) -> str:
    return fixed(x, d, grouping=False)


def _win(x: float | None) -> str:
    return pct(x, sign=False, digits=1, unit="")


def _t(s: dict[str, Any] | None, key: str) -> str:
    if not s:
        return MISSING
    return f"{_f(s.get('mean'), 3)} (t {_f(s.get(key), 1)})"


def diagnostics_table(results: list[dict[str, Any]]) -> str:
    lines = ["| variant | fold | rows | IC pooled | IC pooled, daily mean (t) | IC cross-sectional, daily mean (t) | "
             "top decile gross / net | bottom decile gross / net |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for res in results:
        for i, d in enumerate(res["diagnostics"], 1):
            dec = d.get("deciles") or []
            top = dec[-1] if dec else {}
            bot = dec[0] if dec else {}
            lines.append(
                f"| {res['variant']} | {i} | {d.get('rows', 0)} | {_f(d.get('ic_pooled'), 3)} | "
                f"{_t(d.get('ic_pooled_daily'), 't')} | {_t(d.get('ic_cross_sectional_daily'), 't')} | "
                f"{_p(top.get('gross_mean'))} / {_p(top.get('net_mean'))} | {_p(bot.get('gross_mean'))} / {_p(bot.get('net_mean'))} |"
            )
    return "\n".join(lines)


def _sorted_rows(rows: list[dict[str, Any]], metric: str, rank: str) -> list[dict[str, Any]]:
    """Eligible configurations first, each group in the order the choice reads them."""

    def key(r: dict[str, Any]) -> tuple:
        v = r["inner"].get(metric)
        v = -1e9 if v is None else v
        if rank == "best":
            return (bool(r.get("eligible", True)), v)
        st = r.get("stability") or {}
        return (bool(r.get("eligible", True)), st.get("share_pf_above_1") or 0.0,
                st.get("worst_pf") if st.get("worst_pf") is not None else 0.0, v)  # fmt: skip

    return sorted(rows, key=key, reverse=True)


def _stab(st: dict[str, Any] | None) -> str:
    if not st or not st.get("months"):
        return "-"
    worst = "-" if st.get("worst_month") is None else f"{st['worst_month']} PF {_f(st.get('worst_pf'))}"
    return f"{st['months_pf_above_1']}/{st['months']}; worst {worst}"


def configurations_table(rows: list[dict[str, Any]], chosen: dict[str, Any] | None, metric: str, rank: str = "best") -> str:
    lines = ["| variant | entry rule | inner trades | PF | expectancy | win % | Sharpe/trade | months PF > 1; worst month | "
             "per fold: trades, PF, expectancy, signal rate |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for r in _sorted_rows(rows, metric, rank):
        i = r["inner"]
        mark = " **(chosen)**" if chosen is not None and r is chosen else ("" if r.get("eligible", True) else " (too few trades)")
        folds = "; ".join(f"{f['trades']}, {_f(f['profit_factor'])}, {_p(f['expectancy'])}, {f['signal_rate']:.4f}" for f in r["folds"])
        win = _win(i.get("win_rate"))
        lines.append(f"| {r['variant']} | {r['rule_label']}{mark} | {i['trades']} | {_f(i['profit_factor'])} | "
                     f"{_p(i['expectancy'])} | {win} | {_f(i.get('sharpe_trade'), 3)} | {_stab(r.get('stability'))} | {folds} |")  # fmt: skip
    return "\n".join(lines)


def _month_cell(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    return f"{m['trades']}, {_f(m.get('profit_factor'))}, {_p(m.get('expectancy'))}"


def months_table(rows: list[dict[str, Any]], chosen: dict[str, Any] | None, metric: str, rank: str, limit: int = 60) -> str:
    """Each configuration's inner (out-of-sample) trades per calendar month of their decisions."""
    months = sorted({m for r in rows for m in (r.get("months") or {})})
    if not months:
        return "No month figures (the study predates them)."
    lines = ["| variant | entry rule | " + " | ".join(f"{m}: trades, PF, expectancy" for m in months) + " |",
             "|---|---|" + "---|" * len(months)]  # fmt: skip
    shown = [r for r in _sorted_rows(rows, metric, rank) if r.get("eligible", True)][:limit]
    for r in shown:
        mark = " **(chosen)**" if chosen is not None and r is chosen else ""
        cells = " | ".join(_month_cell((r.get("months") or {}).get(m)) for m in months)
        lines.append(f"| {r['variant']} | {r['rule_label']}{mark} | {cells} |")
    hidden = sum(1 for r in rows if r.get("eligible", True)) - len(shown)
    if hidden > 0:
        lines.append(f"\n({hidden} more eligible configurations in the JSON report.)")
    return "\n".join(lines)


def monthly_ic_table(results: list[dict[str, Any]]) -> str:
    """Rank IC per calendar month of each trained variant's inner validation blocks."""
    months = sorted({m for res in results for r in res["rules"][:1] for m in (r.get("months") or {})})
    if not months:
        return ""
    lines = ["| variant | " + " | ".join(f"{m}: IC pooled / cross-sectional" for m in months) + " |",
             "|---|" + "---|" * len(months)]  # fmt: skip
    for res in results:
        mm = (res["rules"][0].get("months") or {}) if res["rules"] else {}
        cells = " | ".join(f"{_f(mm.get(m, {}).get('ic_pooled'), 3)} / {_f(mm.get(m, {}).get('ic_cross_sectional'), 3)}"
                           for m in months)  # fmt: skip
        lines.append(f"| {res['variant']} | {cells} |")
    return "\n".join(lines)


def outer_months_table(outer: dict[str, Any]) -> str:
    mm = (outer.get("months") or {}).get("months") or {}
    if not mm:
        return ""
    st = (outer.get("months") or {}).get("stability") or {}
    lines = ["| month | trades | PF | expectancy | win % | rank IC pooled | rank IC cross-sectional |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, f in mm.items():
        lines.append(f"| {m} | {f['trades']} | {_f(f.get('profit_factor'))} | {_p(f.get('expectancy'))} | "
                     f"{_win(f.get('win_rate'))} | {_f(f.get('ic_pooled'), 3)} | {_f(f.get('ic_cross_sectional'), 3)} |")  # fmt: skip
    lines.append("")
    lines.append(f"Stability on the outer block: {_stab(st)} (months with PF > 1 of the months it spans).")
    return "\n".join(lines)


def outer_section(outer: dict[str, Any] | None) -> str:
    if outer is None:
        return "No configuration had enough inner trades to be chosen; nothing was judged on the outer block.\n"
    f = outer["figures"]
    d = outer["deflated_sharpe"]
    a = outer.get("audit") or {}
    dg = outer.get("diagnostics") or {}
    lines = [
        f"Chosen: **{outer['variant']}**, entry rule **{outer['rule']}**.",
        "",
        f"Outer block {fmt_ts(outer['window'][0])} .. {fmt_ts(outer['window'][1])} UTC (never used to choose):",
        "",
        "| trades | PF | expectancy (t) | win % | Sharpe (daily, portfolio) | max DD (portfolio) | signal rate | Sharpe/trade | deflated Sharpe (N trials) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {f['trades']} | {_f(f['profit_factor'])} | {_p(f['expectancy'])} ({_f(outer.get('expectancy_t'), 1)}) | "
        f"{_win(f.get('win_rate'))} | {_f(f.get('sharpe_daily'))} | "
        f"{_p(f.get('max_drawdown'), 2)} | {f['signal_rate']:.4f} | {_f(f.get('sharpe_trade'), 3)} | "
        f"{_f(d.get('dsr'), 3)} (N={d['n_trials']}, SR0 {_f(d.get('sr0'), 3)}) |",
        "",
        outer_months_table(outer),
        "",
        _no_trade(outer),
        f"Signal on the outer block: IC pooled {_f(dg.get('ic_pooled'), 3)}, daily {_t(dg.get('ic_pooled_daily'), 't')}; "
        f"cross-sectional {_t(dg.get('ic_cross_sectional_daily'), 't')}.",
        "",
        f"Same trades with a maker entry (limit buy at the next open, assumed always filled there; 0.1 % maker fee, no "
        f"entry slippage): PF {_f(outer['maker_entry']['profit_factor'])}, expectancy {_p(outer['maker_entry']['expectancy'])}.",
        "",
    ]
    if a.get("enabled"):
        perm = a.get("permuted") or {}
        top = perm.get("top") or {}
        lines.append(f"Leakage audit: {'passed' if a.get('passed') else 'FAILED: ' + '; '.join(a.get('reasons', []))} "
                     f"(permuted-label model at the same signal rate: {top.get('trades', MISSING)} trades, PF {_f(top.get('profit_factor'))}; "
                     f"look-ahead columns: {a.get('lookahead_columns') or 'none'}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _no_trade(outer: dict[str, Any]) -> str:
    if outer["figures"]["trades"]:
        return ""
    q = outer.get("score_quantiles") or {}
    return (f"**The chosen configuration took no trade on the outer block**: its predicted er there has median "
            f"{_p(q.get('q50'), 4)}, 99th percentile {_p(q.get('q99'), 4)} and maximum {_p(q.get('max'), 4)}, below its "
            f"entry threshold; the level its scores reached on the inner folds did not carry over.\n")


def reference_section(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return ""
    f = ref["figures"]
    return (f"For reference (not chosen, not part of the choice): today's configuration ({ref['variant']}, {ref['rule']}) "
            f"on the same outer block: {f['trades']} trades, PF {_f(f['profit_factor'])}, expectancy {_p(f['expectancy'])} "
            f"(t {_f(ref.get('expectancy_t'), 1)}), signal rate {f['signal_rate']:.4f}.\n")  # fmt: skip


def _outer_text(m: dict[str, Any]) -> str:
    if m.get("outer_window"):
        a, b = m["outer_window"]
        return f"outer block {fmt_ts(a)} .. {fmt_ts(b)} (named before the run)"
    return f"outer block = the last {m['outer_days']:g} days"


def _choice_text(m: dict[str, Any]) -> str:
    if m.get("rank", "best") == "best":
        return f"Chosen by inner `{m['metric']}` (pooled inner trades)"
    return (f"Chosen by stability: the highest share of inner months with PF > 1, then the best worst-month PF, then "
            f"inner `{m['metric']}` (pooled inner trades)")  # fmt: skip


def _partial(m: dict[str, Any]) -> str:
    if m.get("missing_variants"):
        return f" (of {m.get('configurations_in_grid')} in the grid: {m['missing_variants']} trained variants unfinished)"
    return ""


def markdown(report: dict[str, Any]) -> str:
    m = report["meta"]
    parts = [
        f"# Research grid `{m['grid']}` (study `{m['study']}`)",
        "",
        f"Data: {fmt_ts(m['data'][0])} .. {fmt_ts(m['data'][1])} UTC, inner range {fmt_ts(m['inner'][0])} .. "
        f"{fmt_ts(m['inner'][1])}, {_outer_text(m)}. "
        f"Trained variants: {m['variants']}; entry rules per variant: {m['rules']}; "
        f"**configurations tried: {m['configurations']}**{_partial(m)}. {_choice_text(m)} among those with "
        f">= {m['min_trades']} inner trades and >= {m.get('min_fold_trades', 0)} in each inner fold.",
        "",
        "## Choice and outer block",
        "",
        outer_section(report.get("outer")),
        reference_section(report.get("reference")),
        "## Every configuration (inner folds only)",
        "",
        f"{m.get('eligible_configurations', MISSING)} of {m['configurations']} configurations had enough inner trades to be chosen; "
        "they come first, by the choosing figure.",
        "",
        configurations_table(report["rows"], report.get("chosen"), m["metric"], m.get("rank", "best")),
        "",
        "## Per calendar month (inner folds, out of sample; month of the decision)",
        "",
        months_table(report["rows"], report.get("chosen"), m["metric"], m.get("rank", "best")),
        "",
        "Rank IC per month of each trained variant:",
        "",
        monthly_ic_table(report["results"]),
        "",
        "## Signal diagnostics per trained variant and inner fold",
        "",
        diagnostics_table(report["results"]),
        "",
    ]
    return "\n".join(parts)
