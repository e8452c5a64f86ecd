"""Plain-text tables of walk-forward and evaluation reports (markdown, printable anywhere).

Percentages are of the slot's capital per trade (expectancy, avg win/loss) or of the whole
portfolio (return, drawdown).
"""

from __future__ import annotations

from typing import Any

from models.timeutil import fmt_short

HEAD = "| window | trades | win % | PF | expectancy | Sharpe (d) | max DD | exposure | primary-only PF / trades | seed metric PF / bars / mean |"
RULE = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def _pf(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x * 100:+.{digits}f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def row(label: str, rep: dict[str, Any]) -> str:
    o = rep["overall"]
    p = rep.get("primary_only") or {}
    s = rep.get("seed_metric") or {}
    win = "-" if o.get("win_rate") is None else f"{o['win_rate'] * 100:.1f}"
    return (
        f"| {label} | {o['trades']} | {win} | {_pf(o['profit_factor'])} | {_pct(o['expectancy'])} | "
        f"{_num(o.get('sharpe_daily'))} | {_pct(o.get('max_drawdown'), 2).lstrip('+')} | {o.get('exposure', 0) * 100:.1f}% | "
        f"{_pf(p.get('profit_factor'))} / {p.get('trades', 0)} | "
        f"{_pf(s.get('profit_factor'))} / {s.get('bars', 0)} / {_pct(s.get('expectancy'))} |"
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
        win = "-" if o.get("win_rate") is None else f"{o['win_rate'] * 100:.1f}"
        lines.append(
            f"| {sym} | {o['trades']} | {win} | {_pf(o['profit_factor'])} | {_pct(o['expectancy'])} | "
            f"{_num(o.get('sharpe_daily'))} | {_pct(o.get('max_drawdown'), 2).lstrip('+')} | {o.get('exposure', 0) * 100:.1f}% |"
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
                out.append(f"  permuted labels, {label}: {v['trades']} trades, PF {_pf(v['profit_factor'])}, "
                           f"expectancy {_pct(v['expectancy'])}")  # fmt: skip
    for r in audit.get("reasons", []):
        out.append(f"  ! {r}")
    return "\n".join(out)
