"""Volatility regime: a 2-3 state Gaussian HMM on one scalar observation, in numpy.

Observation (decided in `batch.regime_observations`, used the same way online): the log of the
realised volatility of the first reference symbol's (BTC's) 1m log returns over the last
`features.regime_vol_window` minutes, sampled once per `features.regime_minutes` at calendar
boundaries. One market-wide regime (crypto volatility moves together) keeps one model in the
bundle instead of 30, and every symbol gets the same state probabilities at a given minute.
Minutes where the volatility is 0 (a flat-filled exchange outage) are missing observations: the
filter only propagates the transition there.

Fitted offline with EM (Baum-Welch) on training data only. The forward-backward messages of the
E-step are computed as prefix/suffix products of the per-step matrices A*diag(b_t) with a
log-depth scan, so a fit over weeks of 15-minute steps takes well under a second. Used online
and in batch with the forward filter only (no smoothing, no Viterbi): the probabilities at t
use observations up to t. States are sorted by mean so state 0 is the calmest on every refit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.features.errors import RegimeModelError

_LOG_2PI = math.log(2.0 * math.pi)
_MIN_TRANS = 1e-8
KIND = "gaussian_hmm_1d"
VERSION = 1


@dataclass(frozen=True, eq=False)
class RegimeModel:
    means: np.ndarray  # (K,) ascending: state 0 = calm
    variances: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K), rows sum to 1
    startprob: np.ndarray  # (K,) the stationary distribution: where the filter starts
    loglik: float = float("nan")
    n_obs: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.means)
        if k not in (2, 3):
            raise RegimeModelError(f"regime model must have 2 or 3 states, got {k}")
        if self.variances.shape != (k,) or self.transmat.shape != (k, k) or self.startprob.shape != (k,):
            raise RegimeModelError(
                f"regime model shapes disagree: means {self.means.shape}, variances {self.variances.shape}, "
                f"transmat {self.transmat.shape}, startprob {self.startprob.shape}"
            )
        arrays = (self.means, self.variances, self.transmat, self.startprob)
        if not all(np.isfinite(a).all() for a in arrays):
            raise RegimeModelError("regime model has non-finite parameters")
        if (self.variances <= 0).any():
            raise RegimeModelError(f"regime variances must be > 0, got {self.variances.tolist()}")
        if (self.transmat < 0).any() or not np.allclose(self.transmat.sum(axis=1), 1.0, atol=1e-6):
            raise RegimeModelError("regime transmat rows must be probabilities summing to 1")
        if (self.startprob < 0).any() or not math.isclose(float(self.startprob.sum()), 1.0, abs_tol=1e-6):
            raise RegimeModelError("regime startprob must be probabilities summing to 1")
        object.__setattr__(self, "_half_inv_var", 0.5 / self.variances)
        object.__setattr__(self, "_log_norm", -0.5 * (_LOG_2PI + np.log(self.variances)))

    @property
    def n_states(self) -> int:
        return len(self.means)

    # --- filtering ---------------------------------------------------------------------

    def initial(self) -> np.ndarray:
        """State probabilities before any observation (a fresh array)."""
        return self.startprob.copy()

    def step(self, prob: np.ndarray, x: float, out: np.ndarray | None = None) -> np.ndarray:
        """One forward-filter step: predict through the transition, then weigh by the
        likelihood of x (NaN/inf = missing: predict only). Writes into `out` if given."""
        pred = prob @ self.transmat
        if math.isfinite(x):
            lb = self._log_norm - (x - self.means) ** 2 * self._half_inv_var
            pred = pred * np.exp(lb - lb.max())
        res = pred / pred.sum()
        if out is None:
            return res
        out[...] = res
        return out

    def filter(self, x: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """Filtered probabilities (T, K) for an observation sequence; row t uses x[:t+1] only.
        Starts from `start` (default: the stationary distribution) and uses `step`, so it
        gives exactly what the online engine gives one step at a time."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((len(x), self.n_states))
        p = self.initial() if start is None else np.asarray(start, dtype=np.float64)
        for t, xt in enumerate(x.tolist()):
            p = self.step(p, xt, out[t])
        return out

    # --- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters (stored in model bundles)."""
        return {
            "kind": KIND,
            "version": VERSION,
            "n_states": self.n_states,
            "means": self.means.tolist(),
            "variances": self.variances.tolist(),
            "transmat": self.transmat.tolist(),
            "startprob": self.startprob.tolist(),
            "loglik": None if math.isnan(self.loglik) else float(self.loglik),
            "n_obs": int(self.n_obs),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegimeModel:
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise RegimeModelError(f"not a regime model dict (kind must be {KIND!r})")
        if d.get("version") != VERSION:
            raise RegimeModelError(f"regime model version {d.get('version')!r} is not supported (expected {VERSION})")
        try:
            m = cls(
                means=np.asarray(d["means"], dtype=np.float64),
                variances=np.asarray(d["variances"], dtype=np.float64),
                transmat=np.asarray(d["transmat"], dtype=np.float64),
                startprob=np.asarray(d["startprob"], dtype=np.float64),
                loglik=float("nan") if d.get("loglik") is None else float(d["loglik"]),
                n_obs=int(d.get("n_obs", 0)),
                meta=dict(d.get("meta") or {}),
            )
        except KeyError as e:
            raise RegimeModelError(f"regime model dict lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise RegimeModelError(f"regime model dict has malformed values: {e}") from None
        if d.get("n_states") not in (None, m.n_states):
            raise RegimeModelError(f"regime model n_states={d['n_states']} but it has {m.n_states} means")
        return m

    # --- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        n_states: int = 3,
        seed: int = 0,
        *,
        max_iter: int = 200,
        tol: float = 1e-6,
        n_init: int = 3,
        meta: dict[str, Any] | None = None,
    ) -> RegimeModel:
        """EM fit on one observation sequence (NaN = missing). Fit on training data only.

        `n_init` starts: one from the data's quantiles, the others from means drawn with
        `np.random.default_rng(seed)`; the highest log-likelihood wins. `tol` is the relative
        log-likelihood improvement below which EM stops.
        """
        if n_states not in (2, 3):
            raise RegimeModelError(f"n_states must be 2 or 3, got {n_states}")
        x = np.asarray(x, dtype=np.float64).ravel()
        obs = np.isfinite(x)
        n_obs = int(obs.sum())
        if n_obs < 20 * n_states:
            raise RegimeModelError(
                f"need at least {20 * n_states} observations to fit {n_states} regimes, got {n_obs}; "
                "give the trainer a longer history"
            )
        xo = x[obs]
        spread = float(np.var(xo))
        if spread <= 0:
            raise RegimeModelError("regime observations are constant; cannot separate regimes")
        x = np.where(obs, x, np.nan)
        rng = np.random.default_rng(seed)
        best: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        for i in range(max(1, n_init)):
            if i == 0:
                qs = np.quantile(xo, (np.arange(n_states) + 0.5) / n_states)
            else:
                qs = np.sort(rng.choice(xo, size=n_states, replace=False))
            res = _em(x, obs, qs, spread, n_states, max_iter, tol)
            if best is None or res[0] > best[0]:
                best = res
        assert best is not None
        ll, means, var, trans, _ = best
        order = np.argsort(means)
        means, var = means[order], var[order]
        trans = trans[np.ix_(order, order)]
        return cls(means, var, trans, stationary(trans), float(ll), n_obs, dict(meta or {}))


def stationary(trans: np.ndarray) -> np.ndarray:
    """Stationary distribution pi = pi A of a transition matrix."""
    k = trans.shape[0]
    a = np.vstack([trans.T - np.eye(k), np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _emissions(x: np.ndarray, obs: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Likelihoods (T, K) scaled per row so the max is 1; 1 for missing observations."""
    xx = np.where(obs, x, 0.0)[:, None]
    lb = -0.5 * (_LOG_2PI + np.log(var)) - 0.5 * (xx - means) ** 2 / var
    lb -= lb.max(axis=1, keepdims=True)
    b = np.exp(lb)
    b[~obs] = 1.0
    return b


def _scan(mats: np.ndarray, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive prefix products M_0 @ ... @ M_t (or suffix M_t @ ... @ M_n-1 if reverse),
    each normalised to sum 1, with the log of the scale removed. Hillis-Steele, log2(n) steps."""
    p = mats[::-1].copy() if reverse else mats.copy()
    logs = np.zeros(len(p))
    d = 1
    while d < len(p):
        nxt = p.copy()
        if reverse:
            nxt[d:] = p[d:] @ p[:-d]
        else:
            nxt[d:] = p[:-d] @ p[d:]
        s = nxt[d:].sum(axis=(1, 2))
        nxt[d:] /= s[:, None, None]
        new_logs = logs.copy()
        new_logs[d:] = logs[:-d] + logs[d:] + np.log(s)
        p, logs = nxt, new_logs
        d *= 2
    if reverse:
        return p[::-1], logs[::-1]
    return p, logs


def _em(x, obs, init_means, spread, k, max_iter, tol):  # noqa: ANN001,ANN202 - internal
    means = np.asarray(init_means, dtype=np.float64).copy()
    var = np.full(k, spread / k)
    trans = np.full((k, k), 0.05 / (k - 1))
    np.fill_diagonal(trans, 0.95)
    pi = np.full(k, 1.0 / k)
    var_floor = max(spread * 1e-3, 1e-8)
    xx = np.where(obs, x, 0.0)
    prev_ll = -np.inf
    ll = -np.inf
    t_len = len(x)
    for _ in range(max_iter):
        b = _emissions(x, obs, means, var)
        lb_max = np.where(
            obs,
            (-0.5 * (_LOG_2PI + np.log(var)) - 0.5 * (xx[:, None] - means) ** 2 / var).max(axis=1),
            0.0,
        )
        # M_t = A diag(b_t) for t >= 1; alpha_t ~ (pi*b_0) M_1..M_t ; beta_t ~ M_t+1..M_T-1 1
        v0 = pi * b[0]
        if t_len > 1:
            mats = trans[None, :, :] * b[1:, None, :]
            pre, pre_log = _scan(mats, reverse=False)
            suf, _ = _scan(mats, reverse=True)
            alpha = np.empty((t_len, k))
            alpha[0] = v0
            alpha[1:] = v0 @ pre
            beta = np.ones((t_len, k))
            beta[:-1] = suf.sum(axis=2)
            last = alpha[-1].sum()
            ll = float(np.log(last) + pre_log[-1] + lb_max.sum())
        else:
            alpha = v0[None, :]
            beta = np.ones((1, k))
            ll = float(np.log(v0.sum()) + lb_max.sum())
        alpha /= alpha.sum(axis=1, keepdims=True)
        beta /= beta.sum(axis=1, keepdims=True)
        gamma = alpha * beta
        gamma /= gamma.sum(axis=1, keepdims=True)
        if t_len > 1:
            xi = alpha[:-1, :, None] * trans[None, :, :] * (b[1:] * beta[1:])[:, None, :]
            xi /= xi.sum(axis=(1, 2), keepdims=True)
            trans = xi.sum(axis=0)
            trans = np.maximum(trans / trans.sum(axis=1, keepdims=True), _MIN_TRANS)
            trans /= trans.sum(axis=1, keepdims=True)
        pi = gamma[0]
        w = gamma[obs]
        wsum = w.sum(axis=0)
        wsum = np.where(wsum > 0, wsum, 1e-300)
        means = (w * x[obs][:, None]).sum(axis=0) / wsum
        var = np.maximum((w * (x[obs][:, None] - means) ** 2).sum(axis=0) / wsum, var_floor)
        if ll - prev_ll < tol * abs(ll):
            break
        prev_ll = ll
    return ll, means, var, trans, pi
