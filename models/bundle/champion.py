"""Champion/challenger: may a freshly trained bundle replace the one that trades?

The two bundles are judged by the **same** simulation (`models.evaluation.bundle_eval.evaluate_bundle`, i.e.
the walk-forward's `evaluate_window`) on the **same** most recent out-of-sample window, one
that neither was trained on: the retrain trains the challenger on data that ends an embargo
before that window (see `holdout_window`), and the window starts no earlier than the
champion's own training data plus the embargo. Both are scored with the same costs (the
current config's), so "after costs" means the same thing for both.

The rules (`decide`), in order:
1. a degenerate challenger (its walk-forward validation made no trades, or its `er` booster
   stopped after one boosting round: a constant model) is rejected and can never be promoted
   by hand without `--force` (`degenerate_reason`);
2. a challenger that failed the leakage audit is rejected;
3. fewer than `min_trades` trades on the window: rejected (too few to judge);
4. no champion: promoted when its PF clears the engine's no-edge floor;
5. otherwise promoted only if its PF beats the champion's by `min_pf_gain` **and** its
   expectancy beats the champion's by `min_expectancy_gain` (both additive).

Pure: no daemon I/O, no clock; `bot.training.retrain` supplies the bundles, the source and the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts

if TYPE_CHECKING:
    from models.bundle.directory import Bundle
    from models.candles import CandleSource


@dataclass(frozen=True, slots=True)
class Margins:
    """How much better a challenger must be, and how many trades it needs, to be promoted."""

    min_pf_gain: float = 0.05
    min_expectancy_gain: float = 0.0
    min_trades: int = 30
    floor_pf: float = 1.05  # with no champion: the engine's no-edge floor (trading.min_validation_pf)


@dataclass(frozen=True, slots=True)
class Score:
    """A bundle's result on the judging window (after costs)."""

    version: str
    trades: int
    profit_factor: float | None
    expectancy: float | None

    @staticmethod
    def from_report(version: str, rep: Mapping[str, Any]) -> Score:
        o = rep.get("overall") or {}
        pf, ex = o.get("profit_factor"), o.get("expectancy")
        return Score(version, int(o.get("trades") or 0), None if pf is None else float(pf), None if ex is None else float(ex))

    def pf(self) -> float:
        """PF with the no-losing-trade case as +inf and the no-trade case as 0."""
        if self.profit_factor is not None:
            return self.profit_factor
        return math.inf if self.trades and (self.expectancy or 0) > 0 else 0.0

    def brief(self) -> str:
        pf = "-" if self.profit_factor is None else f"{self.profit_factor:.2f}"
        ex = "-" if self.expectancy is None else f"{self.expectancy * 100:+.3f}%"
        return f"PF {pf} exp {ex} n={self.trades}"


@dataclass(frozen=True, slots=True)
class Verdict:
    promote: bool
    reason: str
    challenger: Score | None
    champion: Score | None
    window: tuple[int, int] | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = None if self.window is None else {"start": self.window[0], "end": self.window[1],
                                                        "range": [fmt_ts(self.window[0]), fmt_ts(self.window[1])]}  # fmt: skip
        return d


def degenerate_reason(manifest: Mapping[str, Any]) -> str | None:
    """Why a bundle is degenerate (cannot be promoted), or None.

    A bundle whose walk-forward validation made no trades has not shown anything ("leakage
    audit: PASSED" on 0 trades means nothing), and one whose `er` booster stopped after one
    round predicts a constant: neither may trade.
    """
    version = manifest.get("version", "?")
    wf = (manifest.get("walk_forward") or {}).get("all") or {}
    o = wf.get("overall") or {}
    if not o:
        return f"degenerate: bundle {version} has no walk-forward validation (no out-of-sample result)"
    if int(o.get("trades") or 0) == 0:
        return f"degenerate: bundle {version} made no trades in its walk-forward validation"
    rounds = ((manifest.get("fit") or {}).get("lightgbm") or {}).get("er", {}).get("rounds")
    if rounds is not None and int(rounds) <= 1:
        return f"degenerate: the er booster of bundle {version} stopped after {int(rounds)} boosting round"
    return None


def audit_reason(manifest: Mapping[str, Any]) -> str | None:
    audit = manifest.get("audit") or {}
    if audit.get("enabled") and not audit.get("passed", True):
        why = "; ".join(audit.get("reasons") or []) or "leakage audit failed"
        return f"leakage audit failed: {why}"
    return None


def holdout_window(end_ms: int, eval_days: float, embargo_ms: int) -> tuple[int, int, int]:
    """(training end, window start, window end): the challenger is trained on data ending an
    embargo before the judging window [end - eval_days, end), so it never saw the window."""
    start = int(end_ms - eval_days * DAY_MS) // MINUTE_MS * MINUTE_MS
    return start - embargo_ms, start, end_ms


def champion_window(window: tuple[int, int], champion_trained_to: int | None, embargo_ms: int) -> tuple[int, int] | None:
    """The judging window clipped so the champion was not trained on it either (None: empty)."""
    start, end = window
    if champion_trained_to is not None:
        start = max(start, (int(champion_trained_to) + embargo_ms + MINUTE_MS - 1) // MINUTE_MS * MINUTE_MS)
    return (start, end) if end > start else None


def decide(challenger_manifest: Mapping[str, Any], challenger: Score | None, champion: Score | None,
           margins: Margins, window: tuple[int, int] | None) -> Verdict:  # fmt: skip
    """The rules of the module docstring."""

    def v(promote: bool, reason: str) -> Verdict:
        return Verdict(promote, reason, challenger, champion, window)

    why = degenerate_reason(challenger_manifest) or audit_reason(challenger_manifest)
    if why:
        return v(False, why)
    if challenger is None or window is None:
        return v(False, "no out-of-sample window that neither bundle was trained on")
    if challenger.trades < margins.min_trades:
        return v(False, f"too few trades on the window: {challenger.trades} < {margins.min_trades}")
    if champion is None:
        if challenger.pf() >= margins.floor_pf:
            return v(True, f"first model: PF {challenger.pf():.2f} >= the no-edge floor {margins.floor_pf:.2f}")
        return v(False, f"first model below the no-edge floor: PF {challenger.pf():.2f} < {margins.floor_pf:.2f}")
    c_pf, k_pf = challenger.pf(), champion.pf()
    c_ex, k_ex = challenger.expectancy or 0.0, champion.expectancy or 0.0
    if c_pf < k_pf + margins.min_pf_gain:
        return v(False, f"PF {c_pf:.2f} not better than the champion's {k_pf:.2f} by {margins.min_pf_gain:g}")
    if c_ex < k_ex + margins.min_expectancy_gain:
        return v(False, f"expectancy {c_ex * 100:+.3f}% not better than the champion's {k_ex * 100:+.3f}% "
                        f"by {margins.min_expectancy_gain * 100:g}%")  # fmt: skip
    return v(True, f"PF {c_pf:.2f} vs {k_pf:.2f}, expectancy {c_ex * 100:+.3f}% vs {k_ex * 100:+.3f}%")


def score_bundle(source: CandleSource, bundle: Bundle, window: tuple[int, int], *, costs: Any, symbols: Sequence[str] | None,
                 work_dir: Path) -> Score:  # fmt: skip
    """One bundle's result on `window` by the trainer's own simulation, with `costs`."""
    from models.evaluation.bundle_eval import evaluate_bundle

    rep = evaluate_bundle(source, bundle, start_ms=window[0], end_ms=window[1], symbols=symbols, work_dir=work_dir,
                          costs=costs)  # fmt: skip
    return Score.from_report(bundle.version, rep)


def judge(source: CandleSource, challenger: Bundle, champion: Bundle | None, window: tuple[int, int], margins: Margins, *,
          costs: Any, embargo_ms: int, work_dir: Path) -> Verdict:  # fmt: skip
    """Score both bundles on the same window (clipped to what the champion never saw) and decide."""
    if degenerate_reason(challenger.manifest) or audit_reason(challenger.manifest):
        return decide(challenger.manifest, None, None, margins, window)
    win = champion_window(window, None if champion is None else champion.data_range[1], embargo_ms)
    if win is None:
        return decide(challenger.manifest, None, None, margins, None)
    syms = list(challenger.manifest["symbols"])
    ch = score_bundle(source, challenger, win, costs=costs, symbols=syms, work_dir=Path(work_dir) / "challenger")
    cp = None
    if champion is not None:
        both = [s for s in syms if s in set(champion.manifest["symbols"])]
        cp = score_bundle(source, champion, win, costs=costs, symbols=both, work_dir=Path(work_dir) / "champion")
    return decide(challenger.manifest, ch, cp, margins, win)
