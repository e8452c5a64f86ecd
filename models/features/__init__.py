"""Feature engine: one definition, a batch path for training and an incremental path for live.

Public API (the trainer and the daemon use these names):

* `spec.feature_names(cfg, external=False)`, `spec.warmup_bars(cfg)`, `spec.ATR_FRAC`,
  `spec.ATR_PERCENTILE` - the columns and the history they need; the module docstring states
  the rules both paths follow (minute grid, missing minutes, completed 15m/1h bars).
* `batch.compute_batch(sym, refs, cfg, regime=None, external=None)` - float32 matrix, one row
  per bar of `sym`; `batch.fit_regime(ref_candles, cfg)` / `batch.regime_observations`.
* `online.OnlineFeatureEngine(symbols, cfg, regime=None, external=None)` - `warm_up(history)`,
  `update(ts_ms, bars)`, `warm`, `filled`, `returns_window(n)`.
* `regime.RegimeModel` - numpy Gaussian HMM (fit, forward filter, to_dict/from_dict).
* `external.load_external_daily` / `external_from_config` - the optional daily series.

Pure numpy (scipy's lfilter in batch only); no I/O beyond reading the external CSV, no clock,
never imports `bot`. Keep this file free of imports: `bot.config` imports `features.config`.
"""
