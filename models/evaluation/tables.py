"""Plain-text tables of walk-forward and evaluation reports (markdown, printable anywhere).

Percentages are of the slot's capital per trade (expectancy, avg win/loss) or of the whole
portfolio (return, drawdown).
"""

from __future__ import annotations

from typing import Any

from models.textfmt import fixed, pct, pf
from models.timeutil import fmt_short

HEAD = "| window | trades | win % | PF | expectancy | Sharpe (d) | max DD | exposure | primary-only PF / trades | seed metric PF / bars / mean |"
RULE = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def row(label: str, rep: dict[str, Any]) -> str:
    o = rep["overall"]
    p = rep.get("primary_only") or {}
    s = rep.get("seed_metric") or {}
    win = pct(o.get("win_rate"), sign=False, digits=1, unit="")
    return (
        f"| {label} | {o['trades']} | {win} | {pf(o['profit_factor'])} | {pct(o['expectancy'], digits=3)} | "
        f"{fixed(o.get('sharpe_daily'), grouping=False)} | {pct(o.get('max_drawdown'), sign=False)} | {pct(o.get('exposure', 0), sign=False, digits=1)} | "
        f"{pf(p.get('profit_factor'))} / {p.get('trades', 0)} | "
        f"{pf(s.get('profit_factor'))} / {s.get('bars', 0)} / {pct(s.get('expectancy'), digits=3)} |"
    )


def walk_forward_table(wf: dict[str, Any]) -> str:
    lines = [HEAD, RULE]
    for f in wf.get("folds", []):
        fd = f["fold"]
        lines.append(row(f"fold {fd['index']}: train ..{fmt_short(fd['train_end'])}, valid {fmt_short(fd['valid_start'])}..{fmt_short(fd['valid_end'])}", f))
    if wf.get("all"):
        lines.append(row("all folds", wf["all"]))
    return "\n".join(lines)


def evaluation_table(rep: dict[str, Any]) -> str:
    w = rep["window"]
    return "\n".join([HEAD, RULE, row(f"{fmt_short(w['start'])}..{fmt_short(w['end'])}", rep)])


def per_symbol_table(rep: dict[str, Any]) -> str:
    lines = ["| symbol | trades | win % | PF | expectancy | Sharpe (d) | max DD | exposure |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sym, o in sorted(rep["per_symbol"].items()):
        win = pct(o.get("win_rate"), sign=False, digits=1, unit="")
        lines.append(
            f"| {sym} | {o['trades']} | {win} | {pf(o['profit_factor'])} | {pct(o['expectancy'], digits=3)} | "
            f"{fixed(o.get('sharpe_daily'), grouping=False)} | {pct(o.get('max_drawdown'), sign=False)} | {pct(o.get('exposure', 0), sign=False, digits=1)} |"
        )
    return "\n".join(lines)


def audit_lines(audit: dict[str, Any]) -> str:
    if not audit.get("enabled"):
        return "leakage audit: off"
    out = [f"leakage audit: {'PASSED' if audit.get('passed') else 'FAILED'}"]
    la = audit.get("lookahead") or {}
    out.append(f"  look-ahead check: {len(la.get('symbols', {}))} symbol(s), offending columns: {la.get('columns') or 'none'}")
    perm = audit.get("permuted")
    if perm:
        for k, label in (("at_threshold", "at the er threshold"), ("top", f"top {perm.get('top_q', 0) * 100:.1f}% of predictions")):
            v = perm.get(k)
            if v:
                out.append(f"  permuted labels, {label}: {v['trades']} trades, PF {pf(v['profit_factor'])}, "
                           f"expectancy {pct(v['expectancy'], digits=3)}")  # fmt: skip
    for r in audit.get("reasons", []):
        out.append(f"  ! {r}")
    return "\n".join(out)
