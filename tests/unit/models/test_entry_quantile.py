"""The level-free entry rules of the one entry rule: the trailing quantile and the top k.

"Before" is precise: the threshold of decision minute t is the q-quantile of the scores of
decision minutes t' with t - window <= t' < t -- bars that closed before bar t closed. So
changing every score at and after t changes no threshold up to and including t and no decision
before t (the decision at t changes only through minute t's own scores), and changing the
scores strictly after t changes nothing up to and including t.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.evaluation.trade_sim import signal_mask, simulate
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from models.trading.rules import (
    EntryLevers,
    EntryRule,
    TrailingScores,
    on_cadence,
    quantile_thresholds,
)
from tests.support.scores import T0, synthetic_scores

QRULE = EntryLevers(quantile=0.9, quantile_days=2.0, floor=True, cadence_minutes=60).to_rule(
    er_threshold=0.001, meta_threshold=0.55, round_trip=0.0024, has_meta=False)  # fmt: skip


def _fs():  # noqa: ANN202 - 8 symbols, 6 days of minutes
    return synthetic_scores(n_sym=8, minutes=6 * 1440, seed=3, skill=0.5, hold=30)


def _thresholds(fs, rule: EntryRule) -> np.ndarray:  # noqa: ANN001
    dec = np.flatnonzero(on_cadence(fs.ts, rule.cadence_minutes))
    out = np.full(len(fs.er), np.nan)
    out[dec] = quantile_thresholds(rule, fs.ts[dec], fs.er[dec], fs.scored[dec])
    return out


def test_the_threshold_is_the_quantile_of_earlier_decision_minutes_only() -> None:
    fs = _fs()
    thr = _thresholds(fs, QRULE)
    dec_ts = np.unique(fs.ts[on_cadence(fs.ts, 60)])
    checked = 0
    for t in dec_ts[::7]:
        window = on_cadence(fs.ts, 60) & (fs.ts >= t - 2 * DAY_MS) & (fs.ts < t) & fs.scored
        vals = np.sort(fs.er[window].astype(np.float32))
        got = thr[fs.ts == t]
        if t - dec_ts[0] < DAY_MS:  # less than a day of the model's own scores: no threshold yet
            assert np.isnan(got).all()
            continue
        want = vals[min(len(vals) - 1, math.ceil(0.9 * len(vals)) - 1)]
        assert np.all(got == want), t
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("cut_hours", [60, 77, 111])
def test_perturbing_scores_at_and_after_t_changes_nothing_before_t(cut_hours: int) -> None:
    fs = _fs()
    t = T0 + cut_hours * HOUR_MS + 59 * MINUTE_MS  # a decision minute (closes an hour)
    assert on_cadence(np.array([t]), 60)[0]
    base_thr, base_sig = _thresholds(fs, QRULE), signal_mask(fs, QRULE)
    rng = np.random.default_rng(cut_hours)
    at_or_after = fs.ts >= t
    moved = fs.replace(er=np.where(at_or_after, fs.er + rng.standard_normal(len(fs.er)).astype(np.float32) * 0.01,
                                   fs.er).astype(np.float32))  # fmt: skip
    thr, sig = _thresholds(moved, QRULE), signal_mask(moved, QRULE)
    upto = fs.ts <= t
    assert np.array_equal(thr[upto], base_thr[upto], equal_nan=True)  # no threshold up to t moved
    before = fs.ts < t
    assert np.array_equal(sig[before], base_sig[before])  # no decision before t moved
    assert base_sig[before].sum() >= 15  # ...and there were decisions to move
    # at t itself only minute t's own scores matter, against the unchanged threshold
    at = fs.ts == t
    assert np.array_equal(sig[at], (moved.er[at] > np.maximum(thr[at], 0.0)) & fs.ok[at])
    assert not np.array_equal(sig[fs.ts > t], base_sig[fs.ts > t])  # the perturbation is real
    # scores strictly after t: nothing up to and including t changes
    later = fs.replace(er=np.where(fs.ts > t, moved.er, fs.er).astype(np.float32))
    assert np.array_equal(signal_mask(later, QRULE)[upto], base_sig[upto])
    # and trades decided before t are the same trades
    a, b = simulate(fs, QRULE), simulate(moved, QRULE)
    early = lambda r: sorted(zip(r["trade_entry_ts"][r["trade_entry_ts"] <= t].tolist(),  # noqa: E731
                                 r["trade_returns"][r["trade_entry_ts"] <= t].tolist(), strict=True))
    assert early(a) == early(b) and len(early(a)) >= 10


def test_trailing_scores_roundtrip_and_order_checks() -> None:
    tr = TrailingScores(0.75, 3 * HOUR_MS, min_ms=HOUR_MS)
    rng = np.random.default_rng(0)
    for h in range(10):
        t = T0 + h * HOUR_MS
        tr.threshold(t)
        tr.push(t, rng.standard_normal(5).astype(np.float32))
    again = TrailingScores.from_dict(json.loads(json.dumps(tr.to_dict())))
    nxt = T0 + 10 * HOUR_MS
    assert again.threshold(nxt) == tr.threshold(nxt) and len(again) == len(tr) == 15  # 3 hours of 5 scores
    with pytest.raises(ValueError, match="after minute"):
        tr.push(T0, np.zeros(3))
    tr.push(nxt + HOUR_MS, np.array([np.nan, np.nan]))  # nothing scored: ignored, as the engine skips it
    assert tr.last_ts == T0 + 9 * HOUR_MS


def test_top_k_with_the_floor_takes_at_most_k_positive_scores_a_minute() -> None:
    fs = _fs()
    rule = EntryLevers(top_k=2, floor=True, cadence_minutes=60).to_rule(er_threshold=0.001, meta_threshold=0.5,
                                                                        round_trip=0.0024, has_meta=False)  # fmt: skip
    sig = signal_mask(fs, rule)
    assert sig.sum() > 50 and np.all(fs.er[sig] > 0) and np.all(on_cadence(fs.ts[sig], 60))
    per_minute = np.bincount(((fs.ts[sig] - T0) // MINUTE_MS).astype(np.int64))
    assert per_minute.max() == 2
    # each chosen row is among the two highest of its minute's scored rows
    for t in np.unique(fs.ts[sig])[:50]:
        m = (fs.ts == t) & fs.scored
        assert set(np.flatnonzero(sig & (fs.ts == t))) <= set(np.flatnonzero(m)[np.argsort(-fs.er[m], kind="stable")[:2]])
