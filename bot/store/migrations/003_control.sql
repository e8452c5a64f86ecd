-- The operator's commands to a running daemon (bot/ops/control/), and the control state that
-- must survive a restart. See bot/store/control.py.

-- Every command, from every interface (cli, telegram, dashboard), with who asked and what the
-- daemon answered. `bot ctl` inserts a row as 'pending' and waits for the answer; the daemon
-- claims pending rows ('running') and answers them. Telegram and the dashboard run inside the
-- daemon and insert their rows already 'running'. A pending row nobody claimed in time is
-- 'expired' (by the CLI that gave up, or by the daemon, which never executes an old command).
-- Times are the database's clock (one clock for the CLI and the daemon, even on two hosts).
CREATE TABLE commands (
    id           bigserial PRIMARY KEY,
    created_ts   bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    interface    text   NOT NULL CHECK (interface IN ('cli', 'telegram', 'dashboard')),
    identity     text   NOT NULL,
    command      text   NOT NULL,
    args         jsonb  NOT NULL DEFAULT '[]'::jsonb,
    status       text   NOT NULL CHECK (status IN ('pending', 'running', 'done', 'confirm', 'refused',
                                                   'failed', 'expired')),
    answer       text,
    result       jsonb,
    answered_ts  bigint
);
CREATE INDEX commands_pending_idx ON commands (id) WHERE status = 'pending';

-- One row per mode: are entries paused by the operator? Read at every start, so a pause
-- survives a restart (kill -9 included); written before the command is answered.
CREATE TABLE control_state (
    mode        text    PRIMARY KEY CHECK (mode IN ('paper', 'live')),
    paused      boolean NOT NULL DEFAULT false,
    changed_ts  bigint  NOT NULL,
    changed_by  text    NOT NULL,
    command_id  bigint  REFERENCES commands (id)
);
