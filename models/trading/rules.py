"""The one entry rule and the one exit rule: the trainer's simulation and the engine both use them.

Entry (`EntryRule`): a symbol is a candidate after the close of bar t when its scores pass
- `er > er_threshold` (ensemble expected net return),
- `q05 > q05_threshold` when one is set (the 5 % quantile of the net return; off by default),
- `p > p_threshold` when the bundle has a meta model (meta-label probability; NaN = no meta
  model = gate open).

Optional levers (defaults = off, today's rule), found by the research runner (`models.research`):
- `cadence_minutes`: decide only after bars that close a period of this many minutes (15 = at
  :14, :29, :44, :59), not on every minute;
- `regime_states`: only while the regime's most likely state is one of these (0 = calmest);
- `top_k`: only the k highest er of the cross-section at the decision minute (`top_k_mask`),
  a threshold that does not depend on the score's level;
- `quantile`: er must exceed the q-quantile of the model's own scores at the decision minutes of
  a trailing window (`TrailingScores`): also level-free, it follows the model wherever its
  scores sit. "Trailing" is strict: the threshold of decision minute t is made of the scores of
  decision minutes t' with t - window <= t' < t (bars that closed before bar t closed), never
  of minute t's own cross-section or anything later; it is undefined (no entry) until the scores
  span `QUANTILE_MIN_DAYS`.
A threshold as a multiple of the round-trip cost is an `er_threshold` (`with_cost_multiple`);
the "floor" of the level-free rules (`EntryLevers.floor`) is er > 0: er is a net return, so
this says the predicted move pays the round trip.
`EntryLevers` names the levers (a research grid, a bundle's recorded rule, the engine's
`trading:` keys all use it) and `EntryLevers.to_rule` makes the rule from them.

Scores are compared as float32 (what the simulation stores), so the simulation and the engine
(whose predictor returns float64) decide the same rows even at ties.

The probability gate is ONE gate: `p_threshold = max(bundle meta_threshold, risk.min_probability)`
(`EntryRule.for_trading`). The engine then hands the risk manager `min_probability = 0` so the
same probability is not gated twice with two numbers; the risk manager still uses p for Kelly
sizing. The trainer's simulation (`EntryRule.from_predictor`) uses the bundle's threshold alone,
which is the same rule with `risk.min_probability` at or below it (the default: both 0.55).

Exit (`barrier_prices`, `check_exits`): exactly the triple barrier of `models.labels.triple_barrier`:
- TP = entry x (1 + tp_frac), SL = entry x (1 - sl_frac), the fractions from the decision bar's
  ATR% and ATR percentile via `labels.barrier_fractions` (which uses `barrier_multipliers`);
  `entry` is the reference price (the open of the bar after the decision, before slippage);
- on each later bar of the symbol, in this order: the open gapping through a barrier (exit at
  the open), SL if the low reaches it (at SL), TP if the high reaches it (at TP) -- so SL first
  when one bar touches both; without a hit, time out at the close of the bar opening at
  decision_ts + H minutes;
- outages: a minute the symbol has no candle is not checked (nobody traded it); when the first
  bar after an outage opens after the deadline, the trade exits at that bar's open
  (`EXIT_GAP_TIMEOUT`), as the label does.
`tests/unit/models/test_rules.py` checks that walking every label row of real symbols through
`check_exits` bar by bar gives the label's exit row, kind and net return.
"""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.config import LabelConfig
from models.labels.triple_barrier import (
    EXIT_GAP_TIMEOUT,
    EXIT_NONE,
    EXIT_SL,
    EXIT_TIMEOUT,
    EXIT_TP,
    barrier_fractions,
)

__all__ = [
    "EXIT_GAP_TIMEOUT", "EXIT_NONE", "EXIT_SL", "EXIT_TIMEOUT", "EXIT_TP", "EXIT_NAMES",
    "EntryLevers", "EntryRule", "TrailingScores", "barrier_prices", "check_exits", "entry_fractions", "on_cadence",
    "top_k_mask",
]  # fmt: skip

#: exit kind -> the reason string of `bot.engine.records.EXIT_REASONS`
EXIT_NAMES = {EXIT_TP: "tp", EXIT_SL: "sl", EXIT_TIMEOUT: "timeout", EXIT_GAP_TIMEOUT: "gap_timeout"}


DAY_MS = 86_400_000
QUANTILE_MIN_DAYS = 1.0  # the quantile rule needs a day of its own scores before it may enter


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class EntryRule:
    """Thresholds of the entry rule (see the module docstring). `p_threshold=None`: no meta gate."""

    er_threshold: float
    p_threshold: float | None = None
    q05_threshold: float | None = None
    cadence_minutes: int = 1
    top_k: int | None = None
    regime_states: tuple[int, ...] | None = None
    quantile: float | None = None
    quantile_days: float = 7.0

    def with_levers(self, *, cadence_minutes: int = 1, top_k: int | None = None,
                    regime_states: tuple[int, ...] | None = None, quantile: float | None = None,
                    quantile_days: float = 7.0) -> EntryRule:  # fmt: skip
        """The same thresholds with the optional levers set."""
        return EntryRule(self.er_threshold, self.p_threshold, self.q05_threshold, int(cadence_minutes), top_k,
                         None if regime_states is None else tuple(int(x) for x in regime_states),
                         None if quantile is None else float(quantile), float(quantile_days))  # fmt: skip

    def with_cost_multiple(self, k: float, round_trip: float) -> EntryRule:
        """er must exceed k x the round-trip cost (instead of the fixed er_threshold)."""
        return self.with_er_threshold(float(k) * float(round_trip))

    def with_er_threshold(self, thr: float) -> EntryRule:
        return EntryRule(float(thr), self.p_threshold, self.q05_threshold, self.cadence_minutes, self.top_k,
                         self.regime_states, self.quantile, self.quantile_days)  # fmt: skip

    @classmethod
    def from_predictor(cls, predictor: Any, *, use_meta: bool = True, q05_threshold: float | None = None) -> EntryRule:
        """The trainer's rule for a `models.bundle.predictor.Predictor`: its er and meta thresholds."""
        has_meta = use_meta and getattr(predictor, "meta", None) is not None
        return cls(float(predictor.er_threshold), float(predictor.meta_threshold) if has_meta else None, q05_threshold)

    @classmethod
    def for_trading(cls, predictor: Any, *, min_probability: float, q05_threshold: float | None = None) -> EntryRule:
        """The engine's rule: the one probability gate is max(meta_threshold, min_probability)."""
        rule = cls.from_predictor(predictor, q05_threshold=q05_threshold)
        if rule.p_threshold is None:
            return rule
        return cls(rule.er_threshold, max(rule.p_threshold, float(min_probability)), q05_threshold)

    @property
    def quantile_ms(self) -> int:
        return int(round(self.quantile_days * DAY_MS))

    def mask(
        self,
        er: np.ndarray,
        p: np.ndarray | None = None,
        q05: np.ndarray | None = None,
        *,
        ts: np.ndarray | None = None,
        regime: np.ndarray | None = None,
        er_floor: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boolean mask of rows passing the rule; NaN er (or q05 / p where gated) never passes.
        `ts` (decision bar open, ms) is needed with a cadence, `regime` (argmax state) with
        regime_states, `er_floor` (each row's trailing-quantile threshold, NaN = none yet) with a
        quantile; `top_k` is applied by `top_k_mask` over the cross-section."""
        e = _f32(er)
        with np.errstate(invalid="ignore"):
            sig = e > self.er_threshold
            if self.q05_threshold is not None:
                if q05 is None:
                    raise ValueError("the entry rule has a q05 threshold but no q05 scores were given")
                sig &= np.asarray(q05, dtype=np.float64) > self.q05_threshold
            if self.p_threshold is not None:
                if p is None:
                    raise ValueError("the entry rule has a probability gate but no p scores were given")
                sig &= np.asarray(p, dtype=np.float64) > self.p_threshold
            if self.quantile is not None:
                if er_floor is None:
                    raise ValueError("the entry rule has a trailing quantile but no thresholds were given")
                sig &= e > _f32(er_floor)  # NaN threshold (too little history): no entry
        if self.cadence_minutes > 1:
            if ts is None:
                raise ValueError("the entry rule has a decision cadence but no bar times were given")
            sig &= on_cadence(np.asarray(ts, dtype=np.int64), self.cadence_minutes)
        if self.regime_states is not None:
            if regime is None:
                raise ValueError("the entry rule is conditioned on the regime but no regime states were given")
            sig &= np.isin(np.asarray(regime), np.asarray(self.regime_states))
        return sig

    def describe(self) -> str:
        parts = [f"er > {self.er_threshold:g}"] if math.isfinite(self.er_threshold) else []
        if self.q05_threshold is not None:
            parts.append(f"q05 > {self.q05_threshold:g}")
        if self.p_threshold is not None:
            parts.append(f"p > {self.p_threshold:g}")
        if self.cadence_minutes > 1:
            parts.append(f"on {self.cadence_minutes}m closes")
        if self.regime_states is not None:
            parts.append(f"regime in {list(self.regime_states)}")
        if self.top_k is not None:
            parts.append(f"top {self.top_k} of the cross-section")
        if self.quantile is not None:
            parts.append(f"er above the {self.quantile:g} quantile of its last {self.quantile_days:g} days of scores")
        return " and ".join(parts) or "any score"


class EntryLevers(BaseModel):
    """The levers of the entry rule by name: a research grid's `rule:` values, the rule a bundle
    records (`manifest["entry_rule"]`, written by `bot research`), the engine's `trading.entry_*`
    keys. Defaults = today's rule (every minute, er > the bundle's er threshold, its meta gate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cadence_minutes: int = Field(1, ge=1, le=1440, description="decide only on bars closing a period of this many minutes")
    er_threshold: float | None = Field(None, description="er gate (net return); None = the bundle's / train.er_threshold")
    cost_multiple: float | None = Field(None, description="if set, er must also exceed this multiple of the round-trip cost")
    floor: bool = Field(False, description="er > 0 instead of the fixed er threshold: the predicted move pays the round trip")
    top_k: int | None = Field(None, ge=1, description="only the k highest er of the cross-section at a decision minute may enter")
    quantile: float | None = Field(None, gt=0, lt=1, description="er must exceed this quantile of the model's trailing scores")
    quantile_days: float = Field(7.0, ge=QUANTILE_MIN_DAYS, le=90, description="length of the trailing score window (days)")
    use_meta: bool = True
    meta_threshold: float | None = Field(None, ge=0, le=1, description="None = the bundle's / train.meta_threshold")
    regime_states: list[int] | None = Field(None, description="allowed argmax regime states (0 = calmest); None = any")

    def label(self) -> str:
        d = self.model_dump(exclude_defaults=True)
        return " ".join(f"{k}={v}" for k, v in d.items()) or "default rule"

    def to_rule(self, *, er_threshold: float, meta_threshold: float, round_trip: float, has_meta: bool) -> EntryRule:
        """The one entry rule these levers stand for. The er threshold is the largest of: the
        explicit `er_threshold`, k x round trip (`cost_multiple`), 0 (`floor`); with none of them,
        the default `er_threshold` (the bundle's)."""
        parts = [x for x in (self.er_threshold, None if self.cost_multiple is None else self.cost_multiple * round_trip,
                             0.0 if self.floor else None) if x is not None]  # fmt: skip
        thr = max(parts) if parts else er_threshold
        p_thr = (meta_threshold if self.meta_threshold is None else self.meta_threshold) if (self.use_meta and has_meta) else None
        return EntryRule(float(thr), p_thr).with_levers(
            cadence_minutes=self.cadence_minutes, top_k=self.top_k,
            regime_states=None if self.regime_states is None else tuple(self.regime_states),
            quantile=self.quantile, quantile_days=self.quantile_days,
        )  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> EntryLevers | None:
        """The rule a bundle was chosen with (None: the bundle records none)."""
        d = manifest.get("entry_rule")
        return None if not d else cls.model_validate(d)


class TrailingScores:
    """The model's own scores at past decision minutes, kept sorted, for the quantile rule.

    `threshold(ts)` is the `q`-quantile (the value of rank ceil(q n) of n, no interpolation) of
    the scores pushed for decision minutes t' with ts - window <= t' < ts; NaN until the scores
    pushed since the last `reset` span `min_ms` (a day). `push(ts, er)` adds decision minute
    ts's cross-section (its finite scores; an empty one is ignored), after its decisions. The engine keeps one (its state survives a
    restart through `to_dict` / `from_dict`); the simulation runs one over the decision minutes
    in time order (`quantile_thresholds`): the same object, so the same thresholds.
    """

    def __init__(self, q: float, window_ms: int, min_ms: int = int(QUANTILE_MIN_DAYS * DAY_MS)):
        self.q, self.window_ms, self.min_ms = float(q), int(window_ms), min(int(min_ms), int(window_ms))
        self.reset()

    def reset(self) -> None:
        self._minutes: deque[tuple[int, np.ndarray]] = deque()
        self._sorted = np.empty(0, np.float32)
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def __len__(self) -> int:
        return len(self._sorted)

    def _expire(self, ts: int) -> None:
        lo = ts - self.window_ms
        while self._minutes and self._minutes[0][0] < lo:
            _, vals = self._minutes.popleft()
            if len(vals):
                pos = np.searchsorted(self._sorted, vals, side="left")  # vals sorted: equal ones sit together
                pos += np.arange(len(vals)) - np.searchsorted(vals, vals, side="left")
                self._sorted = np.delete(self._sorted, pos)

    def threshold(self, ts: int) -> float:
        """The quantile of the trailing scores strictly before decision minute `ts`."""
        ts = int(ts)
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"trailing scores: threshold for minute {ts} asked after minute {self.last_ts} was pushed")
        self._expire(ts)
        n = len(self._sorted)
        if n == 0 or self.first_ts is None or ts - self.first_ts < self.min_ms:
            return float("nan")
        k = min(n - 1, max(0, math.ceil(self.q * n) - 1))
        return float(self._sorted[k])

    def push(self, ts: int, er: np.ndarray) -> None:
        ts = int(ts)
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"trailing scores: minute {ts} pushed after minute {self.last_ts}")
        e = _f32(er)
        vals = np.sort(e[np.isfinite(e)])
        if not len(vals):  # a minute nobody was scored in counts for nothing (the engine skips it too)
            return
        self._minutes.append((ts, vals))
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, vals), vals)
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: each minute's scores as base64 float32 (a week of hourly decisions of 30
        symbols is about 27 KB)."""
        return {"q": self.q, "window_ms": self.window_ms, "min_ms": self.min_ms, "first_ts": self.first_ts,
                "last_ts": self.last_ts,
                "minutes": [[t, base64.b64encode(v.astype("<f4").tobytes()).decode()] for t, v in self._minutes]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrailingScores:
        out = cls(float(d["q"]), int(d["window_ms"]), int(d["min_ms"]))
        for t, b in d.get("minutes", []):
            vals = np.frombuffer(base64.b64decode(b), dtype="<f4").astype(np.float32)
            out._minutes.append((int(t), vals))
        out._sorted = np.sort(np.concatenate([v for _, v in out._minutes])) if out._minutes else np.empty(0, np.float32)
        out.first_ts = None if d.get("first_ts") is None else int(d["first_ts"])
        out.last_ts = None if d.get("last_ts") is None else int(d["last_ts"])
        return out

    def same_rule(self, rule: EntryRule) -> bool:
        return rule.quantile is not None and float(rule.quantile) == self.q and rule.quantile_ms == self.window_ms


def quantile_thresholds(rule: EntryRule, minute_ts: np.ndarray, er: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Each row's trailing-quantile threshold for the simulation: rows are symbol-minutes of
    decision minutes (any order); minutes are walked in time order through one `TrailingScores`,
    each asked for its threshold before its own scores (`scored` rows) are pushed."""
    out = np.full(len(er), np.nan)
    if rule.quantile is None or not len(er):
        return out
    ts = np.asarray(minute_ts, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    starts = np.flatnonzero(np.r_[True, ts_sorted[1:] != ts_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    trail = TrailingScores(rule.quantile, rule.quantile_ms)
    e = _f32(er)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[a:b]
        t = int(ts_sorted[a])
        out[rows] = trail.threshold(t)
        trail.push(t, e[rows][scored[rows]])
    return out


def on_cadence(ts: np.ndarray, minutes: int) -> np.ndarray:
    """Decision bars (1m, open time `ts` in ms) that close a period of `minutes` (UTC-aligned)."""
    return ((np.asarray(ts, dtype=np.int64) // 60_000) + 1) % int(minutes) == 0


def top_k_mask(minute: np.ndarray, er: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Rows whose er is among the k highest of the eligible rows sharing their `minute` (ties:
    the earlier row, i.e. the earlier symbol). The cross-section is every symbol scored at that
    minute, whether or not it passes the rule's other gates."""
    out = np.zeros(len(er), dtype=bool)
    e = _f32(er)
    cand = np.flatnonzero(eligible & np.isfinite(e))
    if len(cand) == 0:
        return out
    m = np.asarray(minute)[cand]
    order = np.lexsort((-e[cand], m))
    m_sorted = m[order]
    starts = np.flatnonzero(np.r_[True, m_sorted[1:] != m_sorted[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.arange(len(order)) - run_start
    out[cand[order[rank < k]]] = True
    return out


def entry_fractions(atr_frac: np.ndarray, atr_pct: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp_frac, sl_frac, ok): barrier distances known at the decision bar's close, and whether
    they allow a trade (finite, TP > 0, 0 < SL < 1: the label's own validity conditions)."""
    tp, sl = barrier_fractions(np.asarray(atr_frac, np.float64), np.asarray(atr_pct, np.float64), cfg)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(tp) & np.isfinite(sl) & (tp > 0) & (sl > 0) & (sl < 1)
    return tp, sl, ok


def barrier_prices(entry: float | np.ndarray, tp_frac: float | np.ndarray, sl_frac: float | np.ndarray) -> tuple[Any, Any]:
    """(TP, SL) prices from the entry reference price (the label's arithmetic, float64)."""
    e = np.asarray(entry, dtype=np.float64)
    tp = e * (1.0 + np.asarray(tp_frac, dtype=np.float64))
    sl = e * (1.0 - np.asarray(sl_frac, dtype=np.float64))
    if tp.ndim == 0:
        return float(tp), float(sl)
    return tp, sl


def check_exits(
    ts: int,
    bars: np.ndarray,
    tp: np.ndarray,
    sl: np.ndarray,
    deadline: np.ndarray,
    out_kind: np.ndarray | None = None,
    out_price: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check N open positions against their symbol's bar opening at `ts`.

    `bars` (N, 4+) float64 open/high/low/close of each position's symbol at `ts` (a row with a
    NaN close = no candle: not checked). `deadline` (N,) int64 = decision_ts + H minutes (the
    open time of the hold's last bar). Returns (kind int8 EXIT_*, price float64 NaN where none).
    """
    n = len(tp)
    kind = np.zeros(n, np.int8) if out_kind is None else out_kind
    price = np.full(n, np.nan) if out_price is None else out_price
    kind[:] = EXIT_NONE
    price[:] = np.nan
    if n == 0:
        return kind, price
    o, h, lo, c = bars[:, 0], bars[:, 1], bars[:, 2], bars[:, 3]
    with np.errstate(invalid="ignore"):
        present = np.isfinite(c) & np.isfinite(o)
        late = present & (ts > deadline)
        inwin = present & ~late
        gap_sl = inwin & (o <= sl)
        gap_tp = inwin & ~gap_sl & (o >= tp)
        rest = inwin & ~gap_sl & ~gap_tp
        bar_sl = rest & (lo <= sl)
        bar_tp = rest & ~bar_sl & (h >= tp)
        tout = rest & ~bar_sl & ~bar_tp & (ts == deadline)
    # later assignments never overlap earlier ones (the masks are disjoint)
    kind[late] = EXIT_GAP_TIMEOUT
    price[late] = o[late]
    kind[gap_sl] = EXIT_SL
    price[gap_sl] = o[gap_sl]
    kind[gap_tp] = EXIT_TP
    price[gap_tp] = o[gap_tp]
    kind[bar_sl] = EXIT_SL
    price[bar_sl] = sl[bar_sl]
    kind[bar_tp] = EXIT_TP
    price[bar_tp] = tp[bar_tp]
    kind[tout] = EXIT_TIMEOUT
    price[tout] = c[tout]
    return kind, price


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
