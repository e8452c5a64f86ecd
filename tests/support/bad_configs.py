"""The corpus of malformed configs (issue 15, bad input): each one with the key path and the
reason its rejection must name. Used by tests/reliability/test_configs.py (in-process in
`make test`, real `bot` processes under `make reliability`) and counted by scripts/reliability.py.

`text` may use {home} (the case's own directory), {ro} (a directory on a read-only file
system, or not writable by this user), {full} (a directory on a full file system: a case using
it needs root, which can mount one), {secrets_644} (a secrets file readable by others) and
{secrets_600} (a good one). `env` is the whole environment the loader sees for the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BadConfig:
    name: str
    kind: str
    text: str
    key: str  # the key path the one line starts with
    reason: str  # a substring of the reason on that line
    env: dict[str, str] = field(default_factory=dict)


B = BadConfig
CORPUS: tuple[BadConfig, ...] = (
    # wrong types
    B("int_as_word", "type", "risk:\n  max_positions: many\n", "risk.max_positions", "must be an integer, got 'many'"),
    B("float_as_word", "type", "costs:\n  fee_rate: cheap\n", "costs.fee_rate", "must be a number, got 'cheap'"),
    B("bool_as_word", "type", "logging:\n  console: sometimes\n", "logging.console", "must be true or false"),
    B("section_as_number", "type", "risk: 5\n", "risk", "must be a mapping, got 5"),
    B("list_as_string", "type", "symbols: BTCUSDT\n", "symbols", "must be a list, got 'BTCUSDT'"),
    B("int_as_fraction", "type", "train:\n  folds: 2.5\n", "train.folds", "must be an integer, got 2.5"),
    B("port_as_list", "type", "dashboard:\n  port: [8787]\n", "dashboard.port", "must be an integer"),
    B("urls_as_string", "type", "exchange:\n  urls: http://127.0.0.1:8900\n", "exchange.urls", "must be a mapping"),
    B("symbol_as_number", "type", "symbols: [BTCUSDT, 42]\n", "symbols[1]", "must be a string, got 42"),
    # out of range
    B("zero_positions", "range", "risk:\n  max_positions: 0\n", "risk.max_positions", "must be >= 1, got 0"),
    B("kelly_above_one", "range", "risk:\n  kelly_multiplier: 1.5\n", "risk.kelly_multiplier", "must be <= 1, got 1.5"),
    B("fee_50pct", "range", "costs:\n  fee_rate: 0.5\n", "costs.fee_rate", "must be <= 0.01 (a fraction per side"),
    B("zero_horizon", "range", "labels:\n  horizon_bars: 0\n", "labels.horizon_bars", "must be >= 1, got 0"),
    B("port_too_big", "range", "dashboard:\n  port: 70000\n", "dashboard.port", "must be <= 65535, got 70000"),
    B("pool_too_big", "range", "database:\n  pool_max: 100\n", "database.pool_max", "must be <= 64, got 100"),
    B("negative_equity", "range", "paper:\n  initial_equity: -5\n", "paper.initial_equity", "must be > 0, got -5"),
    B("infinite_loss_limit", "range", "risk:\n  daily_loss_limit: .inf\n", "risk.daily_loss_limit", "must be a finite number, got inf"),
    B("nan_threshold", "range", "train:\n  er_threshold: .nan\n", "train.er_threshold", "must be a finite number, got nan"),
    B("bad_regime_step", "range", "features:\n  regime_minutes: 7\n", "features.regime_minutes", "must be one of (1, 5, 15"),
    B("mode_unknown", "range", "mode: yolo\n", "mode", "must be one of 'paper' or 'live', got 'yolo'"),
    B("dashboard_public", "range", "dashboard:\n  host: 0.0.0.0\n", "dashboard.host", "must be a loopback address"),
    # unknown keys
    B("unknown_section", "unknown", "colour: blue\n", "colour", "unknown key"),
    B("misspelt_key", "unknown", "risk:\n  max_positons: 3\n", "risk.max_positons", "unknown key"),
    B("unknown_nested", "unknown", "exchange:\n  urls:\n    rest: http://127.0.0.1:1/api\n", "exchange.urls.rest", "unknown key"),
    # YAML syntax
    B("unclosed_list", "yaml", "risk:\n  max_positions: [1\n", "(file)", "not valid YAML at line"),
    B("tab_indent", "yaml", "risk:\n\tmax_positions: 3\n", "(file)", "not valid YAML at line 2"),
    B("duplicate_section", "yaml", "risk:\n  max_positions: 3\nmode: paper\nrisk:\n  max_positions: 4\n",
      "(file)", "key 'risk' appears twice (first at line 1)"),
    B("top_level_list", "yaml", "- just\n- a list\n", "(top level)", "must be a mapping of sections, got list"),
    # live without keys
    B("live_no_keys", "live", "mode: live\n", "mode", "live needs API keys"),
    B("live_key_no_secret", "live", "mode: live\n", "mode", "live needs API keys", env={"BOT_API_KEY": "K-abcdef123"}),
    B("inline_secret", "live", "exchange:\n  api_key: abc123456\n", "exchange.api_key", "secrets are not read from the config file"),
    # contradictions between keys
    B("embargo_lt_horizon", "contradiction", "labels:\n  horizon_bars: 120\ntrain:\n  embargo_bars: 60\n",
      "train.embargo_bars", "shorter than labels.horizon_bars (120)"),
    B("reference_other_quote", "contradiction", "features:\n  reference_symbols: [BTCEUR]\n",
      "features.reference_symbols", "BTCEUR not a symbol of the quote asset exchange.quote=USDT"),
    B("symbol_other_quote", "contradiction", "symbols: [BTCUSDT, ETHBTC]\n", "symbols", "ETHBTC do not end in the quote asset"),
    B("symbol_twice", "contradiction", "symbols: [BTCUSDT, btc/usdt]\n", "symbols", "BTCUSDT is listed twice"),
    B("pool_order", "contradiction", "database:\n  pool_min: 5\n  pool_max: 2\n", "database", "pool_max (2) must be >= pool_min (5)"),
    B("vol_pct_order", "contradiction", "labels:\n  low_vol_pct: 90\n", "labels", "low_vol_pct (90.0) must be < high_vol_pct (80.0)"),
    B("retry_order", "contradiction", "exchange:\n  retry_base_s: 10\n  retry_max_s: 1\n", "exchange", "retry_max_s (1) must be >= retry_base_s (10)"),
    B("reconnect_order", "contradiction", "feed:\n  reconnect_base_s: 30\n  reconnect_max_backoff_s: 5\n", "feed",
      "reconnect_max_backoff_s (5) must be >= reconnect_base_s (30)"),
    B("history_lt_folds", "contradiction", "train:\n  history_days: 20\n", "train.history_days",
      "needs at least train.regime_fit_days (14)"),
    B("one_log_file", "contradiction", "logging:\n  json_file: bot.log\n", "logging", "json_file and human_file are both 'bot.log'"),
    B("log_file_path", "contradiction", "logging:\n  human_file: ../elsewhere.log\n", "logging.human_file", "must be a plain file name"),
    # the exchange
    B("unknown_exchange", "exchange", "exchange:\n  id: kraken\n", "exchange.id", "exchange 'kraken' is not supported"),
    B("exchange_id_format", "exchange", "exchange:\n  id: Binance!\n", "exchange.id", "must match"),
    B("ws_url_not_ws", "exchange", "exchange:\n  urls:\n    ws: http://127.0.0.1:8900/stream/ws\n", "exchange.urls.ws",
      "must be a ws:// or wss:// URL containing /stream"),
    B("rest_url_not_http", "exchange", "exchange:\n  urls:\n    public: 127.0.0.1:8900/api/v3\n", "exchange.urls.public",
      "must be an http:// or https:// URL"),
    # the retrain schedule
    B("cron_four_fields", "cron", "daemon:\n  retrain_cron: '0 3 * *'\n", "daemon.retrain_cron", "Wrong number of fields; got 4"),
    B("cron_minute_61", "cron", "daemon:\n  retrain_cron: '61 3 * * 6'\n", "daemon.retrain_cron", "not a cron expression"),
    B("cron_words", "cron", "daemon:\n  retrain_cron: every saturday\n", "daemon.retrain_cron", "not a cron expression"),
    # the file system
    B("data_dir_read_only", "paths", "paths:\n  data_dir: {ro}/var\n  models_dir: {home}/m\n  logs_dir: {home}/l\n",
      "paths.data_dir", "cannot be written"),
    B("logs_dir_under_a_file", "paths", "paths:\n  data_dir: {home}/var\n  models_dir: {home}/m\n  logs_dir: {secrets_600}/logs\n",
      "paths.logs_dir", "is not a directory"),
    B("secrets_file_0644", "secrets", "exchange:\n  secrets_file: {secrets_644}\n", "exchange.secrets_file", "is mode 0644; must be 0600"),
    B("secrets_file_missing", "secrets", "exchange:\n  secrets_file: {home}/nope.yaml\n", "exchange.secrets_file", "does not exist"),
    # the training process and its window (training:)
    B("training_nice_19plus", "range", "training:\n  nice: 30\n", "training.nice", "must be <= 19, got 30"),
    B("training_memory_negative", "range", "training:\n  memory_mb: -1\n", "training.memory_mb", "must be >= 0, got -1"),
    B("training_timeout_5s", "range", "training:\n  timeout_s: 5\n", "training.timeout_s", "must be >= 10, got 5"),
    B("window_negative", "range", "training:\n  window_days: -3\n", "training.window_days", "must be >= 0, got -3"),
    B("window_above_cap", "contradiction", "training:\n  window_days: 400\n", "training.window_days",
      "is above training.max_window_days (365)"),
    B("window_shorter_than_folds", "contradiction", "training:\n  window_days: 20\n", "training.window_days",
      "needs at least train.regime_fit_days (14)"),
    B("moved_key_given_twice", "contradiction", "daemon:\n  retrain_memory_mb: 2000\ntraining:\n  memory_mb: 100\n",
      "daemon.retrain_memory_mb", "moved to training.memory_mb, which is set too"),
    # the protections (risk/protections.py)
    B("stop_guard_scope_pair", "range", "risk:\n  stop_loss_guard:\n    scope: pair\n", "risk.stop_loss_guard.scope",
      "must be one of 'global' or 'symbol', got 'pair'"),
    B("stop_guard_misspelt", "unknown", "risk:\n  stop_loss_guard:\n    stop_losses: 3\n    pause_minute: 30\n",
      "risk.stop_loss_guard.pause_minute", "unknown key"),
    B("stop_guard_no_window", "range", "risk:\n  stop_loss_guard:\n    window_minutes: 0\n", "risk.stop_loss_guard.window_minutes",
      "must be >= 1, got 0"),
    B("stop_guard_as_number", "type", "risk:\n  stop_loss_guard: 4\n", "risk.stop_loss_guard", "must be a mapping, got 4"),
    B("low_profit_loss_negative", "range", "risk:\n  low_profit_lock:\n    max_loss: -0.02\n", "risk.low_profit_lock.max_loss",
      "must be >= 0, got -0.02"),
    B("low_profit_loss_percent", "range", "risk:\n  low_profit_lock:\n    max_loss: 2\n", "risk.low_profit_lock.max_loss",
      "must be < 1, got 2"),
    B("low_profit_no_trades", "range", "risk:\n  low_profit_lock:\n    trades: 0\n", "risk.low_profit_lock.trades", "must be >= 1, got 0"),
    B("lookback_no_hours", "range", "risk:\n  drawdown_lookback:\n    hours: 0\n", "risk.drawdown_lookback.hours", "must be >= 1, got 0"),
    B("lookback_ge_kill_switch", "contradiction", "risk:\n  drawdown_lookback:\n    max_drawdown: 0.2\n", "risk",
      "drawdown_lookback.max_drawdown (0.2) must be < max_drawdown (0.15)"),

    # --- issue 21: values each valid to the schema that fail later or are silently wrong ---
    # trading made impossible
    B("regime_state_absent", "impossible", "trading:\n  entry_regime_states: [3]\n", "trading.entry_regime_states",
      "names no state of the regime model (features.regime_states=3: 0..2)"),
    B("regime_states_empty", "impossible", "trading:\n  entry_regime_states: []\n", "trading.entry_regime_states",
      "entries would never be allowed"),
    B("equity_under_min_notional", "impossible", "paper:\n  initial_equity: 10\n", "paper.initial_equity",
      "allows orders of at most 1, under trading.paper_min_notional (5): no order could be placed"),
    B("protection_with_equal_slots", "contradiction", "trading:\n  sizing: equal_slots\nrisk:\n  stop_loss_guard:\n    stop_losses: 3\n",
      "trading.sizing", "risk.stop_loss_guard (and every other risk limit) would never act"),
    B("equal_slots_under_min_notional", "impossible", "paper:\n  initial_equity: 100\ntrading:\n  sizing: equal_slots\n",
      "paper.initial_equity", "100 / 30 symbols allows orders of at most 3.333"),
    B("min_probability_one", "impossible", "risk:\n  min_probability: 1\n", "risk.min_probability",
      "1 makes every entry impossible"),
    B("meta_threshold_one", "impossible", "train:\n  meta_threshold: 1.0\n", "train.meta_threshold",
      "lets no simulated trade through"),
    B("correlation_window_over_a_day", "range", "risk:\n  correlation_window: 5000\n", "risk.correlation_window",
      "must be <= 1440, got 5000"),
    B("fee_as_percent", "range", "costs:\n  fee_rate: 0.1\n", "costs.fee_rate", "got 0.1: a percentage?"),
    B("entry_lag_within_minute_timeout", "contradiction", "mode: live\nlive:\n  max_entry_lag_s: 5\n",
      "live.max_entry_lag_s", "not longer than feed.minute_timeout_s (10 s)",
      env={"BOT_API_KEY": "K-abcdef123", "BOT_API_SECRET": "S-abcdef123"}),
    # the database URL
    B("dsn_other_scheme", "database", "database:\n  dsn: mysql://bot:pw@127.0.0.1/bot\n", "database.dsn",
      "scheme 'mysql' is not postgresql://"),
    B("dsn_no_scheme", "database", "database:\n  dsn: 127.0.0.1:5432/bot\n", "database.dsn", "not a URL"),
    B("dsn_key_value", "database", "database:\n  dsn: host=127.0.0.1 dbname=bot\n", "database.dsn", "a key=value string"),
    B("dsn_bad_port", "database", "database:\n  dsn: postgresql://bot:pw@127.0.0.1:54x2/bot\n", "database.dsn",
      "port '54x2' is not a number"),
    B("dsn_from_env_bad", "database", "mode: paper\n", "database.dsn", "scheme 'postgress' is not postgresql://",
      env={"BOT_DATABASE_DSN": "postgress://bot@127.0.0.1/bot"}),
    B("write_timeout_tiny", "range", "database:\n  write_timeout_s: 0.01\n", "database.write_timeout_s",
      "must be >= 1, got 0.01"),
    # the exchange's endpoints and pace
    B("rest_url_without_path", "exchange", "exchange:\n  urls:\n    public: http://127.0.0.1:8900\n"
      "    ws: ws://127.0.0.1:8900/stream/ws\n", "exchange.urls.public", "must be the REST base ending in /api/v3"),
    B("ws_url_missing", "exchange", "exchange:\n  urls:\n    public: http://127.0.0.1:8900/api/v3\n"
      "    private: http://127.0.0.1:8900/api/v3\n", "exchange.urls.ws", "candles would come from two exchanges"),
    B("live_private_url_missing", "exchange", "mode: live\nexchange:\n  urls:\n    public: http://127.0.0.1:8900/api/v3\n"
      "    ws: ws://127.0.0.1:8900/stream/ws\n", "exchange.urls.private", "live orders (and their fills) would go to Binance",
      env={"BOT_API_KEY": "K-abcdef123", "BOT_API_SECRET": "S-abcdef123"}),
    B("rate_limit_too_slow", "exchange", "exchange:\n  rate_limit_ms: 5000\n", "exchange.rate_limit_ms",
      "allows 12 a minute; the REST fallback needs one per symbol (30"),
    B("symbol_with_dash", "type", "symbols: [BTC-USDT]\n", "symbols", "'BTC-USDT' is not a symbol like BTCUSDT"),
    # the retrain schedule and its process
    B("cron_never_fires", "cron", "daemon:\n  retrain_cron: '0 3 30 2 *'\n", "daemon.retrain_cron", "never fires"),
    B("cron_day_and_weekday", "cron", "daemon:\n  retrain_cron: '0 3 1 * 1'\n", "daemon.retrain_cron",
      "gives both a day of month (1) and a weekday (mon)"),
    B("cron_weekday_8", "cron", "daemon:\n  retrain_cron: '0 3 * * 8'\n", "daemon.retrain_cron", "day of week '8' is not 0-7"),
    B("training_memory_in_gb", "range", "training:\n  memory_mb: 4\n", "training.memory_mb",
      "4 MB cannot hold a training process"),
    # telegram
    B("telegram_without_secrets", "telegram", "telegram:\n  enabled: true\n", "telegram.enabled",
      "needs BOT_TELEGRAM_TOKEN and BOT_TELEGRAM_CHAT_ID"),
    B("telegram_chat_not_a_number", "telegram", "telegram:\n  enabled: true\n", "secrets.telegram_chat_id",
      "must be the chat's numeric id", env={"BOT_TELEGRAM_TOKEN": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "BOT_TELEGRAM_CHAT_ID": "my_group"}),
    B("telegram_channel_with_commands", "telegram", "telegram:\n  enabled: true\n", "secrets.telegram_chat_id",
      "cannot own the chat commands", env={"BOT_TELEGRAM_TOKEN": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "BOT_TELEGRAM_CHAT_ID": "@my_channel"}),
    B("telegram_token_with_bot_prefix", "telegram", "telegram:\n  enabled: true\n", "secrets.telegram_token",
      "starts with 'bot'", env={"BOT_TELEGRAM_TOKEN": "bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "BOT_TELEGRAM_CHAT_ID": "-1001234567"}),
    B("telegram_api_base_no_scheme", "telegram", "telegram:\n  api_base: api.telegram.org\n", "telegram.api_base",
      "must be an http:// or https:// URL"),
    # the machine
    B("logs_dir_on_full_disk", "paths", "paths:\n  data_dir: {home}/var\n  models_dir: {home}/m\n  logs_dir: {full}/logs\n",
      "paths.logs_dir", "full"),
    B("external_file_missing", "paths", "features:\n  external_daily_file: {home}/fear_greed.csv\n",
      "features.external_daily_file", "cannot be read (No such file or directory)"),
    B("secrets_file_is_a_directory", "secrets", "exchange:\n  secrets_file: {home}\n", "exchange.secrets_file", "is not a file"),
)
