"""Hot-swap: the running daemon follows the store's champion between two minutes.

Whoever promotes (the scheduled retrain, `bot train --promote`, `bot models promote|rollback`
from another shell) writes the champion pointer in one transaction. Between two minutes the
live loop asks the store for the champion's version (one indexed lookup); when it differs from
the bundle in use, the new bundle is loaded and verified in a thread (file hashes, boosters,
feature columns: `models.bundle.directory.load_bundle`) and swapped into the engine
(`Engine.swap_bundle`) in the engine's worker thread, i.e. strictly between two steps: the
next minute is scored by the new version, no minute is skipped, open positions keep the
barriers they were opened with. When the feature config is unchanged the online feature
buffers are reused: every retrain refits the regime model (an HMM on BTC's volatility), but
no buffer depends on it; only the regime filter is re-run under the new model over the
observations the engine kept (`Engine.swap_bundle`), microseconds instead of a warm-up. When
the feature config changed, a new feature engine is warmed from the store up to the last
processed minute in the worker thread (off the event loop) first.

A bundle that cannot be loaded, or that needs other symbols than the running engine's, is
not used: said once in the log, the current bundle keeps trading.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from models.timeutil import MINUTE_MS, fmt_short

if TYPE_CHECKING:
    from bot.live.trader import LiveTrader
    from models.bundle.directory import Bundle

log = structlog.get_logger("bot.live.hotswap")


class ChampionFollower:
    """Per daemon: `check()` between minutes (see the module docstring)."""

    RECENT = 240  # minutes of the loop's own bars kept to bring rebuilt features up to the engine's minute

    def __init__(self, trader: LiveTrader):
        self.trader = trader
        self.refused: set[str] = set()  # versions already found unusable: not retried each minute
        self.recent: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=self.RECENT)

    async def check(self, ts: int, bars: np.ndarray) -> bool:
        """After the step of minute `ts` (its bars): swap to the store's champion if it
        changed; True if a swap happened."""
        from bot.store.model_versions import champion_version, get_model_version

        self.recent.append((int(ts), np.array(bars, dtype=np.float64, copy=True)))
        tr = self.trader
        if tr.engine is None:
            return False
        v = await champion_version(tr.store.pool)
        if v is None or v == tr.model_version or v in self.refused:
            return False
        mv = await get_model_version(tr.store.pool, v)
        if mv is None:
            return False
        t0 = time.monotonic()
        try:
            bundle = await self._load(mv.path)
            new_regime = (bundle.manifest.get("regime") or None) != (tr.engine.bundle.manifest.get("regime") or None)
            features = await self._features_for(bundle)
            await tr._in_worker(self._swap, bundle, features)
        except _NotCaughtUp as e:  # the store lags the loop: try again after the next minute
            log.info("model_swap_deferred", version=v, reason=str(e))
            return False
        except Exception as e:  # noqa: BLE001 - a bad bundle never stops the running one
            self.refused.add(v)
            log.error("model_swap_refused", version=v, error=f"{type(e).__name__}: {str(e)[:300]}",
                      text=f"MODEL {v} is the champion but cannot be used ({type(e).__name__}: {str(e)[:200]}); "
                           f"still trading with {tr.model_version}")  # fmt: skip
            return False
        old, tr.model_version = tr.model_version, v
        eng = tr.engine
        watch = eng.watch_reason
        kept = "features rebuilt" if features is not None else "features kept" + (", regime refiltered" if new_regime else "")
        log.info("model_swapped", version=v, previous=old, after_minute=fmt_short(tr.last_minute), after_minute_ts=tr.last_minute,
                 features_rebuilt=features is not None, regime_refiltered=features is None and new_regime,
                 seconds=round(time.monotonic() - t0, 2),
                 text=f"MODEL {old} -> {v} from the minute after {fmt_short(tr.last_minute)} ({kept}, no restart)")  # fmt: skip
        from bot.store import daemon_lock

        await daemon_lock.write_heartbeat(tr.store.pool, last_minute_ts=tr.last_minute, model_version=v,
                                          watch_only=watch is not None, watch_reason=watch)  # fmt: skip
        if tr.metrics is not None:
            tr.metrics.model_in_use(v, watch_only=watch is not None)
        if watch:
            log.warning("watch_only", reason=watch, text=f"WATCH ONLY: {watch}")
        return True

    async def _load(self, path: str) -> Any:
        from models.bundle.directory import load_bundle

        return await asyncio.to_thread(load_bundle, path)

    async def _features_for(self, bundle: Bundle) -> Any:
        """None when the engine's feature buffers can be kept; else a new warmed-up engine."""
        tr = self.trader
        eng = tr.engine
        if bundle.feature_config() == eng.bundle.feature_config():
            return None  # buffers kept; a refitted regime model only re-runs its filter (Engine.swap_bundle)
        from models.features.online import OnlineFeatureEngine

        fcfg = bundle.feature_config()
        new = OnlineFeatureEngine(eng.symbols, fcfg, regime=bundle.regime_model())
        if list(new.symbols) != list(eng.symbols):
            raise ValueError("the new bundle's features need other symbols than the running engine's; restart the daemon")
        last = tr.last_minute
        lo = last - (new.warmup + 1) * MINUTE_MS
        history = {s: await tr.store.read_candles(s, lo, last + MINUTE_MS, dtype=np.float64) for s in eng.symbols}
        recent = list(self.recent)

        def warm() -> None:  # off the loop, in the engine's worker (ordered with the steps)
            new.warm_up(history)
            # the feed writes candles to the store a little after the loop steps them: the last
            # minutes come from the bars the loop itself stepped
            for t, b in recent:
                if new.last_ts is None or t > new.last_ts:
                    new.update(t, b)
            if new.last_ts != eng.features.last_ts:
                raise _NotCaughtUp(f"rebuilt features reach {new.last_ts}, the engine is at {eng.features.last_ts}")

        await tr._in_worker(warm)
        return new

    def _swap(self, bundle: Bundle, features: Any) -> None:
        eng = self.trader.engine
        if features is not None and features.last_ts != eng.features.last_ts:
            raise _NotCaughtUp("the rebuilt features are not at the engine's minute")
        eng.swap_bundle(bundle, features=features)
        import gc

        from bot.runtime.procstats import release_free_memory

        gc.collect()  # the old bundle, the old features and the history read are garbage now (cheap: heap frozen)
        release_free_memory()


class _NotCaughtUp(Exception):
    """Rebuilt features could not reach the engine's minute yet (transient)."""
