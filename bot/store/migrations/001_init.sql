-- Initial schema. Timestamps are UTC epoch milliseconds (bigint), the exchange's and ccxt's
-- native unit: no timezone conversions anywhere between the wire, the store and numpy.

-- 1m candles; ts is the candle's open time. Prices as float8: the exchange's decimal strings
-- round-trip exactly through float64.
CREATE TABLE candles (
    symbol  text             NOT NULL,
    ts      bigint           NOT NULL CHECK (ts % 60000 = 0),
    open    double precision NOT NULL CHECK (open > 0),
    high    double precision NOT NULL CHECK (high > 0),
    low     double precision NOT NULL CHECK (low > 0),
    close   double precision NOT NULL CHECK (close > 0),
    volume  double precision NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (symbol, ts)
);

-- Every order the bot sends (paper or live). client_order_id is ours, unique, and is what
-- reconciliation with the exchange matches on after a restart.
CREATE TABLE orders (
    id                bigserial PRIMARY KEY,
    client_order_id   text   NOT NULL UNIQUE,
    exchange_order_id text,
    mode              text   NOT NULL CHECK (mode IN ('paper', 'live', 'backtest')),
    symbol            text   NOT NULL,
    side              text   NOT NULL CHECK (side IN ('buy', 'sell')),
    type              text   NOT NULL CHECK (type IN ('market', 'limit')),
    qty               double precision NOT NULL CHECK (qty > 0),
    price             double precision,
    status            text   NOT NULL CHECK (status IN ('new', 'submitted', 'accepted', 'partially_filled',
                                                        'filled', 'cancelled', 'rejected', 'expired')),
    filled_qty        double precision NOT NULL DEFAULT 0,
    avg_price         double precision,
    reason            jsonb,
    created_ts        bigint NOT NULL,
    updated_ts        bigint NOT NULL
);
CREATE INDEX orders_open_idx ON orders (status) WHERE status IN ('new', 'submitted', 'accepted', 'partially_filled');

CREATE TABLE fills (
    id              bigserial PRIMARY KEY,
    order_id        bigint NOT NULL REFERENCES orders (id),
    trade_id        text   NOT NULL,
    symbol          text   NOT NULL,
    side            text   NOT NULL CHECK (side IN ('buy', 'sell')),
    qty             double precision NOT NULL CHECK (qty > 0),
    price           double precision NOT NULL CHECK (price > 0),
    fee             double precision NOT NULL DEFAULT 0,
    fee_asset       text,
    ts              bigint NOT NULL,
    UNIQUE (order_id, trade_id)
);

-- Positions, open and closed (one open position per symbol and mode at a time).
CREATE TABLE positions (
    id              bigserial PRIMARY KEY,
    mode            text   NOT NULL CHECK (mode IN ('paper', 'live', 'backtest')),
    symbol          text   NOT NULL,
    status          text   NOT NULL CHECK (status IN ('open', 'closed')),
    qty             double precision NOT NULL,
    entry_price     double precision NOT NULL,
    entry_ts        bigint NOT NULL,
    take_profit     double precision,
    stop_loss       double precision,
    expires_ts      bigint,
    exit_price      double precision,
    exit_ts         bigint,
    exit_reason     text,
    pnl             double precision,
    model_version   text,
    details         jsonb
);
CREATE UNIQUE INDEX positions_one_open_per_symbol ON positions (mode, symbol) WHERE status = 'open';

CREATE TABLE equity_snapshots (
    ts              bigint NOT NULL,
    mode            text   NOT NULL,
    equity          double precision NOT NULL,
    cash            double precision NOT NULL,
    gross_exposure  double precision NOT NULL,
    open_positions  integer NOT NULL,
    PRIMARY KEY (mode, ts)
);

-- Model bundles known to the store. status follows the champion/challenger life cycle.
CREATE TABLE model_versions (
    version         text PRIMARY KEY,
    path            text   NOT NULL,
    status          text   NOT NULL CHECK (status IN ('candidate', 'champion', 'retired', 'rejected')),
    created_ts      bigint NOT NULL,
    promoted_ts     bigint,
    data_from_ts    bigint,
    data_to_ts      bigint,
    code_version    text,
    metrics         jsonb
);
CREATE UNIQUE INDEX model_versions_one_champion ON model_versions (status) WHERE status = 'champion';

-- Every entry/skip/exit decision with its structured reason.
CREATE TABLE decisions (
    id              bigserial PRIMARY KEY,
    ts              bigint NOT NULL,
    mode            text   NOT NULL,
    symbol          text   NOT NULL,
    action          text   NOT NULL,
    reason          text   NOT NULL,
    er              double precision,
    probability     double precision,
    size_fraction   double precision,
    model_version   text,
    details         jsonb
);
CREATE INDEX decisions_ts_idx ON decisions (ts);
