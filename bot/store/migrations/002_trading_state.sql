-- What the daemon needs to resume exactly after any stop (kill -9 included), and what
-- `bot status` reads while it runs. See bot/store/trading.py.

-- One row per mode: the engine's own state (risk state, cash, pending orders...) as the engine
-- serialises it, and the last minute whose step is fully persisted. Written in the same
-- transaction as that minute's orders, fills, positions, decisions and equity, so a restart
-- finds either all of a minute or none of it.
CREATE TABLE engine_state (
    mode            text   PRIMARY KEY CHECK (mode IN ('paper', 'live', 'backtest')),
    last_minute_ts  bigint NOT NULL,
    cash            double precision NOT NULL,
    equity          double precision NOT NULL,
    model_version   text,
    state           text   NOT NULL,  -- JSON with NaN kept (jsonb has none): restores bit for bit
    updated_ts      bigint NOT NULL
);

-- The running daemon (one per store: it holds a session advisory lock for its life, see
-- bot/store/daemon_lock.py). A single row, rewritten at start and on each heartbeat;
-- stopped_ts is set on a clean stop (after kill -9 it stays NULL and heartbeat_ts goes stale).
CREATE TABLE daemon_status (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    pid             integer NOT NULL,
    host            text    NOT NULL,
    started_ts      bigint  NOT NULL,
    heartbeat_ts    bigint  NOT NULL,
    stopped_ts      bigint,
    mode            text    NOT NULL,
    model_version   text,
    watch_only      boolean NOT NULL DEFAULT false,
    watch_reason    text,
    last_minute_ts  bigint,
    details         jsonb   NOT NULL DEFAULT '{}'::jsonb
);

-- Idempotent writes: replaying a minute that was already persisted writes nothing new.
ALTER TABLE positions ADD COLUMN entry_order_id text;
CREATE UNIQUE INDEX positions_entry_order ON positions (mode, entry_order_id);
ALTER TABLE orders ADD COLUMN leg text CHECK (leg IN ('entry', 'exit'));
ALTER TABLE orders ADD COLUMN decision_ts bigint;
ALTER TABLE orders ADD COLUMN model_version text;
CREATE UNIQUE INDEX decisions_once ON decisions (mode, ts, symbol, action, reason);
CREATE INDEX decisions_mode_ts_idx ON decisions (mode, ts);
CREATE INDEX positions_mode_status_idx ON positions (mode, status);
