"""Champion/challenger rules (models.bundle.champion), pure: degenerate bundles, the audit, margins,
the first-model floor, and the judging windows that neither bundle was trained on."""

from __future__ import annotations

from models.bundle.champion import (
    Margins,
    Score,
    champion_window,
    decide,
    degenerate_reason,
    holdout_window,
)
from models.timeutil import DAY_MS, MINUTE_MS

WIN = (100 * DAY_MS, 103 * DAY_MS)


def manifest(trades: int = 200, rounds: int = 40, audit_passed: bool | None = True) -> dict:
    audit = {"enabled": audit_passed is not None, "passed": bool(audit_passed), "reasons": [] if audit_passed else ["leak"]}
    return {"version": "v-ch", "walk_forward": {"all": {"overall": {"trades": trades, "profit_factor": 1.2}}},
            "fit": {"lightgbm": {"er": {"rounds": rounds}}}, "audit": audit}  # fmt: skip


def s(v: str, n: int, pf: float | None, ex: float | None) -> Score:
    return Score(v, n, pf, ex)


def test_degenerate_bundles_are_named_and_never_promoted() -> None:
    assert degenerate_reason(manifest()) is None
    assert "no trades" in degenerate_reason(manifest(trades=0))
    assert "1 boosting round" in degenerate_reason(manifest(rounds=1))
    assert "no walk-forward" in degenerate_reason({"version": "x", "walk_forward": {"folds": []}})
    # even a far better score on the window cannot promote a degenerate bundle
    v = decide(manifest(trades=0), s("v-ch", 500, 3.0, 0.01), s("v-old", 500, 1.0, 0.0), Margins(), WIN)
    assert not v.promote and v.reason.startswith("degenerate")


def test_failed_leakage_audit_rejects() -> None:
    v = decide(manifest(audit_passed=False), s("v-ch", 500, 3.0, 0.01), None, Margins(floor_pf=0.0), WIN)
    assert not v.promote and "leakage audit" in v.reason


def test_margins_on_pf_and_expectancy_and_minimum_trades() -> None:
    m = Margins(min_pf_gain=0.05, min_expectancy_gain=0.0001, min_trades=30)
    champ = s("v-old", 300, 1.10, 0.0005)
    assert decide(manifest(), s("v-ch", 300, 1.20, 0.0007), champ, m, WIN).promote
    pf_short = decide(manifest(), s("v-ch", 300, 1.14, 0.0009), champ, m, WIN)
    assert not pf_short.promote and "PF 1.14 not better than the champion's 1.10" in pf_short.reason
    ex_short = decide(manifest(), s("v-ch", 300, 1.30, 0.00055), champ, m, WIN)
    assert not ex_short.promote and "expectancy" in ex_short.reason
    few = decide(manifest(), s("v-ch", 29, 5.0, 0.01), champ, m, WIN)
    assert not few.promote and "too few trades" in few.reason


def test_first_model_needs_the_no_edge_floor() -> None:
    m = Margins(min_trades=10, floor_pf=1.05)
    assert decide(manifest(), s("v-ch", 100, 1.06, 0.0001), None, m, WIN).promote
    below = decide(manifest(), s("v-ch", 100, 0.98, -0.0001), None, m, WIN)
    assert not below.promote and "no-edge floor" in below.reason


def test_no_window_rejects() -> None:
    v = decide(manifest(), None, None, Margins(), None)
    assert not v.promote and "window" in v.reason


def test_judging_window_is_out_of_sample_for_both() -> None:
    end = 200 * DAY_MS + 17 * MINUTE_MS
    embargo = 60 * MINUTE_MS
    train_end, w0, w1 = holdout_window(end, 2.0, embargo)
    assert w1 == end and w0 == end - 2 * DAY_MS and train_end == w0 - embargo  # challenger never saw it
    # a champion trained into the window: the window starts an embargo after its data
    assert champion_window((w0, w1), w0 + DAY_MS, embargo) == (w0 + DAY_MS + embargo, w1)
    assert champion_window((w0, w1), w0 - 5 * DAY_MS, embargo) == (w0, w1)
    assert champion_window((w0, w1), w1, embargo) is None
